"""The federation file: every problem reported with its file and key."""

import pytest

from sqlsecure.engine import Engine
from sqlsecure.errors import ConfigError
from sqlsecure.federation import load_federation


def write(tmp_path, text):
    (tmp_path / "t.csv").write_text("id,v\n1,2\n")
    path = tmp_path / "f.toml"
    path.write_text(text)
    return path


GOOD = """
[federation]
name = "x"
[parties.a.tables]
t = "t.csv"
[parties.b.tables]
t = "t.csv"
"""


def test_good_file_loads(tmp_path):
    cfg = load_federation(write(tmp_path, GOOD))
    assert list(cfg.parties) == ["a", "b"] and cfg.min_group_size == 4 and cfg.dialect == "duckdb"
    assert cfg.group_sums == "auto" and (cfg.link_rtt_ms, cfg.link_mbps) == (1.0, 1000.0) and cfg.psi == "kkrt"
    assert cfg.he_key_bits == 2048
    assert load_federation(write(tmp_path, GOOD.replace('name = "x"', 'name = "x"\nhe_key_bits = 3072'))).he_key_bits == 3072


@pytest.mark.parametrize("text, fragment", [
    (GOOD + "[oops]\n", "oops: unknown key"),
    (GOOD.replace('name = "x"', 'name = "x"\ncolour = 1'), "federation.colour: unknown key"),
    (GOOD.replace('t = "t.csv"\n[parties.b', 't = "missing.csv"\n[parties.b'), "parties.a.tables.t: no such data file"),
    (GOOD + '[parties.b.tables]\nu = "t.csv"\n', "not valid TOML"),
    (GOOD + '[parties.c]\ndatabase = "x.duckdb"\n', "parties.c.database: no such database file"),
    (GOOD + '[parties.A.tables]\nt = "t.csv"\n', "duplicate party"),
    (GOOD.replace('name = "x"', 'name = "x"\ndialect = "klingon"'), "unknown SQL dialect"),
    (GOOD.replace('name = "x"', 'name = "x"\nmin_group_size = -1'), "min_group_size"),
    (GOOD.replace('name = "x"', 'name = "x"\ngroup_sums = "fhe"'), 'federation.group_sums: must be "auto"'),
    (GOOD.replace('name = "x"', 'name = "x"\nlink_rtt_ms = -3'), "federation.link_rtt_ms: must be a number of "
                                                                  "milliseconds"),
    (GOOD.replace('name = "x"', 'name = "x"\nlink_mbps = 0'), "federation.link_mbps: must be a number of Mbit/s"),
    (GOOD.replace('name = "x"', 'name = "x"\npsi = "rsa"'), 'federation.psi: must be "kkrt"'),
    (GOOD.replace('name = "x"', 'name = "x"\nhe_key_bits = 1024'), "federation.he_key_bits: must be 2048 or 3072"),
    (GOOD.replace('name = "x"', 'name = "x"\nhe_key_bits = "3072"'), "federation.he_key_bits: must be 2048 or 3072"),
    (GOOD + '[[grants]]\nparty = "b"\ncolumns = ["a.t.id"]\nconstraint = "SOMETIMES"\n', "unknown constraint"),
    (GOOD + '[[grants]]\nparty = "z"\ncolumns = ["a.t.id"]\nconstraint = "PLAINTEXT"\n', "grants[0].party: unknown party"),
    (GOOD + '[[grants]]\nparty = "b"\ncolumns = ["a.t.id"]\nconstraint = "PLAINTEXT"\nwhy = 1\n', "grants[0].why: unknown key"),
])
def test_problems_are_named(tmp_path, text, fragment):
    with pytest.raises(ConfigError, match=fragment.replace(".", r"\.").replace("[", r"\[").replace("]", r"\]")):
        load_federation(write(tmp_path, text))


def test_all_problems_reported_at_once(tmp_path):
    text = GOOD.replace('name = "x"', 'name = "x"\nfoo = 1\nbar = 2')
    with pytest.raises(ConfigError) as info:
        load_federation(write(tmp_path, text))
    assert len(info.value.problems) == 2 and all(str(tmp_path / "f.toml") in p for p in info.value.problems)


@pytest.mark.parametrize("pattern, fragment", [
    ("a.t.nope", "matches no column"),
    ("a.nope", "is not party.table.column"),
])
def test_grant_columns_checked_against_schema(tmp_path, pattern, fragment):
    text = GOOD + f'[[grants]]\nparty = "b"\ncolumns = ["{pattern}"]\nconstraint = "PLAINTEXT"\n'
    with pytest.raises(ConfigError, match=fragment):
        Engine(write(tmp_path, text))


def test_grant_patterns_expand(tmp_path):
    text = GOOD + '[[grants]]\nparty = "b"\ncolumns = ["a.t.*"]\nconstraint = "PLAINTEXT_AFTER_JOIN"\n'
    with Engine(write(tmp_path, text)) as engine:
        assert len(engine.grants.table) == 2


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="no such federation file"):
        load_federation(tmp_path / "nope.toml")


def fed(extra: str = "", top: str = "", **federation) -> str:
    """GOOD with [federation] keys set (TOML values as text), top-level keys `top` and more sections `extra`."""
    keys = "\n".join(f"{k} = {v}" for k, v in {"name": '"x"', **federation}.items())
    return top + GOOD.replace('name = "x"', keys) + extra


def grant(party='"b"', columns='["a.t.id"]', constraint='"PLAINTEXT"') -> str:
    return f"[[grants]]\nparty = {party}\ncolumns = {columns}\nconstraint = {constraint}\n"


def privacy(**body) -> str:
    return "[privacy.a]\n" + "".join(f"{k} = {v}\n" for k, v in body.items())


def mask(**body) -> str:
    values = {"party": '"b"', "columns": '["a.t.v"]', "method": '"redact"', **body}
    return "[[masks]]\n" + "".join(f"{k} = {v}\n" for k, v in values.items())


def rule(**body) -> str:
    return '[rules."a.t"]\n' + "".join(f"{k} = {v}\n" for k, v in body.items())


# Every key the loader reads, with a wrong type or a wrong value: (file text, the key path the error names).
BAD_SNIPPETS = [
    (fed(name="1"), "federation.name"), (fed(name='""'), "federation.name"),
    (fed(dialect="[1]"), "federation.dialect"), (fed(dialect='"klingon"'), "federation.dialect"),
    (fed(min_group_size='"4"'), "federation.min_group_size"), (fed(min_group_size="2.5"), "federation.min_group_size"),
    (fed(min_group_size="true"), "federation.min_group_size"),
    (fed(ledger="3"), "federation.ledger"), (fed(ledger='"."'), "federation.ledger"),
    (fed(mask_key_file="[]"), "federation.mask_key_file"), (fed(mask_key_file='"."'), "federation.mask_key_file"),
    (fed(network_timeout="inf"), "federation.network_timeout"), (fed(network_timeout="nan"), "federation.network_timeout"),
    (fed(network_timeout='"30"'), "federation.network_timeout"), (fed(network_timeout="0"), "federation.network_timeout"),
    (fed(group_sums='["he"]'), "federation.group_sums"), (fed(group_sums="1"), "federation.group_sums"),
    (fed(he_key_bits="2048.0"), "federation.he_key_bits"), (fed(he_key_bits="[2048]"), "federation.he_key_bits"),
    (fed(psi='["kkrt"]'), "federation.psi"),
    (fed(link_rtt_ms="nan"), "federation.link_rtt_ms"), (fed(link_mbps="inf"), "federation.link_mbps"),
    (fed(link_mbps='"fast"'), "federation.link_mbps"), (fed(ca="5"), "federation.ca"),
    (fed("[parties.c]\ntables = 5\n"), "parties.c.tables"), (fed("[parties.c]\ndatabase = 5\n"), "parties.c.database"),
    (fed("[parties.c]\ndatabase = \".\"\n"), "parties.c.database"),
    (fed("[parties.c.tables]\nt = 5\n"), "parties.c.tables.t"), (fed("[parties.c.tables]\nt = \".\"\n"), "parties.c.tables.t"),
    (fed("[parties.c]\naddress = 5\ncertificate = \"c.pem\"\n"), "parties.c.address"),
    (fed("[parties.c]\naddress = \"h:1\"\ncertificate = 5\n"), "parties.c.certificate"),
    (fed(grant(party='["b"]')), "grants[0].party"), (fed(grant(party="{x = 1}")), "grants[0].party"),
    (fed(grant(columns='"a.t.id"')), "grants[0].columns"), (fed(grant(columns="[1]")), "grants[0].columns"),
    (fed(grant(constraint='["PLAINTEXT"]')), "grants[0].constraint"), (fed(grant(constraint="1")), "grants[0].constraint"),
    (fed(grant(party='"a"')), "grants[0]: a.t.id belongs to 'a'"),
    (fed(top="grants = 5\n"), "grants"), (fed(top="grants = [1]\n"), "grants[0]"),
    (fed(privacy(epsilon="inf")), "privacy.a.epsilon"), (fed(privacy(epsilon="nan")), "privacy.a.epsilon"),
    (fed(privacy(epsilon="-1.0")), "privacy.a.epsilon"), (fed(privacy(epsilon="0")), "privacy.a.epsilon"),
    (fed(privacy(epsilon='"1"')), "privacy.a.epsilon"), (fed(privacy(epsilon="1.0", delta="nan")), "privacy.a.delta"),
    (fed(privacy(epsilon="1.0", query_epsilon="nan")), "privacy.a.query_epsilon"),
    (fed(privacy(epsilon="1.0", query_epsilon="true")), "privacy.a.query_epsilon"),
    (fed(privacy(epsilon="1.0", query_delta="-0.1")), "privacy.a.query_delta"),
    (fed(privacy(epsilon="1.0", noise='["laplace"]')), "privacy.a.noise"), (fed(top="privacy = 5\n"), "privacy"),
    (fed("[privacy]\nz = { epsilon = 1.0 }\n"), "privacy.z"),
    (fed(mask(party='["b"]')), "masks[0].party"), (fed(mask(columns="[2]")), "masks[0].columns"),
    (fed(mask(method='["redact"]')), "masks[0].method"), (fed(mask(method='"partial"', keep="-1")), "masks[0].keep"),
    (fed(mask(method='"partial"', keep="true")), "masks[0].keep"),
    (fed(mask(method='"generalise"', bucket="nan")), "masks[0].bucket"),
    (fed(mask(method='"generalise"', bucket="inf")), "masks[0].bucket"),
    (fed(mask(method='"generalise"', date_part='["day"]')), "masks[0].date_part"),
    (fed(top="masks = {}\n"), "masks"),
    (fed(rule(aggregations='{ v = "SUM" }')), 'rules."a.t".aggregations'),
    (fed(rule(aggregations='{ v = ["SUMX"] }')), 'rules."a.t".aggregations.v'),
    (fed(rule(never_output="[1]")), 'rules."a.t".never_output'),
    (fed(rule(join_columns='"id"')), 'rules."a.t".join_columns'),
    (fed(rule(join_required='"yes"')), 'rules."a.t".join_required'),
    (fed(rule(min_group_size="-1")), 'rules."a.t".min_group_size'),
    (fed(rule(max_rows_per_identity="0")), 'rules."a.t".max_rows_per_identity'),
    (fed('[rules]\n"a" = { min_group_size = 1 }\n'), 'rules."a"'), (fed(top="rules = 5\n"), "rules"),
    (fed("[enclave]\nauthority = 5\n"), "enclave.authority"), (fed(top="enclave = 5\n"), "enclave"),
    (fed(top="dealer = 5\n"), "dealer"),
    (fed('[parties.c]\ndatabase = "postgresql://u:secret@h:5432/d"\n'), "parties.c.database"),
    (fed('[parties.c]\ndatabase = "mysql://h/d"\n'), "parties.c.database"),
    (fed('[parties.c]\ndatabase = "postgresql://u@h/d"\nschema = 5\n'), "parties.c.schema"),
    (fed('[parties.c]\ndatabase = "postgresql://u@h/d"\npassword_file = "nope.pw"\n'), "parties.c.password_file"),
    (fed('[parties.c]\ndatabase = "postgresql://u@h/d"\ntls_root_certs = "nope.pem"\n'), "parties.c.tls_root_certs"),
    (fed('[parties.c.tables]\nt = "a.csv"\n[parties.d]\nschema = "public"\n'), "parties.d.schema"),
    (fed('[views]\nv = 5\n'), "views.v"), (fed('[views]\nv = "DELETE FROM a.t"\n'), "views.v"),
    (fed(top="views = 5\n"), "views"),
]


@pytest.mark.parametrize("text, key", BAD_SNIPPETS, ids=[f"{i}:{k}" for i, (_, k) in enumerate(BAD_SNIPPETS)])
def test_every_key_with_a_wrong_type_or_value_is_a_config_error_naming_file_and_key(tmp_path, text, key):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        Engine(path).close()
    assert any(problem.startswith(f"{path}: {key}") for problem in caught.value.problems), caught.value.problems


def test_an_unreadable_mask_key_is_a_config_error_naming_its_key(tmp_path):
    (tmp_path / "bad.key").write_text("not hex")
    text = fed(mask(method='"hash"'), mask_key_file='"bad.key"')
    with pytest.raises(ConfigError, match=r"federation\.mask_key_file: ValueError"):
        Engine(write(tmp_path, text)).close()


def test_a_database_that_is_not_one_is_a_config_error_naming_its_party(tmp_path):
    (tmp_path / "c.duckdb").write_text("garbage")
    path = write(tmp_path, fed('[parties.c]\ndatabase = "c.duckdb"\n'))
    with pytest.raises(ConfigError) as caught:
        Engine(path).close()
    assert all(p.startswith(f"{path}: parties.c") for p in caught.value.problems), caught.value.problems


def test_a_wildcard_grant_skips_the_grantees_own_columns(tmp_path):
    with Engine(write(tmp_path, fed(grant(columns='["*.t.id"]')))) as engine:
        assert {(str(c), p) for c, p in engine.grants.table} == {("a.t.id", "b")}


def test_a_directory_as_the_federation_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="is a directory"):
        Engine(tmp_path)
