"""The mysql dialect's rewrites on the SPU (issue 17): a number as a condition, a division by a constant and
MySQL's rounded quotients are computed across parties within the SPU's real range, equal to the oracle;
a value truly beyond the ring is still refused, by `check` and execution alike (tests/test_dialects.py
compares the same rewrites with MariaDB)."""

from __future__ import annotations

import pyarrow as pa
import pytest

from sqlsecure.engine import Engine
from sqlsecure.errors import DataError, NotSupportedError
from tests.conftest import all_plaintext

PARTIES = ("bank", "insurer")
JOINED = "FROM bank.t t JOIN insurer.u u ON t.k = u.k"
# AVG(x) is ROUND(CAST(AVG(x) AS DECIMAL(38, 9)), 4): exact at 9 decimals while |x| < 2^45 / 10^9 = 35,184
WITHIN, BEYOND = 2 ** 15 - 1, 2 ** 15  # the largest |x|: magnitude class 2^15 (within) or 2^16 (beyond)


def _tables(largest: int) -> dict:
    """NULLs, zeros and negative values on both sides of a one-to-one join; x reaches `largest`."""
    keys = pa.array(range(1, 9), pa.int64())
    x = pa.array([0, 5, -7, None, largest, 3, -1, 2], pa.int64())
    y = pa.array([3, 0, -2, 4, None, 1, 0, -5], pa.int64())
    return {"bank": {"t": pa.table({"k": keys, "x": x})}, "insurer": {"u": pa.table({"k": keys, "y": y})}}


@pytest.fixture(scope="module")
def engines(tmp_path_factory, federation_writer):
    """(within, beyond): mysql federations whose x reaches 2^15 - 1 or 2^15."""
    opened = [mysql_engine(tmp_path_factory.mktemp(name), federation_writer, all_plaintext(PARTIES), largest)
              for name, largest in (("within", WITHIN), ("beyond", BEYOND))]
    yield opened
    for engine in opened:
        engine.close()


ANSWERED = [
    # a number as a condition is `x <> 0`: negative and zero values, NULL (false)
    f"SELECT t.k, IF(t.x, u.y, -u.y) AS v {JOINED}",
    f"SELECT t.k, CASE WHEN t.x - u.y THEN 1 WHEN u.y THEN 2 ELSE 0 END AS v {JOINED}",
    f"SELECT t.k, IF(t.x * u.y, 1, 0) AS v, IF(NOT u.y, 1, 0) AS w {JOINED}",
    # a division by a constant is exact, not a division by the secret NULLIF(c, 0)
    f"SELECT t.k, (t.x + u.y) / 10000 AS v, t.x / -8 AS w, (t.x * u.y) / 20000 AS z {JOINED}",
    f"SELECT t.k, (t.x * u.y) % 7 AS m, (t.x + u.y) DIV -4 AS q {JOINED}",
    # AVG: MySQL's DECIMAL of 4 more decimals, the SPU's limit from the value's range, not the cast's scale
    f"SELECT AVG(t.x + u.y) AS a, AVG(t.x) AS b, SUM(u.y) / 3 AS c {JOINED}",
    f"SELECT AVG(t.x) > AVG(u.y) AS a {JOINED}",
    # a zero divisor (a DOUBLE: MySQL's quotient is a DOUBLE) gives NULL
    f"SELECT t.k, t.x / CAST(u.y AS DOUBLE) AS v {JOINED}",
]


@pytest.mark.parametrize("sql", ANSWERED)
def test_mysql_rewrites_on_the_spu_equal_the_oracle(engines, oracle_for, sql):
    within, _ = engines
    assert "SPU(" in within.explain(sql, "bank")
    assert within.check(sql, "bank") is None
    oracle_for(within).check(sql, "bank")


def test_a_value_beyond_the_quotients_range_is_refused_by_check_and_execution(engines, assert_refused):
    """AVG(x) held at 9 decimals: |x| < 2^15 is within the ring, a class of 2^16 is not."""
    _, beyond = engines
    sql = f"SELECT AVG(t.x + u.y) AS a {JOINED}"
    refused = assert_refused(beyond, sql, "bank", DataError, "t.x")
    assert "2^16" in str(refused)
    with pytest.raises(DataError) as executed:
        beyond.execute(sql, "bank")
    assert str(executed.value) == str(refused)


def test_a_rounded_quotient_by_a_secret_is_refused_on_the_spu_by_check_and_execution(
        tmp_path, federation_writer, grants_for, assert_refused, oracle_for):
    """MySQL's `/` of integers by a secret is rounded at 4 decimals through DECIMAL(38, 9): finer than the
    SPU's approximate quotient, so the SPU refuses it at plan time (execution refused it on every row); where
    the issuer may see every column, it is computed there, exactly as MySQL rounds it (NULL for y = 0)."""
    sql = f"SELECT t.k, t.x / u.y AS v {JOINED}"
    with mysql_engine(tmp_path / "plain", federation_writer, all_plaintext(PARTIES)) as plain:
        assert "computed at bank in plaintext" in plain.explain(sql, "bank")
        oracle_for(plain).check(sql, "bank")
    keys_after_join = grants_for(("bank", ("insurer.u.k",), "PLAINTEXT_AFTER_JOIN"),
                                 ("insurer", ("bank.t.k",), "PLAINTEXT_AFTER_JOIN"),
                                 ("bank", ("insurer.u.y",), "PLAINTEXT"))
    with mysql_engine(tmp_path / "joined", federation_writer, keys_after_join) as secret:
        refused = assert_refused(secret, sql, "bank", NotSupportedError, "approximate")
        with pytest.raises(NotSupportedError) as executed:
            secret.execute(sql, "bank")
        assert str(executed.value) == str(refused)


def mysql_engine(directory, federation_writer, grants: str, largest: int = WITHIN) -> Engine:
    """A mysql federation over the tables whose x reaches `largest`, under `grants`."""
    directory.mkdir(parents=True, exist_ok=True)
    path = federation_writer(directory, _tables(largest), grants, parties=PARTIES, dialect="mysql", min_group_size=0)
    return Engine(path, timeout=60)
