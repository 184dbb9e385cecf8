"""Text longer than 28 bytes on the SPU (issue 17): each owner shares a text column at a public width
class (28 bytes, or its longest value rounded up to a power of two, at most 1024), and operands of
different widths are padded with zero limbs. Checked against DuckDB (the Oracle) in the spine's stage
and in the translation's secret programs, with 2 and 3 parties whose columns have different widths."""

import pyarrow as pa
import pytest

from sqlsecure.engine import Engine
from sqlsecure.errors import DataError, NotSupportedError, ProtocolError
from sqlsecure.executors.spu.program import _agreed_kinds, parse_program
from sqlsecure.executors.spu.values import (MAX_TEXT_BYTES, decode_column, encode, limbs_of, shared_kind,
                                            text_width)
from sqlsecure.planner.physical import SecretQuery, SecureStage
from tests.test_network_mode import Cluster, NetworkOracle, networkify
from tests.test_secret_program import inp, program_of

PARTIES = ("p1", "p2", "p3")
PREFIX = "a" * 28  # strings equal in their first 28 bytes (the old 4-limb limit)
NOTES = {  # p1's longest is 28 bytes (width 28), p2's 80 (width 128), p3's 256 (width 256)
    "p1": ["short", PREFIX, None, "b", "héllo wörld"],
    "p2": [PREFIX + "x", "é" * 40, "short", None, PREFIX, PREFIX + "y" * 52],
    "p3": ["k" * 256, PREFIX + "x", "ü" * 100 + "z", PREFIX + "y", "short", None, "é" * 40],
}


def notes_tables(extra: dict[str, list] | None = None) -> dict[str, dict[str, pa.Table]]:
    notes = {**NOTES, **(extra or {})}
    return {p: {"notes": pa.table({"id": pa.array(range(len(v)), pa.int64()), "note": pa.array(v, pa.string())})}
            for p, v in notes.items()}


def grants(grants_for, constraints: dict[str, str]) -> str:
    """Every party lets the others use notes.<column> as `constraints` says."""
    return grants_for(*[(viewer, tuple(f"{p}.notes.{column}" for p in PARTIES if p != viewer), constraint)
                        for viewer in PARTIES for column, constraint in constraints.items()])


GRANTS = {
    "grouped": {"id": "PLAINTEXT_AFTER_COMPARE", "note": "PLAINTEXT_AFTER_GROUP_BY"},
    "aggregated": {"id": "PLAINTEXT_AFTER_AGGREGATE", "note": "PLAINTEXT_AFTER_AGGREGATE"},
    "compared": {"id": "PLAINTEXT_AFTER_COMPARE", "note": "PLAINTEXT_AFTER_COMPARE"},
    "joined": {"id": "PLAINTEXT_AFTER_JOIN", "note": "PLAINTEXT_AFTER_COMPARE"},
    "revealed": {"id": "PLAINTEXT_AFTER_COMPARE", "note": "PLAINTEXT"},
}


@pytest.fixture(scope="module")
def notes(tmp_path_factory, federation_writer, grants_for, oracle_for):
    """{grants name: Oracle} over the notes federation, one engine per grant set."""
    engines = {}
    for name, constraints in GRANTS.items():
        path = federation_writer(tmp_path_factory.mktemp(name), notes_tables(), grants(grants_for, constraints),
                                 parties=PARTIES, min_group_size=1)
        engines[name] = Engine(path, timeout=120)
    yield {name: oracle_for(engine) for name, engine in engines.items()}
    for engine in engines.values():
        engine.close()


UNION = ("(SELECT id, note FROM p1.notes UNION ALL SELECT id, note FROM p2.notes "
         "UNION ALL SELECT id, note FROM p3.notes) u")

SPINE = [  # (grants, query): the spine's SPU stage over a UNION ALL of the three parties, or after a PSI join
    ("grouped", f"SELECT note, COUNT(*) AS n FROM {UNION} GROUP BY note"),
    ("aggregated", f"SELECT COUNT(DISTINCT note) AS n FROM {UNION}"),
    ("aggregated", f"SELECT MIN(note) AS lo, MAX(note) AS hi FROM {UNION}"),
    ("compared", f"SELECT COUNT(*) AS n FROM {UNION} WHERE note LIKE '{PREFIX}%'"),
    ("compared", f"SELECT COUNT(*) AS n FROM {UNION} WHERE note LIKE '{PREFIX}y%'"),
    ("compared", f"SELECT COUNT(*) AS n FROM {UNION} WHERE note LIKE '{'é' * 40}'"),
    ("compared", f"SELECT COUNT(*) AS n FROM {UNION} WHERE note < '{PREFIX}x'"),
    ("compared", f"SELECT COUNT(*) AS n FROM {UNION} WHERE note > '{PREFIX}' AND note <> '{'k' * 256}'"),
    ("revealed", f"SELECT note FROM {UNION} ORDER BY note LIMIT 5"),
    ("revealed", f"SELECT DISTINCT note FROM {UNION}"),
    ("revealed", f"SELECT note, COUNT(*) AS n FROM {UNION} WHERE id > 0 GROUP BY note ORDER BY note"),
    ("joined", "SELECT COUNT(*) AS n FROM p1.notes a JOIN p3.notes b ON a.id = b.id WHERE a.note < b.note"),
    ("joined", "SELECT COUNT(*) AS n FROM p2.notes a JOIN p3.notes b ON a.id = b.id WHERE a.note >= b.note"),
    ("compared", "SELECT COUNT(*) AS n FROM p1.notes a JOIN (SELECT id, MAX(note) AS m FROM p3.notes GROUP BY id) b "
                 "ON a.id = b.id WHERE a.note < b.m"),  # an oblivious join (no join grant), text payloads
    ("compared", f"SELECT COUNT(*) AS n FROM {UNION} WHERE note IN ('{PREFIX}y', '{'é' * 40}', 'short')"),
    ("compared", f"SELECT COUNT(*) AS n FROM {UNION} WHERE COALESCE(note, '{'n' * 90}') > '{PREFIX}z'"),
    ("compared", f"SELECT COUNT(*) AS n FROM {UNION} "
                 f"WHERE CASE WHEN id > 2 THEN note ELSE '{'c' * 40}' END = '{'c' * 40}'"),
]

TRANSLATED = [  # (grants, query): a secret program of the translation
    ("compared", "SELECT COUNT(*) AS n FROM p1.notes a JOIN p3.notes b ON a.note = b.note"),
    ("compared", "SELECT COUNT(*) AS n FROM p2.notes a JOIN p3.notes b ON a.note = b.note"),
    ("compared", "SELECT COUNT(*) AS n FROM p1.notes a JOIN p2.notes b ON a.note = b.note "
                 "JOIN p3.notes c ON b.note = c.note"),
    ("compared", "SELECT COUNT(*) AS n FROM p1.notes a JOIN p3.notes b ON a.id = b.id WHERE a.note < b.note"),
    ("compared", "SELECT COUNT(*) AS n FROM (SELECT note FROM p1.notes UNION ALL SELECT note FROM p3.notes) u "
                 "JOIN p2.notes b ON u.note = b.note"),
    ("compared", f"SELECT COUNT(*) AS n FROM p2.notes a JOIN p3.notes b ON a.id = b.id "
                 f"WHERE b.note LIKE '{PREFIX}%'"),
    ("grouped", "SELECT a.note, COUNT(*) AS n FROM p2.notes a JOIN p3.notes b ON a.id = b.id GROUP BY a.note"),
    ("aggregated", "SELECT COUNT(DISTINCT note) AS n FROM (SELECT note FROM p1.notes UNION "
                   "SELECT note FROM p3.notes) u"),
    ("revealed", "SELECT DISTINCT b.note FROM p2.notes a JOIN p3.notes b ON a.id < b.id"),
    ("revealed", "SELECT b.note FROM p1.notes a JOIN p3.notes b ON a.id = b.id ORDER BY b.note LIMIT 3"),
]


def _path(oracle, sql: str) -> type:
    steps = oracle.engine.plan(sql, "p1").physical.steps
    return next(type(s) for s in steps if isinstance(s, (SecureStage, SecretQuery)))


@pytest.mark.parametrize("name,sql", SPINE)
def test_long_text_in_the_spines_stage_equals_duckdb(notes, name, sql):
    assert _path(notes[name], sql) is SecureStage
    notes[name].check(sql, "p1")


@pytest.mark.parametrize("name,sql", TRANSLATED)
def test_long_text_in_secret_programs_equals_duckdb(notes, name, sql):
    assert _path(notes[name], sql) is SecretQuery
    notes[name].check(sql, "p1")


def test_two_parties_join_on_text_of_different_widths(tmp_path, federation_writer, grants_for, oracle_for):
    """p1's text is 28 bytes wide, p2's 128: the join key is compared at 128 bytes (p1's zero-padded)."""
    tables = {p: t for p, t in notes_tables().items() if p in ("p1", "p2")}
    text = grants_for(("p1", ("p2.notes.note", "p2.notes.id"), "PLAINTEXT_AFTER_COMPARE"),
                      ("p2", ("p1.notes.note", "p1.notes.id"), "PLAINTEXT_AFTER_COMPARE"))
    path = federation_writer(tmp_path, tables, text, parties=("p1", "p2"), min_group_size=1)
    with Engine(path, timeout=120) as engine:
        oracle_for(engine).check("SELECT COUNT(*) AS n FROM p1.notes a JOIN p2.notes b ON a.note = b.note", "p1")


@pytest.mark.parametrize("sql", [f"SELECT COUNT(DISTINCT note) AS n FROM {UNION}",  # (a WHERE on it: its owners'
                                 # flags, the text never shared: tests/test_union_owner_flags.py)
                                 "SELECT COUNT(*) AS n FROM p1.notes a JOIN p3.notes b ON a.note = b.note"])
def test_text_beyond_the_widest_class_is_a_data_error_naming_the_column(tmp_path, federation_writer, grants_for,
                                                                         sql):
    """p3 holds a value of 1025 bytes: its owner refuses it before sharing, naming the column and the width."""
    tables = notes_tables({"p3": [*NOTES["p3"], "z" * (MAX_TEXT_BYTES + 1)]})
    path = federation_writer(tmp_path, tables, grants(grants_for, GRANTS["compared"]), parties=PARTIES,
                             min_group_size=1)
    with Engine(path, timeout=120) as engine:
        with pytest.raises(DataError, match=rf"note'.*longer than {MAX_TEXT_BYTES} bytes"):
            engine.execute(sql, "p1")


def test_a_text_constant_beyond_the_widest_class_is_refused_at_plan_time(notes, assert_refused):
    """On the SPU (a condition over two parties' columns); each owner compares its own rows with it."""
    long = "q" * (MAX_TEXT_BYTES + 1)
    notes["compared"].check(f"SELECT COUNT(*) AS n FROM {UNION} WHERE note = '{long}'", "p1")
    sql = f"SELECT COUNT(*) AS n FROM p1.notes a JOIN p3.notes b ON a.id = b.id WHERE a.note = '{long}' OR b.id > 5"
    assert_refused(notes["compared"].engine, sql, "p1", NotSupportedError, f"at most {MAX_TEXT_BYTES} bytes")


@pytest.mark.parametrize("longest,width", [(0, 28), (28, 28), (29, 32), (33, 64), (256, 256), (1024, 1024)])
def test_the_width_class_reveals_at_most_log2_of_the_longest_value(longest, width):
    assert text_width(["x" * longest, None, ""], "note") == width


@pytest.mark.parametrize("values", [["é" * 40, PREFIX + "x", None, ""], ["k" * 256, "ü" * 100 + "z"]])
def test_text_of_a_width_class_round_trips_exactly(values):
    column = pa.chunked_array([pa.array(values, pa.string())])
    kind = shared_kind(column, "note")
    limbs, valid = encode(column, kind, 16, name="note")
    assert len(limbs) == limbs_of(kind)
    assert decode_column(limbs, valid, "text", 16).to_pylist() == values


def test_a_value_longer_than_the_agreed_width_is_a_data_error_naming_the_width():
    column = pa.chunked_array([pa.array(["y" * 65], pa.string())])
    with pytest.raises(DataError, match=r"'note'.*longer than 64 bytes.*LEFT\(note, 16\)"):
        encode(column, "text.64", 16, name="note")


def test_explain_states_what_the_text_width_reveals(notes):
    """The width class is agreed in the clear among the compute parties: EXPLAIN lists it as learned."""
    translated = notes["compared"].engine.explain(TRANSLATED[0][1], "p1")
    assert "width class of" in translated and "log2 of that length" in translated
    spine = notes["grouped"].engine.explain(SPINE[0][1], "p1")
    assert "width class of each text column shared" in spine


@pytest.fixture(scope="module")
def networked_notes(tmp_path_factory, federation_writer, grants_for, oracle_for):
    """The "compared" notes federation with every party and the dealer its own process (network mode)."""
    path = federation_writer(tmp_path_factory.mktemp("network"), notes_tables(),
                             grants(grants_for, GRANTS["compared"]), parties=PARTIES, min_group_size=1)
    cluster = Cluster(networkify(path, (*PARTIES, "dealer"), timeout=30), (*PARTIES, "dealer"))
    try:
        with Engine(cluster.path) as embedded, Engine(cluster.path, runtime="network", identity="p1") as networked:
            yield oracle_for(NetworkOracle({"p1": networked}, embedded))
    finally:
        cluster.stop()


@pytest.mark.parametrize("sql", [SPINE[6][1], TRANSLATED[0][1], TRANSLATED[1][1]])
def test_long_text_over_the_network_equals_duckdb(networked_notes, sql):
    """The width classes are agreed by the same messages between processes as in one process."""
    networked_notes.check(sql, "p1")


@pytest.mark.parametrize("reported", ["text.70", "text.2048", "int", "text.x"])
def test_a_peer_reporting_a_width_outside_the_classes_is_a_protocol_error(reported):
    program = parse_program(program_of(inp(0), [[["note", "text"]]]))
    assert _agreed_kinds(program, 0, [["note", "text.256"]]) == [("note", "text.256")]
    with pytest.raises(ProtocolError, match="kinds the program does not declare"):
        _agreed_kinds(program, 0, [["note", reported]])
