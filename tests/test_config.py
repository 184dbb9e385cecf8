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
