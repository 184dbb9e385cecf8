"""LIKE with any constant pattern on secret text (issue 17; `executors/spu/like.py`).

The primitive against a plaintext reference (a character-level matcher written here) and DuckDB, with
its round count equal to the stated `like.rounds`; then whole queries against the Oracle (plain DuckDB
over all parties' data) with 2 and 3 parties, NULLs, empty strings, text wider than 28 bytes,
patterns longer than the text, `_` at the edges and repeated segments; and the refusals, by name.
"""

import math

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from sqlsecure.engine import Engine
from sqlsecure.errors import NotSupportedError, PlanError
from sqlsecure.executors.spu import arith, like
from sqlsecure.executors.spu.local import run_spu
from sqlsecure.executors.spu.shares import as_ring
from sqlsecure.executors.spu.values import LIMB_BYTES, text_limbs
from sqlsecure.planner.physical import SecretQuery, SecureStage
from tests.conftest import refused_at_plan_time

TEXTS = ["", "a", "ab", "aa", "aaa", "aaaa", "aXa", "é", "éa", "aé", "ü" * 9 + "z", "a_b", "a%b", "a!b",
         "special requests", "x special y requests z", "requests special", "abcabc", "k" * 28, "ab" * 14,
         "日本語", "a日b"]
PATTERNS = ["", "%", "%%", "_", "__", "___", "a", "a%", "%a", "%a%", "%aa%aa%", "_a", "a_", "_a_", "%_", "_%",
            "%special%requests%", "%é%", "_a%", "a%b%c", "%b_", "a_%_c", "ab%ab%ab%ab%", "k" * 29, "%" + "k" * 28,
            "k" * 28, "%" + "k" * 29 + "%", "a_b", "%日_", "_本%", "%z"]
ESCAPED = [("a!_b", "!"), ("a!%b", "!"), ("a!!b", "!"), ("%!%%", "!"), ("a!b", "!"), ("a_b", ""), ("a\\_b", "\\")]


def reference_like(text: str, pattern: str, escape: str | None = None) -> bool:
    """Plaintext LIKE, character by character: the set of text positions each pattern prefix can reach."""
    reach, k = {0}, 0
    while k < len(pattern):
        c, k = pattern[k], k + 1
        if escape and c == escape:
            c, k = pattern[k], k + 1
            reach = {i + 1 for i in reach if i < len(text) and text[i] == c}
        elif c == "%":
            reach = set(range(min(reach), len(text) + 1)) if reach else set()
        elif c == "_":
            reach = {i + 1 for i in reach if i < len(text)}
        else:
            reach = {i + 1 for i in reach if i < len(text) and text[i] == c}
    return len(text) in reach


def duckdb_like(texts, pattern, escape=None) -> list[bool]:
    con = duckdb.connect()
    sql = "SELECT t LIKE ? ESCAPE ? FROM (SELECT UNNEST(?) AS t, GENERATE_SUBSCRIPTS(?, 1) AS i) ORDER BY i" \
        if escape is not None else \
        "SELECT t LIKE ? FROM (SELECT UNNEST(?) AS t, GENERATE_SUBSCRIPTS(?, 1) AS i) ORDER BY i"
    params = [pattern, escape, texts, texts] if escape is not None else [pattern, texts, texts]
    return [row[0] for row in con.execute(sql, params).fetchall()]


def shared_text(s, rows: list[list[int]]):
    """Party 0's text limbs (`values.text_limbs`) as additive shares."""
    return [arith.share_input(s, 0, as_ring(np.array(limb, np.int64)) if s.index == 0 else None, (len(limb),))
            for limb in rows]


def secret_like(nparties: int, texts: list[str], width: int, cases: list[tuple[str, str | None]]):
    """{(pattern, escape): (revealed 0/1 per text, rounds counted, rounds stated)}, the texts shared by party 0."""
    rows = text_limbs(texts, width=width)

    def program(s):
        limbs = shared_text(s, rows)
        out = {}
        for pattern, escape in cases:
            tokens = like.pattern_tokens(pattern, escape)
            s.rounds = 0
            bit = like.like_match(s, limbs, tokens)
            counted = s.rounds
            out[pattern, escape] = ([int(b) for b in arith.reveal(s, bit)], counted,
                                    like.rounds(tokens, LIMB_BYTES * len(limbs), s.nparties))
        return out

    return run_spu(nparties, program).results[0]


def test_the_reference_matches_duckdb():
    for pattern in PATTERNS:
        assert [reference_like(t, pattern) for t in TEXTS] == duckdb_like(TEXTS, pattern), pattern
    for pattern, escape in ESCAPED:
        assert [reference_like(t, pattern, escape) for t in TEXTS] == duckdb_like(TEXTS, pattern, escape), pattern


@pytest.mark.parametrize("nparties,width", [(2, 28), (3, 28), (2, 64)])
def test_secret_like_equals_the_reference_in_the_stated_rounds(nparties, width):
    cases = [(p, None) for p in PATTERNS if "\\" not in p] + ESCAPED
    for (pattern, escape), (got, counted, stated) in secret_like(nparties, TEXTS, width, cases).items():
        assert got == [int(reference_like(t, pattern, escape)) for t in TEXTS], (pattern, escape)
        assert counted == stated, (pattern, escape)


def test_the_stated_rounds_are_a_function_of_width_and_pattern():
    """A2B (7 rounds for 2 parties, 8 for 3) + byte equalities 3 + the runs' tree + the automaton + B2A 1;
    Q13's pattern at 128 bytes (19 limbs): 7 + 3 + 3 (runs of 7 and 8 bytes) + (0 + 0 + 8 + 1 + 8) + 1."""
    q13 = like.pattern_tokens("%special%requests%")
    assert like.rounds(q13, 133, 2) == 7 + 3 + 3 + 17 + 1
    assert like.rounds(q13, 133, 3) == like.rounds(q13, 133, 2) + 1
    assert like.rounds(like.pattern_tokens("a_"), 28, 2) == 7 + 3 + 1 + 2 + 1
    assert like.rounds(like.pattern_tokens("%abc"), 28, 2) == 7 + 3 + 2 + 1 + 1
    assert like.rounds(like.pattern_tokens("k" * 29), 28, 2) == 0  # longer than the text: false, no protocol
    assert like.rounds(like.pattern_tokens("%%"), 28, 2) == 0  # every text
    widths = [like.rounds(q13, w, 2) for w in (28, 63, 133, 259, 1029)]
    assert widths == sorted(widths) and widths[-1] - widths[0] == 2 * (11 - 5)  # two scans of log2(W + 1)


def stated_bytes_per_row(tokens: tuple, width: int) -> float:
    """The bound of `spu.like`'s docstring on the bytes between 2 parties per row."""
    wanted = {0, *(b for t in tokens if isinstance(t, bytes) for b in t)}
    nibbles = {(c >> 4, "high") for c in wanted} | {(c & 15, "low") for c in wanted}
    w8, u = -(-width // 8) * 8, int(like.ONE_CHAR in tokens)
    runs = {t for t in tokens if isinstance(t, bytes)}
    steps = sum(isinstance(t, bytes) for t in tokens) + 4 * tokens.count(like.ONE_CHAR) + 1 \
        + math.ceil(math.log2(width + 1)) * tokens.count(like.ANY)
    return (384 * (width // LIMB_BYTES) + w8 * (3 * len(nibbles) + len(wanted) + 6 * u) / 2
            + sum(len(r) - 1 for r in runs) * w8 / 2 + (width + 1) * steps / 2)


@pytest.mark.parametrize("pattern", ["%special%requests%", "a_", "%aa%aa%", "_é%z"])
def test_secret_like_sends_at_most_the_stated_bytes(pattern):
    rows, width = 256, 133
    texts = ["x special y requests z", "", "aé z"] * (rows // 3) + ["a"] * (rows % 3)
    limbs = text_limbs(texts, width=128)
    base = run_spu(2, lambda s: shared_text(s, limbs)).party_bytes()
    total = run_spu(2, lambda s: like.like_match(s, shared_text(s, limbs), like.pattern_tokens(pattern))).party_bytes()
    tokens = like.pattern_tokens(pattern)
    assert 384 * len(limbs) <= (total - base) / rows <= stated_bytes_per_row(tokens, width)


def test_pattern_tokens():
    assert like.pattern_tokens("%%a_%b%") == ("%", b"a", "_", "%", b"b", "%")
    assert like.pattern_tokens("a!%b!!", "!") == (b"a%b!",)
    assert like.pattern_tokens("é_", "") == ("é".encode(), "_")
    with pytest.raises(like.PatternError, match="ESCAPE"):
        like.pattern_tokens("a\\%")
    with pytest.raises(like.PatternError, match="ends with its escape"):
        like.pattern_tokens("a!", "!")
    with pytest.raises(like.PatternError, match="NUL"):
        like.pattern_tokens("a\0%")


# --- whole queries against the Oracle ------------------------------------------------------------------------

NOTES = {  # p1 28 bytes wide, p2 64, p3 128 (the widths differ: operands are padded)
    "p1": ["special requests", "", None, "a", "aa", "aXa", "é", "a_b", "regular"],
    "p2": ["x special y requests z", "requests special", "aaaa aa", None, "", "é" * 20 + "z", "b" * 40, "ab_"],
    "p3": ["k" * 100 + " special" + " requests", "special_requests", None, "a%b", "日本語", "aé", "", "zz" * 50],
}
UNION3 = ("(SELECT id, note FROM p1.notes UNION ALL SELECT id, note FROM p2.notes "
          "UNION ALL SELECT id, note FROM p3.notes) u")
UNION2 = "(SELECT id, note FROM p1.notes UNION ALL SELECT id, note FROM p2.notes) u"
GRANTS = {"id": "PLAINTEXT", "note": "PLAINTEXT_AFTER_COMPARE"}  # the notes secret, what LIKE says of them plain
QUERY_PATTERNS = ["%special%requests%", "%aa%aa%", "_", "a_", "_a%", "%_", "", "%", "%é%", "%z", "a%a",
                  "b" * 41 + "%", "%" + "b" * 40, "_" * 20 + "%", "%requests"]


def notes_federation(tmp_path, federation_writer, grants_for, parties):
    tables = {p: {"notes": pa.table({"id": pa.array(range(len(NOTES[p])), pa.int64()),
                                     "note": pa.array(NOTES[p], pa.string())})} for p in parties}
    grants = grants_for(*[(viewer, tuple(f"{p}.notes.{column}" for p in parties if p != viewer), constraint)
                          for viewer in parties for column, constraint in GRANTS.items()])
    return Engine(federation_writer(tmp_path, tables, grants, parties=parties, min_group_size=1), timeout=120)


@pytest.fixture(scope="module")
def three(tmp_path_factory, federation_writer, grants_for, oracle_for):
    engine = notes_federation(tmp_path_factory.mktemp("three"), federation_writer, grants_for, ("p1", "p2", "p3"))
    yield oracle_for(engine)
    engine.close()


@pytest.fixture(scope="module")
def two(tmp_path_factory, federation_writer, grants_for, oracle_for):
    engine = notes_federation(tmp_path_factory.mktemp("two"), federation_writer, grants_for, ("p1", "p2"))
    yield oracle_for(engine)
    engine.close()


def _secure_step(oracle, sql: str) -> type:
    steps = oracle.engine.plan(sql, "p1").physical.steps
    return next(type(s) for s in steps if isinstance(s, (SecureStage, SecretQuery)))


@pytest.mark.parametrize("pattern", QUERY_PATTERNS)
def test_like_over_three_parties_equals_duckdb(three, pattern):
    sql = f"SELECT id, note LIKE '{pattern}' AS hit, note NOT LIKE '{pattern}' AS miss FROM {UNION3}"
    assert _secure_step(three, sql) is SecureStage
    three.check(sql, "p1")


@pytest.mark.parametrize("pattern", ["%special%requests%", "a_", "%a%", "_%_", "%$%%", "a$_b"])
def test_like_over_two_parties_equals_duckdb(two, pattern):
    escape = " ESCAPE '$'" if "$" in pattern else ""
    two.check(f"SELECT COUNT(*) AS n FROM {UNION2} WHERE note LIKE '{pattern}'{escape}", "p1")
    two.check(f"SELECT COUNT(*) AS n FROM {UNION2} WHERE note NOT LIKE '{pattern}'{escape}", "p1")


@pytest.mark.parametrize("sql", [
    "SELECT COUNT(*) AS n FROM p1.notes a JOIN p3.notes b ON a.id = b.id WHERE b.note LIKE '%special%'",
    "SELECT a.id AS i, COUNT(b.id) AS n FROM p1.notes a LEFT JOIN p2.notes b "
    "ON a.id = b.id AND b.note NOT LIKE '%special%requests%' GROUP BY a.id",
    "SELECT COUNT(*) AS n FROM p2.notes a JOIN p3.notes b ON a.id = b.id WHERE a.note LIKE '_%' OR b.note LIKE '%_'",
])
def test_like_after_a_join_equals_duckdb(three, sql):
    three.check(sql, "p1")


CROSS = "SELECT COUNT(*) AS n FROM p2.notes a JOIN p3.notes b ON a.id = b.id WHERE b.id > 5 OR "


@pytest.mark.parametrize("condition,named", [
    ("a.note ILIKE '%a%'", "ILIKE"),
    ("a.note LIKE 'a\\_b'", "ESCAPE"),
    ("a.note LIKE CAST(a.id AS VARCHAR)", "constant"),
])
def test_like_the_spu_cannot_match_exactly_is_refused_by_name(three, condition, named):
    """On the SPU (a condition over two parties' columns); each owner evaluates such a LIKE of its own rows."""
    three.check(f"SELECT COUNT(*) AS n FROM {UNION3} WHERE {condition.replace('a.', '')}", "p1")
    refused_at_plan_time(three.engine, CROSS + condition, "p1", NotSupportedError, named)


@pytest.mark.parametrize("condition,named", [("note LIKE 'a!' ESCAPE '!'", "ends with its escape character"),
                                             ("note LIKE 'a!!!' ESCAPE '!'", "ends with its escape character"),
                                             ("note NOT LIKE 'a%' ESCAPE '!!'", "must be one character")])
def test_a_malformed_pattern_is_refused_before_any_device_is_chosen(three, condition, named):
    """No database accepts it: refused at plan time (check agreeing), whoever would evaluate it."""
    for sql in (f"SELECT COUNT(*) AS n FROM {UNION3} WHERE {condition}",
                f"SELECT COUNT(*) AS n FROM p1.notes WHERE {condition}", CROSS + "a." + condition):
        refused_at_plan_time(three.engine, sql, "p1", PlanError, named)
