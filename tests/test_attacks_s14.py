"""Round 14's red team (issue 16): a hostile analyst at the bank with a legitimate account: shop columns
masked for it (`[[masks]]`), DP-noised answers, DB-API parameters, a SQLite party whose columns hold values
of other types than declared, scalar subqueries beside GROUP BY.

Leaks found and fixed, each at its class:
1. masking bypass: a mask bound only the outputs naming the column, so every other use computed with the
   unmasked value and told the issuer about it: `WHERE o.category = 'books'` (or `<`, a binary search) named
   each order's category, a join with the issuer's own column copied it, GROUP BY / DISTINCT / a merging
   UNION counted the redacted values' distinct values, ORDER BY sorted by them (a UNION of a masked column
   with itself also crashed the spine: InternalError). A column masked for the issuer may now only pass to
   the result as is (planner/mask_uses.py; a `hash` mask, which keeps equality, also as a group key).
2. DB-API parameters were bound in sqlglot's breadth-first order, not the text's: a `?` in a CTE, or nested
   deeper than a later one, took another marker's value: wrong answers (planner/parse.py marks each marker
   with its offset). Not leaked: values are literals on the parsed tree (quotes, comments, `;` stay values);
   a wrong count is a ProgrammingError.
3. differential privacy: not leaked (HAVING / ORDER BY / comparisons of the noised aggregate, COUNT through
   CASE, an exact inner aggregate through a CTE or derived table, UNION ALL of one aggregate, a window, a
   revealed subquery are refused at plan time, nothing charged; every rewrite is charged, the ledger
   persists). Fixed: two outputs of one name (`COUNT(*), COUNT(*)`) failed at the party with an
   InternalError after the charge; now refused at plan time (planner/reveal.py).
4. SQLite: the catalog typed a column by its values (ADBC), so a column declared INTEGER holding text in
   one row was published as BLOB, and SQLite computed on such values (SUM reads text as 0); now declared
   types, and such a column is a DataError naming it, never the value (connectors/sqlite_types.py).
5. a scalar subquery in a grouped SELECT list (also inside an aggregate) was not thresholded: `SELECT
   c.region, (SELECT SUM(o.amount) FROM shop.orders o WHERE o.customer_id = 1) ... GROUP BY c.region` read a
   lone order's amount; now NULL below the threshold, as without GROUP BY (planner/tree.py).
"""

from __future__ import annotations

import sqlite3

import pyarrow as pa
import pytest

from sqlsecure import dbapi
from sqlsecure.connectors.adbc_store import AdbcStore, Source
from sqlsecure.engine import Engine
from sqlsecure.errors import DataError, NotSupportedError, PolicyViolation, ProgrammingError

MASKS = """
[[masks]]
party = "bank"
columns = ["shop.orders.category"]
method = "redact"

[[masks]]
party = "bank"
columns = ["shop.orders.region"]
method = "hash"
"""

JOINED = "FROM shop.orders o JOIN bank.customers c ON o.customer_id = c.id"


@pytest.fixture(scope="module")
def masked(tmp_path_factory, make_federation, plaintext_grants):
    path = make_federation(tmp_path_factory.mktemp("attacks_s14"), plaintext_grants() + MASKS)
    with Engine(path, timeout=60) as engine:
        yield engine


# -- 1. masks: every use of a masked column but passing it to the result is refused ------------------
BYPASSES = [
    ("SELECT o.order_id FROM shop.orders o WHERE o.category = 'books'", "WHERE"),  # names each row's value
    ("SELECT o.order_id, o.category FROM shop.orders o WHERE o.category < 'c'", "WHERE"),  # a binary search
    ("SELECT o.order_id FROM shop.orders o WHERE o.category IN (SELECT 'books')", "WHERE"),
    (f"SELECT t.order_id FROM (SELECT o.order_id, o.category AS k {JOINED}) t WHERE t.k = 'books'", "WHERE"),
    ("WITH t AS (SELECT order_id, category AS k FROM shop.orders) SELECT order_id FROM t WHERE k LIKE 'b%'", "WHERE"),
    ("SELECT o.order_id, c.name FROM shop.orders o JOIN bank.customers c ON o.category = c.name", "JOIN"),
    ("SELECT o.order_id, k.v FROM shop.orders o JOIN (SELECT 'books' AS v) k ON o.category = k.v", "JOIN"),
    ("SELECT COUNT(*) AS n FROM shop.orders o GROUP BY o.category", "GROUP BY"),
    ("SELECT o.category, COUNT(*) AS n FROM shop.orders o GROUP BY o.category", "grouped"),
    ("SELECT DISTINCT o.category FROM shop.orders o", "DISTINCT"),
    ("SELECT o.category FROM shop.orders o UNION SELECT o.category FROM shop.orders o", "UNION"),
    ("SELECT o.order_id FROM shop.orders o ORDER BY o.category LIMIT 5", "ORDER BY"),
    ("SELECT o.order_id, o.category FROM shop.orders o ORDER BY 2", "ORDER BY"),
    ("SELECT o.order_id, COUNT(*) OVER (PARTITION BY o.category) AS n FROM shop.orders o", "window"),
    ("SELECT o.order_id FROM shop.orders o QUALIFY ROW_NUMBER() OVER (ORDER BY o.category) = 1", "ORDER BY"),
    ("SELECT c.name FROM bank.customers c WHERE EXISTS (SELECT 1 FROM shop.orders o WHERE o.customer_id = c.id "
     "AND o.category = 'books')", "WHERE"),
    ("SELECT c.name FROM bank.customers c WHERE c.name IN (SELECT o.category FROM shop.orders o)", "WHERE"),
    ("SELECT o.order_id FROM shop.orders o WHERE o.region = 'north'", "WHERE"),  # hash keeps equality, not values
    ("SELECT o.order_id, c.region FROM shop.orders o JOIN bank.customers c ON o.region = c.region", "JOIN"),
    ("SELECT o.order_id FROM shop.orders o ORDER BY o.region", "ORDER BY"),
]


@pytest.mark.parametrize("sql, clause", BYPASSES)
def test_a_masked_column_cannot_be_read_through_another_use(masked, assert_refused, sql, clause):
    error = assert_refused(masked, sql, "bank", PolicyViolation, "masked for bank")
    assert clause.lower() in str(error).lower() and "shop.orders." in str(error)


@pytest.mark.parametrize("sql", [
    "SELECT o.category || '' AS x FROM shop.orders o", "SELECT LOWER(o.category) AS x FROM shop.orders o",
    "SELECT LENGTH(o.category) AS x FROM shop.orders o", "SELECT CAST(o.category AS BLOB) AS x FROM shop.orders o",
    "SELECT SUBSTR(o.category, 1, 1) AS x FROM shop.orders o", "SELECT MIN(o.category) AS x FROM shop.orders o",
    "SELECT o.order_id, o.category = 'books' AS x FROM shop.orders o",
    "SELECT o.order_id, (SELECT MAX(p.category) FROM shop.orders p WHERE p.order_id = o.order_id) AS x "
    "FROM shop.orders o",
])
def test_expressions_of_a_masked_column_stay_refused(masked, assert_refused, sql):
    assert_refused(masked, sql, "bank", PolicyViolation, "masked for bank")


@pytest.mark.parametrize("sql", [
    "SELECT o.category, o.order_id FROM shop.orders o",
    "WITH t AS (SELECT category AS k FROM shop.orders) SELECT k FROM t",
    f"SELECT t.category, t.age FROM (SELECT o.category, c.age {JOINED}) t",
    "SELECT category FROM shop.orders UNION ALL SELECT name FROM bank.customers",
])
def test_a_masked_column_revealed_as_is_is_masked(masked, sql):
    got = masked.execute(sql, "bank").table.column(0).to_pylist()
    assert "****" in got and not {"books", "games", "garden"} & set(got)


def test_a_hash_mask_keeps_equality_so_it_may_group(masked):
    """The hashed groups are the unmasked ones, each named by its hash: grouping tells nothing the hashed
    column as is does not."""
    got = masked.execute("SELECT o.region, COUNT(*) AS n FROM shop.orders o GROUP BY o.region", "bank").table
    assert got.num_rows == 4 and all(len(r) == 32 for r in got.column("region").to_pylist())
    assert masked.execute("SELECT DISTINCT o.region FROM shop.orders o", "bank").table.num_rows == 4


def test_the_issuers_own_queries_are_not_masked(masked):
    got = masked.execute("SELECT category FROM shop.orders WHERE category = 'books'", "shop").table
    assert set(got.column(0).to_pylist()) == {"books"}


# -- 2. DB-API parameters: bound in the text's order, always as values --------------------------------
@pytest.fixture(scope="module")
def connection(masked):
    with dbapi.connect(masked.config.path, "bank") as con:
        yield con


@pytest.mark.parametrize("sql, parameters, want", [
    ("WITH t AS (SELECT ? AS a) SELECT a, ? AS b FROM t", [1, 2], [(1, 2)]),
    ("SELECT ? AS a, x.b FROM (SELECT ? AS b) x", ["first", "second"], [("first", "second")]),
    ("SELECT (1 + ?) * 10 + ? AS x", [1, 2], [(22,)]),
    ("SELECT CASE WHEN ? > 1 THEN ? ELSE ? END AS x", [2, "a", "b"], [("a",)]),
    ("SELECT ? AS a ORDER BY 1 LIMIT ?", ["v", 1], [("v",)]),
])
def test_parameters_bind_in_the_order_of_the_text(connection, sql, parameters, want):
    assert connection.execute(sql, parameters).fetchall() == want


def test_a_parameter_in_a_cte_binds_its_own_value(connection, oracle_for, masked):
    sql = "WITH a AS (SELECT id FROM bank.customers WHERE age > ?) SELECT COUNT(*) FROM a WHERE id < ?"
    got = connection.execute(sql, [60, 40]).fetchall()
    want = oracle_for(masked).con.sql("SELECT COUNT(*) FROM bank.customers WHERE age > 60 AND id < 40").fetchall()
    assert got == want


@pytest.mark.parametrize("value", ["x'; DROP TABLE customers; --", "a\\' OR 1=1 --", "books' OR '1'='1",
                                   "*/ SELECT 1 /*", "?", "b\" OR \"1\"=\"1"])
def test_a_parameter_is_only_ever_a_value(connection, value):
    assert connection.execute("SELECT ? AS s", [value]).fetchall() == [(value,)]
    assert connection.execute("SELECT COUNT(*) FROM bank.customers c WHERE c.name = ?", [value]).fetchall() == [(0,)]


@pytest.mark.parametrize("sql, parameters", [("SELECT ? AS a", [1, 2]), ("SELECT ? AS a, ? AS b", [1]),
                                             ("SELECT 1 AS a", [1]), ("SELECT ? AS a", None)])
def test_a_wrong_number_of_parameters_is_a_programming_error(connection, sql, parameters):
    with pytest.raises(ProgrammingError, match="parameter marker"):
        connection.execute(sql, parameters)


# -- 5. a scalar subquery in a grouped SELECT list is thresholded on its own ---------------------------
@pytest.fixture(scope="module")
def lone(tmp_path_factory, federation_writer, grants_for):
    """Customer 1 has one order (777.0), below the threshold; customers 2-4 four orders each."""
    customers = pa.table({"id": pa.array(range(1, 13), pa.int64()), "region": ["north"] * 6 + ["south"] * 6})
    orders = pa.table({"order_id": pa.array(range(1, 14), pa.int64()),
                       "customer_id": pa.array([1] + [2] * 4 + [3] * 4 + [4] * 4, pa.int64()),
                       "amount": pa.array([777.0] + [10.0] * 12)})
    grants = grants_for(("bank", ("shop.orders.customer_id",), "PLAINTEXT_AFTER_COMPARE"),
                        ("shop", ("bank.customers.id", "bank.customers.region"), "PLAINTEXT_AFTER_COMPARE"),
                        ("bank", ("shop.orders.amount", "shop.orders.order_id"), "PLAINTEXT_AFTER_AGGREGATE"))
    directory = tmp_path_factory.mktemp("attacks_s14_lone")
    federation_writer(directory, {"bank": {"customers": customers}, "shop": {"orders": orders}}, grants,
                      parties=("bank", "shop"))
    with Engine(directory / "federation.toml", timeout=120) as engine:
        yield engine


LONE_SUM = "(SELECT SUM(o.amount) FROM shop.orders o WHERE o.customer_id = 1)"


@pytest.mark.parametrize("sql", [
    f"SELECT c.region, {LONE_SUM} AS s FROM bank.customers c GROUP BY c.region",
    f"SELECT c.region, COUNT(*) AS n, {LONE_SUM} AS s FROM bank.customers c GROUP BY c.region",
    f"SELECT c.region, SUM(c.id) + {LONE_SUM} AS s FROM bank.customers c GROUP BY c.region",
    f"SELECT c.region, MAX({LONE_SUM}) AS s FROM bank.customers c GROUP BY c.region",
    f"SELECT c.region, {LONE_SUM} AS s FROM bank.customers c JOIN shop.orders p ON p.customer_id = c.id "
    "GROUP BY c.region",
    "SELECT c.region, (SELECT MAX(o.amount) FROM shop.orders o WHERE o.customer_id < 2) AS s "
    "FROM bank.customers c GROUP BY c.region",
    "SELECT c.region, (SELECT COUNT(*) FROM shop.orders o WHERE o.customer_id = 1) AS s "
    "FROM bank.customers c GROUP BY c.region",
])
def test_a_grouped_selects_subquery_keeps_the_threshold(lone, oracle_for, sql):
    """The group threshold counts the query's rows (the bank's, here), never a subquery's: the subquery's own
    aggregate over one order read that order's amount. It reads NULL now, as without GROUP BY."""
    got = lone.execute(sql, "bank").table
    assert got.num_rows > 0 and got.column("s").null_count == got.num_rows
    oracle_for(lone).check(sql, "bank")


def test_a_grouped_selects_subquery_over_enough_rows_is_answered(lone, oracle_for):
    sql = ("SELECT c.region, (SELECT SUM(o.amount) FROM shop.orders o WHERE o.customer_id > 1) AS s "
           "FROM bank.customers c GROUP BY c.region")
    got = lone.execute(sql, "bank").table
    assert set(got.column("s").to_pylist()) == {120}
    oracle_for(lone).check(sql, "bank")


# -- 4. a SQLite party whose columns hold values of other types than declared --------------------------
@pytest.fixture(scope="module")
def mixed_sqlite(tmp_path_factory):
    """items.qty is declared INTEGER but one row holds text, one a real; price REAL holds a text; label is
    clean; `empty` has no rows; `loose` has a NUMERIC column (integers or reals by value)."""
    path = tmp_path_factory.mktemp("attacks_s14_sqlite") / "shop.sqlite"
    with sqlite3.connect(path) as con:
        con.execute("CREATE TABLE items (id INTEGER, qty INTEGER, price REAL, label TEXT)")
        rows = [(i, i % 7, i * 1.25, f"l{i % 3}") for i in range(20)]
        rows[5], rows[9], rows[11] = (5, "SECRETTEXT", 6.25, "l2"), (9, 2.75, 11.25, "l0"), (11, 3, "PRICETEXT", 42)
        con.executemany("INSERT INTO items VALUES (?, ?, ?, ?)", rows)
        con.execute("CREATE TABLE empty (q INTEGER, p REAL, d DATE)")
        con.execute("CREATE TABLE loose (n NUMERIC)")
        con.execute("INSERT INTO loose VALUES (1), (2.5)")
    con.close()
    store = AdbcStore("shop", Source(f"sqlite://{path}"))
    yield store
    store.close()


def test_sqlite_columns_are_typed_by_their_declaration_not_their_values(mixed_sqlite):
    """ADBC typed a column by its values: qty (INTEGER, one row holding text) was BLOB, price (REAL) VARCHAR,
    an empty REAL column BIGINT, so the public catalog told every party that some row held an odd value."""
    schema = mixed_sqlite.schema()
    assert schema["items"] == [("id", "BIGINT"), ("qty", "BIGINT"), ("price", "DOUBLE"), ("label", "VARCHAR")]
    assert schema["empty"] == [("q", "BIGINT"), ("p", "DOUBLE"), ("d", "VARCHAR")]
    assert "loose" not in schema  # NUMERIC affinity: no one DuckDB type holds its values exactly


@pytest.mark.parametrize("sql, column", [
    ('SELECT SUM("i"."qty") AS "s" FROM "items" AS "i"', "qty"),  # SQLite's SUM read the text as 0
    ('SELECT COUNT(*) AS "n" FROM "items" AS "i" WHERE "i"."qty" > 3', "qty"),  # text orders after numbers
    ('SELECT MAX("i"."qty") AS "m" FROM "items" AS "i"', "qty"),
    ('SELECT "i"."id" AS "id", "i"."qty" AS "q" FROM "items" AS "i" WHERE "i"."id" = 1', "qty"),  # any row
    ('SELECT AVG("i"."price") AS "a" FROM "items" AS "i"', "price"),
])
def test_a_sqlite_value_of_another_type_is_a_data_error_without_the_value(mixed_sqlite, sql, column):
    with pytest.raises(DataError, match=f"items.{column}") as refused:
        mixed_sqlite.query(sql)
    assert "SECRETTEXT" not in str(refused.value) and "PRICETEXT" not in str(refused.value)
    assert "2.75" not in str(refused.value)


def test_sqlite_clean_columns_still_answer(mixed_sqlite):
    got = mixed_sqlite.query('SELECT "i"."label" AS "l", COUNT(*) AS "n" FROM "items" AS "i" GROUP BY "i"."label"')
    assert sorted(got.to_pylist(), key=repr) == [{"l": "42", "n": 1}, {"l": "l0", "n": 7}, {"l": "l1", "n": 7},
                                                 {"l": "l2", "n": 5}]
    assert mixed_sqlite.query('SELECT SUM("e"."q") AS "s" FROM "empty" AS "e"').to_pylist() == [{"s": None}]


# -- 3. differential privacy: no exact value, no free repetition -------------------------------------
@pytest.fixture()
def private(tmp_path, make_federation, plaintext_grants, bank_dp):
    """Bank's budget ε = 3, one query ε = 1 (tests/conftest.py BANK_DP); a fresh ledger per test."""
    with Engine(make_federation(tmp_path, plaintext_grants() + bank_dp), timeout=60) as engine:
        yield engine


@pytest.mark.parametrize("sql", [
    "SELECT COUNT(*) AS n FROM shop.orders HAVING COUNT(*) > 100",  # the exact count decides a row
    "SELECT o.category, COUNT(*) AS n FROM shop.orders o GROUP BY o.category ORDER BY COUNT(*) + 0",
    "SELECT COUNT(*) > 100 AS big FROM shop.orders",
    "SELECT COUNT(CASE WHEN o.order_id = 5 THEN 1 END) AS n FROM shop.orders o",  # singling one row out
    "SELECT SUM(CASE WHEN o.order_id = 5 THEN o.amount ELSE 0 END) AS s FROM shop.orders o",
    "SELECT SUM(o.amount + 0) AS s FROM shop.orders o",
    "SELECT COUNT(*) AS n FROM shop.orders UNION ALL SELECT COUNT(*) FROM shop.orders",  # two draws, one charge
    "SELECT COUNT(*) OVER () AS n FROM shop.orders",
    "WITH t AS (SELECT COUNT(*) AS n FROM shop.orders) SELECT n FROM t",  # an exact inner aggregate
    "SELECT t.n FROM (SELECT COUNT(*) AS n FROM shop.orders) t",
    "SELECT c.id, (SELECT COUNT(*) FROM shop.orders) AS n FROM bank.customers c GROUP BY c.id",
    "SELECT COUNT(*), COUNT(*) FROM shop.orders",  # was an InternalError at the party, after the charge
    "SELECT SUM(o.amount) AS s, COUNT(*) AS s FROM shop.orders o",
])
def test_a_noised_aggregate_is_never_read_exactly_and_refusals_spend_nothing(private, sql):
    with pytest.raises(NotSupportedError) as refused:
        private.plan(sql, "bank")
    assert private.check(sql, "bank") == f"NotSupportedError: {refused.value}"
    with pytest.raises(NotSupportedError):
        private.execute(sql, "bank")
    assert private.ledger.spent("bank").epsilon == 0


def test_rewrites_of_one_query_are_charged_alike_until_the_budget_is_spent(private):
    """Aliases, a GROUP BY split and a LIMIT are new queries: each spends ε, the fourth is refused before
    anything runs, and the ledger outlives the engine."""
    queries = ["SELECT COUNT(*) AS n FROM shop.orders", "SELECT COUNT(*) AS m FROM shop.orders o LIMIT 1",
               "SELECT o.category, COUNT(*) AS n FROM shop.orders o GROUP BY o.category"]
    for i, sql in enumerate(queries, start=1):
        private.execute(sql, "bank")
        assert private.ledger.spent("bank").epsilon == pytest.approx(i)
    with pytest.raises(PolicyViolation, match="budget of 'bank' exhausted"):
        private.execute(queries[0], "bank")
    assert private.ledger.spent("bank").epsilon == pytest.approx(3)
    with Engine(private.config.path, timeout=60) as again:
        with pytest.raises(PolicyViolation, match="exhausted"):
            again.execute("SELECT COUNT(*) AS k FROM shop.orders", "bank")
