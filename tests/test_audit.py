"""Each party's audit log: a query, a refusal and a DP query produce the right entries at each party,
in the embedded runtime and in network mode (services in this process, real Flight with mutual TLS);
the log rotates; `sqlsecure audit` prints it; the federation's audit keys are validated."""

from __future__ import annotations

import json
import runpy
import socket
from pathlib import Path

import pytest
from click.testing import CliRunner

from sqlsecure.audit import AuditLog, AuditSettings, parse_since, plan_fingerprint
from sqlsecure.certs import init_certs
from sqlsecure.cli import main
from sqlsecure.demo import write_demo
from sqlsecure.engine import Engine
from sqlsecure.errors import ConfigError, Error, OperationalError, PolicyViolation
from sqlsecure.federation import load_federation
from sqlsecure.party_service import PartyService

ROOT = Path(__file__).resolve().parent.parent
JOIN = "SELECT COUNT(*) AS n FROM bank.customers c JOIN shop.orders o ON c.id = o.customer_id"
SUMS = ("SELECT o.category, SUM(o.amount) AS total FROM bank.customers c JOIN shop.orders o "
        "ON c.id = o.customer_id GROUP BY o.category")
REFUSED = "SELECT o.amount FROM shop.orders o"  # single orders: only aggregates of amount are granted
GRANTS = (("bank", ("shop.orders.customer_id",), "PLAINTEXT_AFTER_JOIN"),
          ("bank", ("shop.orders.amount",), "PLAINTEXT_AFTER_AGGREGATE"),
          ("bank", ("shop.orders.category",), "PLAINTEXT_AFTER_GROUP_BY"),
          ("shop", ("bank.customers.id",), "PLAINTEXT_AFTER_JOIN"))


def audited(path: Path, parties) -> Path:
    """Give each party an `audit_dir` beside the federation file."""
    text = path.read_text()
    for party in parties:
        text = text.replace(f"[parties.{party}]\n", f'[parties.{party}]\naudit_dir = "audit/{party}"\n', 1)
    path.write_text(text)
    return path


def log_of(path: Path, party: str) -> list[dict]:
    return AuditLog(party, load_federation(path).parties[party].audit).entries()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def networked(path: Path, names) -> Path:
    """Certificates and 127.0.0.1 addresses for each node (as tests/test_network_mode.py's `networkify`)."""
    init_certs(path.parent / "certs", list(names))
    text = path.read_text()
    for name in names:
        block = (f'address = "127.0.0.1:{free_port()}"\ncertificate = "certs/{name}.pem"\n'
                 f'private_key = "certs/{name}.key"\n')
        text = text + f"\n[{name}]\n{block}" if name == "dealer" else \
            text.replace(f"[parties.{name}]\n", f"[parties.{name}]\n{block}", 1)
    path.write_text(text.replace("[federation]\n", '[federation]\nca = "certs/ca.pem"\nnetwork_timeout = 20\n', 1))
    return path


def check_query_entries(path: Path, sql: str, fingerprint: str, bystander: str | None) -> None:
    """bank issued `sql` and got its rows; shop logged the use of its columns and what it sent to bank."""
    bank, shop = log_of(path, "bank")[-1], log_of(path, "shop")[-1]
    for entry in (bank, shop):
        assert entry["query"] == sql and entry["issuer"] == "bank" and entry["outcome"] == "ok"
        assert entry["fingerprint"] == fingerprint and entry["epsilon"] == 0
    assert bank["party"] == "bank" and shop["party"] == "shop"
    assert bank["revealed"] and bank["revealed"][-1]["to"] == "bank"
    assert any(use.startswith("shop.orders.customer_id -> bank") for use in shop["columns"])
    assert not any(use.startswith("bank.") for use in shop["columns"])  # only its own columns
    assert shop["local_sql"] and shop["sent_bytes"].get("bank", 0) > 0
    assert "shop.orders.customer_id" in shop["read"] and "bank.customers.id" in bank["read"]
    assert all(column.startswith("shop.") for column in shop["read"])
    if bystander is not None:
        assert log_of(path, bystander) == []


def check_refusal(path: Path, engine: Engine) -> None:
    before = len(log_of(path, "shop"))
    with pytest.raises(PolicyViolation):
        engine.execute(REFUSED, "bank")
    entry = log_of(path, "bank")[-1]
    assert entry["outcome"] == "refused" and entry["query"] == REFUSED and entry["issuer"] == "bank"
    assert entry["reason"].startswith("PolicyViolation: ") and "shop.orders.amount" in entry["reason"]
    assert len(log_of(path, "shop")) == before  # shop never saw it


def test_embedded_query_and_refusal_are_logged_at_each_party(tmp_path, make_federation, grants_for):
    path = audited(make_federation(tmp_path, grants_for(*GRANTS)), ("bank", "shop", "insurer"))
    with Engine(path) as engine:
        for sql in (JOIN, SUMS):
            engine.execute(sql, "bank")
            check_query_entries(path, sql, plan_fingerprint(engine.plan(sql, "bank").physical), "insurer")
        assert {"shop.orders.amount", "shop.orders.category"} <= set(log_of(path, "shop")[-1]["read"])
        check_refusal(path, engine)
        engine.check(REFUSED, "bank")  # a dry run is not a query: nothing logged
        engine.explain(JOIN, "bank")
    assert [e["outcome"] for e in log_of(path, "bank")] == ["ok", "ok", "refused"]
    assert [e["outcome"] for e in log_of(path, "shop")] == ["ok", "ok"]


def test_network_query_and_refusals_are_logged_at_each_party(tmp_path, make_federation, grants_for):
    path = audited(make_federation(tmp_path, grants_for(*GRANTS), parties=("bank", "shop")), ("bank", "shop"))
    path = networked(path, ("bank", "shop", "dealer"))
    # shop's own copy of the federation grants bank less: shop refuses what bank's engine would run
    strict = path.parent / "shop_view.toml"
    strict.write_text(path.read_text().replace('"shop.orders.category"', '"shop.orders.region"'))
    services = [PartyService(path, "bank"), PartyService(strict, "shop"), PartyService(path, "dealer")]
    try:
        with Engine(path, runtime="network", identity="bank") as engine:
            engine.execute(JOIN, "bank")
            check_query_entries(path, JOIN, plan_fingerprint(engine.plan(JOIN, "bank").physical), None)
            check_refusal(path, engine)
            with pytest.raises(Error):
                engine.execute(SUMS, "bank")
    finally:
        for service in services:
            service.close()
    refused = log_of(strict, "shop")[-1]
    assert refused["outcome"] == "refused" and refused["query"] == SUMS and refused["issuer"] == "bank"
    assert "shop.orders.category" in refused["reason"]


def test_a_log_that_cannot_be_written_fails_the_query(tmp_path, make_federation, grants_for):
    path = make_federation(tmp_path, grants_for(*GRANTS), parties=("bank", "shop"))
    (tmp_path / "blocked").write_text("a file where the log's parent directory should be")
    path.write_text(path.read_text().replace("[parties.shop]\n", '[parties.shop]\naudit_dir = "blocked/audit"\n'))
    with Engine(path) as engine, pytest.raises(OperationalError, match="shop's audit log .*blocked/audit"):
        engine.execute(JOIN, "bank")


PRIVACY = runpy.run_path(str(ROOT / "examples" / "dp_query.py"))["PRIVACY"]  # ε 3, 1 per query
DP = ("SELECT o.category, COUNT(*) AS orders FROM bank.customers c JOIN shop.orders o "
      "ON c.customer_id = o.customer_id GROUP BY o.category")


def test_a_dp_query_logs_its_epsilon_at_each_party(tmp_path):
    path = audited(write_demo(tmp_path), ("bank", "shop", "insurer"))
    path.write_text(path.read_text() + PRIVACY)
    with Engine(path) as engine:
        engine.execute(DP, "bank")
    for party in ("bank", "shop"):
        (entry,) = log_of(path, party)
        assert entry["epsilon"] == 1.0 and entry["delta"] > 0 and entry["outcome"] == "ok"
    assert log_of(path, "insurer") == []


def test_an_exhausted_budget_is_logged_as_a_refusal(tmp_path):
    path = audited(write_demo(tmp_path), ("bank", "shop"))
    path.write_text(path.read_text() + PRIVACY.replace("epsilon = 3.0", "epsilon = 1.0"))
    with Engine(path) as engine:
        engine.execute(DP, "bank")
        with pytest.raises(PolicyViolation):
            engine.execute(DP, "bank")
    assert [e["outcome"] for e in log_of(path, "bank")] == ["ok", "refused"]
    assert "budget" in log_of(path, "bank")[-1]["reason"]
    assert len(log_of(path, "shop")) == 1


def test_the_log_rotates_and_keeps_the_newest_files(tmp_path):
    log = AuditLog("bank", AuditSettings(tmp_path / "audit", max_bytes=1024, keep=2))
    for number in range(60):
        log.append({"query": f"SELECT {number}", "outcome": "ok"})
    files = sorted(p.name for p in (tmp_path / "audit").iterdir() if not p.name.startswith("."))
    assert files == ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2"]
    assert all((tmp_path / "audit" / name).stat().st_size <= 1024 for name in files)
    kept = [int(e["query"].split()[1]) for e in log.entries()]
    assert kept == list(range(60 - len(kept), 60)) and len(kept) < 60  # the newest, in order; old ones gone
    assert oct((tmp_path / "audit" / "audit.jsonl").stat().st_mode & 0o777) == "0o600"


def test_the_audit_command_prints_the_log(tmp_path, make_federation, grants_for):
    path = audited(make_federation(tmp_path, grants_for(*GRANTS), parties=("bank", "shop")), ("bank", "shop"))
    with Engine(path) as engine:
        engine.execute(JOIN, "bank")
    runner = CliRunner()
    text = runner.invoke(main, ["audit", "-F", str(path), "--as", "shop"])
    assert text.exit_code == 0, text.output
    assert "issuer=bank" in text.output and JOIN in text.output and "used: shop.orders.customer_id" in text.output
    lines = runner.invoke(main, ["audit", "-F", str(path), "--as", "bank", "--json"]).output.splitlines()
    assert [json.loads(line)["query"] for line in lines] == [JOIN]
    later = runner.invoke(main, ["audit", "-F", str(path), "--as", "bank", "--json", "--since", "2999-01-01"])
    assert later.exit_code == 0 and later.output == ""
    recent = runner.invoke(main, ["audit", "-F", str(path), "--as", "bank", "--json", "--since", "1h"])
    assert len(recent.output.splitlines()) == 1
    bad = runner.invoke(main, ["audit", "-F", str(path), "--as", "bank", "--since", "last tuesday"])
    assert bad.exit_code == 2 and "--since" in bad.output and "ISO 8601" in bad.output


def test_the_audit_command_says_when_a_party_keeps_no_log(tmp_path, make_federation, grants_for):
    path = make_federation(tmp_path, grants_for(*GRANTS), parties=("bank", "shop"))
    result = CliRunner().invoke(main, ["audit", "-F", str(path), "--as", "shop"])
    assert result.exit_code == 1 and "parties.shop.audit_dir: not set" in result.output


@pytest.mark.parametrize("keys, where", [
    ('audit_dir = "audit"\naudit_keep = 0\n', "parties.bank.audit_keep: must be a whole number >= 1"),
    ('audit_dir = "audit"\naudit_max_bytes = "big"\n', "parties.bank.audit_max_bytes: must be a whole number"),
    ('audit_dir = 3\n', "parties.bank.audit_dir: must be a directory path string"),
    ('audit_dir = "federation.toml"\n', "parties.bank.audit_dir: "),
    ('audit_keep = 3\n', "parties.bank.audit_keep: only with audit_dir"),
])
def test_the_audit_keys_are_validated(tmp_path, make_federation, grants_for, keys, where):
    path = make_federation(tmp_path, grants_for(*GRANTS), parties=("bank", "shop"))
    path.write_text(path.read_text().replace("[parties.bank]\n", f"[parties.bank]\n{keys}", 1))
    with pytest.raises(ConfigError, match=where.replace(".", r"\.")):
        load_federation(path)


def test_since_reads_dates_times_and_spans():
    import datetime

    now = datetime.datetime(2026, 1, 31, 12, tzinfo=datetime.timezone.utc)
    assert parse_since("2h", now) == now - datetime.timedelta(hours=2)
    assert parse_since("2026-01-30", now) == datetime.datetime(2026, 1, 30, tzinfo=datetime.timezone.utc)
    assert parse_since("2026-01-30T08:00:00+01:00", now).hour == 8
