"""Each party's audit log: what it took part in, what of its data was used and how, what it revealed.

Data owners ask "what did they learn from my data"; this answers it from the party's own point of view.
Every party appends one JSON line per query it took part in (written by its own executor, in the
embedded runtime and as a network service) and the issuer's engine one per query it refused:

    {"time": "2026-01-02T10:00:00.000Z", "party": "shop", "issuer": "bank", "query": "SELECT ...",
     "fingerprint": "<sha-256 of the physical plan's canonical encoding>", "outcome": "ok",
     "read": ["shop.orders.amount", "shop.orders.customer_id"],
     "columns": ["shop.orders.customer_id -> bank: JOIN_KEY allowed by PLAINTEXT_AFTER_JOIN"],
     "local_sql": ["SELECT ... FROM orders"], "revealed": [{"to": "bank", "rows": 3}],
     "sent_bytes": {"bank": 4096}, "epsilon": 0.0, "delta": 0.0}

A refusal has `"outcome": "refused"` and `"reason"` (the error's class and message) and no plan. The log
is `audit.jsonl` in the party's `audit_dir`; past `max_bytes` it is rotated to `audit.jsonl.1`,
`.2`, ... and only the `keep` newest rotated files are kept. Writers lock the directory (`flock`), so a
party's service and its issuing engine may share it; lines are written whole and synced.
"""

from __future__ import annotations

import datetime
import fcntl
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from sqlsecure.errors import ConfigError, OperationalError

LOG_NAME = "audit.jsonl"
LOCK_NAME = ".audit.lock"
MAX_BYTES = 10 * 1024 * 1024
KEEP = 5
DURATION = re.compile(r"^(?P<n>[0-9]+)(?P<unit>[smhd])$")
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True)
class AuditSettings:
    """A party's `audit_dir` and its rotation: past `max_bytes` a file is rotated, `keep` old files are kept."""

    directory: Path
    max_bytes: int = MAX_BYTES
    keep: int = KEEP


class AuditLog:
    """One party's append-only, rotated JSON-lines log."""

    def __init__(self, party: str, settings: AuditSettings):
        self.party = party
        self.settings = settings

    @property
    def path(self) -> Path:
        return self.settings.directory / LOG_NAME

    def append(self, entry: dict) -> None:
        """Append one entry (stamped with the time and this party), rotating first if the file is full."""
        line = json.dumps({"time": now_text(), "party": self.party, **entry}, sort_keys=True, ensure_ascii=False,
                          default=str) + "\n"
        try:
            self._write(line.encode("utf-8"))
        except OSError as exc:  # no log, no query: the caller's query fails with this
            raise OperationalError(f"{self.party}'s audit log {self.settings.directory}: cannot append: "
                                   f"{exc.strerror or exc}") from None

    def _write(self, data: bytes) -> None:
        directory = self.settings.directory
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(directory / LOCK_NAME, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            size = self.path.stat().st_size if self.path.exists() else 0
            if size and size + len(data) > self.settings.max_bytes:
                self._rotate()
            out = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(out, data)
                os.fsync(out)
            finally:
                os.close(out)
        finally:
            os.close(fd)  # releases the lock

    def _rotate(self) -> None:
        """audit.jsonl -> .1 -> .2 ...; the file past `keep` is deleted."""
        self.rotated(self.settings.keep).unlink(missing_ok=True)
        for index in range(self.settings.keep - 1, 0, -1):
            if self.rotated(index).exists():
                self.rotated(index).rename(self.rotated(index + 1))
        self.path.rename(self.rotated(1))

    def rotated(self, index: int) -> Path:
        return self.settings.directory / f"{LOG_NAME}.{index}"

    def entries(self, since: datetime.datetime | None = None) -> list[dict]:
        """Every kept entry, oldest first (rotated files included), from `since` on if given."""
        files = [self.rotated(i) for i in range(self.settings.keep, 0, -1)] + [self.path]
        out = []
        for path in files:
            if not path.exists():
                continue
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    raise ConfigError(f"{path}:{number}: not a JSON line: the audit log is damaged") from None
                if since is None or parse_time(entry.get("time", "")) >= since:
                    out.append(entry)
        return out


def now_text() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(text: str) -> datetime.datetime:
    """An ISO 8601 date or time (UTC unless it says otherwise)."""
    value = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=datetime.timezone.utc)


def parse_since(text: str, now: datetime.datetime | None = None) -> datetime.datetime:
    """`--since`: an ISO 8601 date or time, or a span back from now (`30m`, `12h`, `7d`)."""
    match = DURATION.match(text.strip())
    if match:
        now = now or datetime.datetime.now(datetime.timezone.utc)
        return now - datetime.timedelta(seconds=int(match["n"]) * UNIT_SECONDS[match["unit"]])
    try:
        return parse_time(text.strip())
    except ValueError:
        raise ValueError(f"{text!r}: give an ISO 8601 date or time (2026-01-31, 2026-01-31T12:00) "
                         "or a span such as 30m, 12h, 7d") from None


def plan_fingerprint(plan) -> str:
    """SHA-256 of the physical plan's canonical encoding (the bytes an issuer sends each party)."""
    from sqlsecure.executors.runtime.plan_codec import encode_plan

    return hashlib.sha256(encode_plan(plan)).hexdigest()


def column_uses(plan, party: str) -> list[str]:
    """The plan's policy checks on `party`'s columns: which column, to whom, how, under which grant."""
    return [use for use in plan.uses if use.startswith(f"{party}.")]


def columns_read(party: str, local_sql: list[str]) -> list[str]:
    """The columns of `party`'s own tables that its local SQL reads (resolved through sqlglot's scopes)."""
    import sqlglot
    from sqlglot import exp
    from sqlglot.optimizer.scope import traverse_scope

    out = set()
    for sql in local_sql:
        for scope in traverse_scope(sqlglot.parse_one(sql, read="duckdb")):
            only = next(iter(scope.sources.values())) if len(scope.sources) == 1 else None
            for column in scope.columns:
                source = scope.sources.get(column.table) if column.table else only
                if isinstance(source, exp.Table):
                    out.add(f"{party}.{source.name}.{column.name}")
    return sorted(out)


def query_entry(party: str, plan, sql: str | None, outcome: str, revealed: list[dict], sent: dict[str, int],
                local_sql: list[str]) -> dict:
    """What `party` saw of one query it took part in."""
    return {"issuer": plan.issuer, "query": sql, "fingerprint": plan_fingerprint(plan), "outcome": outcome,
            "read": columns_read(party, local_sql), "columns": column_uses(plan, party), "local_sql": local_sql,
            "revealed": revealed, "sent_bytes": sent, "epsilon": plan.epsilon, "delta": plan.delta}


def refusal_entry(issuer: str, sql: str, error: BaseException) -> dict:
    """A query refused before anything ran (by the issuer's engine, or by a party checking the plan)."""
    return {"issuer": issuer, "query": sql, "outcome": "refused", "reason": f"{type(error).__name__}: {error}"}


def outcome_of(error: BaseException) -> str:
    """A failed query's outcome: the engine's errors with their public message, anything else by class."""
    from sqlsecure.errors import Error

    return f"failed: {type(error).__name__}: {error}" if isinstance(error, Error) else \
        f"failed: {type(error).__name__}"


def format_entry(entry: dict) -> str:
    """One entry for people: a header line, then what of the party's data was used and revealed."""
    head = f"{entry.get('time')}  {entry.get('outcome')}  issuer={entry.get('issuer')}"
    if entry.get("epsilon"):
        head += f"  ε={entry['epsilon']:g} δ={entry.get('delta', 0):g}"
    if entry.get("fingerprint"):
        head += f"  plan={entry['fingerprint'][:16]}"
    lines = [head, f"  query: {entry.get('query')}"]
    if entry.get("reason"):
        lines.append(f"  reason: {entry['reason']}")
    if entry.get("read"):
        lines.append(f"  read: {', '.join(entry['read'])}")
    lines += [f"  used: {use}" for use in entry.get("columns", [])]
    lines += [f"  ran: {sql}" for sql in entry.get("local_sql", [])]
    lines += [f"  revealed to {r['to']}: {r['rows']} rows" for r in entry.get("revealed", [])]
    sent = entry.get("sent_bytes") or {}
    if sent:
        lines.append("  sent: " + ", ".join(f"{n:,} bytes to {peer}" for peer, n in sorted(sent.items())))
    return "\n".join(lines)
