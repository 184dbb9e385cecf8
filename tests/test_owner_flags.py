"""A party's own filters evaluated by that party (issue 16, speed; planner/translate.py `owner_flags`).

A filter over one party's rows may not run at its owner when the rows it keeps would tell the other
compute parties about the data; the owner then shares every row with one boolean column, COALESCE(
condition, FALSE), and the SPU keeps a row only where that secret bit is 1. Checked against plain DuckDB
(the oracle, with the group threshold) with 2 and 3 parties, for WHERE below a join, an outer join's ON
conjuncts of one side, stacked filters, NULLs in the condition's columns, text conditions and empty
results; the program's inputs no longer carry the columns only a condition reads; refusals unchanged.
"""

import json

import pyarrow as pa
import pytest

from sqlsecure.engine import Engine
from sqlsecure.errors import NotSupportedError, PolicyViolation
from sqlsecure.planner.physical import RunLocal, SecretQuery
from sqlsecure.policy import privacy

NOTES = ["special requests", "rush delivery", "special gift requests", "call later", None, "none", "rush later"]


def flag_tables(tables) -> dict[str, dict[str, pa.Table]]:
    """The test tables plus a text column with NULLs at the shop (orders.note: TPC-H Q13's kind of comment,
    NULL where customer_id is, and more) and a numeric one with NULLs at the bank (customers.segment)."""
    orders, customers = tables["shop"]["orders"], tables["bank"]["customers"]
    ids = orders.column("customer_id").to_pylist()
    note = pa.array([None if ids[i] is None else NOTES[i % len(NOTES)] for i in range(orders.num_rows)])
    segment = pa.array([None if i % 5 == 0 else i % 4 for i in range(customers.num_rows)], pa.int64())
    return {**tables, "shop": {"orders": orders.append_column("note", note)},
            "bank": {**tables["bank"], "customers": customers.append_column("segment", segment)}}


COMPARED = {"bank": ("customers.age", "customers.segment"),
            "shop": ("orders.category", "orders.amount", "orders.note"),
            "insurer": ("policies.claims", "policies.premium")}
JOINED = {"bank": ("customers.id",), "shop": ("orders.customer_id",), "insurer": ("policies.customer_id",)}


def flag_grants(grants_toml, parties) -> str:
    """Each party lets the others join on its keys, compare its filter columns, group by the bank's regions
    and aggregate the shop's order ids; the shop may see the bank's customer ids (to group by them, Q13)."""
    sections = []
    for viewer in parties:
        for owner in parties:
            if owner != viewer:
                joined = "PLAINTEXT" if (owner, viewer) == ("bank", "shop") else "PLAINTEXT_AFTER_JOIN"
                sections += [(viewer, tuple(f"{owner}.{c}" for c in JOINED[owner]), joined),
                             (viewer, tuple(f"{owner}.{c}" for c in COMPARED[owner]), "PLAINTEXT_AFTER_COMPARE")]
        if viewer != "bank":
            sections.append((viewer, ("bank.customers.region",), "PLAINTEXT_AFTER_GROUP_BY"))
        if viewer != "shop":
            sections.append((viewer, ("shop.orders.order_id",), "PLAINTEXT_AFTER_AGGREGATE"))
    return grants_toml(*sections)


@pytest.fixture(scope="module")
def flagged(tmp_path_factory, tables, federation_writer, grants_for, oracle_for):
    """{2: oracle, 3: oracle}: the bank and the shop, and the three parties, under `flag_grants`."""
    oracles = {}
    for parties in (("bank", "shop"), ("bank", "shop", "insurer")):
        directory = tmp_path_factory.mktemp(f"flags{len(parties)}")
        federation_writer(directory, flag_tables(tables), flag_grants(grants_for, parties), parties=parties)
        oracles[len(parties)] = oracle_for(Engine(directory / "federation.toml", timeout=120))
    yield oracles
    for oracle in oracles.values():
        oracle.engine.close()


def program_of(engine, sql: str, issuer: str) -> tuple[dict, dict[str, str], dict]:
    """(program input columns by name -> kind, each party's pushdown SQL, the program) of a translated plan."""
    steps = engine.plan(sql, issuer).physical.steps
    secret = next(s for s in steps if isinstance(s, SecretQuery))
    program = json.loads(secret.program)
    columns = {name: kind for spec in program["inputs"] for name, kind in spec["columns"]}
    return columns, {s.party: s.sql for s in steps if isinstance(s, RunLocal)}, program


def owner_filters(node: dict) -> list[str]:
    """The owners of the program's filters on a flag their owner computed."""
    found = [node["owner"]] if node["op"] == "filter" and "owner" in node else []
    children = [node[k] for k in ("child", "left", "right") if k in node] + node.get("children", [])
    return found + [owner for child in children for owner in owner_filters(child)]


def assert_owners_filter(oracle, sql: str, issuer: str, owners, unshared) -> tuple[dict, dict[str, str]]:
    """The query's filters are evaluated by `owners` (one flag each per branch), its program shares none
    of the `unshared` columns, and its answer is DuckDB's; (program input columns, pushdown SQL) returned."""
    columns, local, program = program_of(oracle.engine, sql, issuer)
    assert sorted(owner_filters(program["root"])) == sorted(owners)
    assert not set(unshared) & set(columns)
    oracle.check(sql, issuer)
    return columns, local


def derived_count(where: str) -> str:
    """COUNT by region over a derived table joining the bank's customers and the shop's orders: a shape the
    spine placement leaves to the operator translation."""
    return ("SELECT t.region, COUNT(*) AS n FROM (SELECT c.region FROM bank.customers c JOIN shop.orders o "
            f"ON c.id = o.customer_id WHERE {where}) t GROUP BY t.region")


def q13(on: str, where: str = "", right: bool = False) -> str:
    """TPC-H Q13's shape: the bank's customers LEFT JOIN the shop's orders with an ON conjunct of the orders
    (written as a RIGHT JOIN if asked), a histogram of the order counts."""
    joined = "shop.orders o RIGHT JOIN bank.customers c" if right else "bank.customers c LEFT JOIN shop.orders o"
    return (f"SELECT cnt, COUNT(*) AS custdist FROM (SELECT c.id, COUNT(o.order_id) AS cnt FROM {joined} "
            f"ON c.id = o.customer_id AND ({on}){' WHERE ' + where if where else ''} GROUP BY c.id) AS t "
            "GROUP BY cnt ORDER BY custdist DESC, cnt DESC")


@pytest.mark.parametrize("parties", (2, 3))
@pytest.mark.parametrize("issuer", ("bank", "shop"))
def test_each_partys_where_below_a_join_is_evaluated_by_it(flagged, parties, issuer):
    """Both sides' filters become their owners' flags; the columns only they read are not shared."""
    sql = derived_count("o.category LIKE 'g%' AND o.amount > 50 AND c.age < 60")
    _, local = assert_owners_filter(flagged[parties], sql, issuer, ["bank", "shop"],
                                    ["o.category", "o.amount", "c.age"])
    assert "COALESCE" in local["shop"] and "WHERE" not in local["shop"].upper()


def test_three_parties_with_a_filtered_in_subquery(flagged):
    """The insurer's filter inside an IN subquery, the shop's below the join: each its owner's flag."""
    sql = derived_count("o.note LIKE 'special%' AND c.id IN (SELECT p.customer_id FROM insurer.policies p "
                        "WHERE p.claims < 2)")
    assert_owners_filter(flagged[3], sql, "bank", ["insurer", "shop"], ["p.claims", "o.note"])


CONDITIONS = [  # ON conjuncts of the orders: text (NULLs included), prefix, suffix, numbers
    "o.note NOT LIKE '%special%requests%'",
    "o.note LIKE 'rush%'",
    "o.note LIKE '%later'",
    "o.note <> 'none' OR o.amount > 400",  # NULL note: NULL unless the amount decides, and NULL drops the row
    "o.amount > 250 AND o.category <> 'books'",
]


@pytest.mark.parametrize("right", (False, True), ids=("left", "right"))
@pytest.mark.parametrize("on", CONDITIONS)
def test_outer_join_on_conjuncts_of_the_null_side(flagged, on, right):
    """The NULL side's ON conjuncts filter its rows before the join, as its owner's flag: a customer
    whose orders all fail it counts 0 orders."""
    columns, local = assert_owners_filter(flagged[2], q13(on, right=right), "bank", ["shop"],
                                          ["o.note", "o.category", "o.amount"])
    assert columns["__own1"] == "bool"
    assert '"o.note" AS "o.note"' not in local["shop"].split(" FROM ")[0]


def test_a_protected_partys_where_with_nulls_on_the_preserved_side(flagged):
    """The bank's WHERE on the LEFT JOIN's preserved side, NULL for some rows (NULL segment, age <= 70),
    evaluated by the bank for the shop: NULL drops the row, and the group threshold counts the bank's
    remaining rows only."""
    assert_owners_filter(flagged[2], q13("o.amount > 100", "c.segment <> 1 OR c.age > 70"), "shop", ["bank", "shop"],
                         ["c.segment", "c.age"])


def test_a_full_joins_on_conjunct_of_one_side_stays_refused(flagged, assert_refused):
    """A FULL JOIN keeps the rows its one-side conjunct fails (unmatched): no filter before the join."""
    assert_refused(flagged[2].engine, "SELECT COUNT(*) AS n FROM (SELECT c.region FROM bank.customers c FULL JOIN "
                   "shop.orders o ON c.id = o.customer_id AND o.amount > 100) t", "bank", NotSupportedError,
                   "FULL JOIN")


def test_stacked_filters_through_a_derived_table_make_one_flag(flagged):
    """A filter inside the shop's derived table and another on its output: one flag, computed by the shop."""
    sql = ("SELECT t.region, COUNT(*) AS n FROM (SELECT c.region FROM (SELECT o.customer_id, o.category FROM "
           "shop.orders o WHERE o.amount > 100) s JOIN bank.customers c ON c.id = s.customer_id "
           "WHERE s.category <> 'books') t GROUP BY t.region")
    columns, _ = assert_owners_filter(flagged[2], sql, "bank", ["shop"], ["s.category", "o.category", "o.amount"])
    assert [c for c in columns if c.startswith("__own")] == ["__own2"]


def test_an_empty_result(flagged):
    oracle = flagged[3]
    sql = derived_count("o.category = 'no such category'")
    assert owner_filters(program_of(oracle.engine, sql, "bank")[2]["root"]) == ["shop"]
    assert oracle.check(sql, "bank").num_rows == 0


def test_the_group_threshold_counts_the_rows_the_filter_keeps(flagged):
    """The filter leaves some regions fewer than 4 of the shop's rows: withheld, as DuckDB's side says."""
    oracle = flagged[2]
    sql = derived_count("o.note = 'rush delivery' AND o.amount > 200")
    step = next(s for s in oracle.engine.plan(sql, "bank").physical.steps if isinstance(s, SecretQuery))
    assert "__prov_" in step.program
    oracle.check(sql, "bank")


def test_explain_says_who_evaluates_the_filter_and_check_agrees(flagged):
    engine = flagged[2].engine
    sql = q13("o.note NOT LIKE '%special%requests%'")
    text = engine.explain(sql, "bank")
    assert "evaluated by shop on its own rows, shared as a secret bit" in text
    assert "bank: the row count of each program input" in text  # what each party learns: as before
    assert engine.check(sql, "bank") is None


def test_column_control_still_applies_to_the_filter(flagged, assert_refused):
    """The filter's visibility rule holds whoever evaluates it: a column the issuer may not compare is refused."""
    assert_refused(flagged[2].engine, derived_count("o.region = 'north'"), "bank", PolicyViolation, "region")


def test_a_filter_over_a_union_all_is_evaluated_by_each_branchs_owner(flagged):
    """Stacked filters over a UNION ALL of the shop's and the insurer's rows filter each branch, by its owner,
    as one flag per branch."""
    sql = ("SELECT t.region, COUNT(*) AS n FROM (SELECT c.region FROM (SELECT customer_id AS who, amount AS v "
           "FROM shop.orders UNION ALL SELECT customer_id, premium FROM insurer.policies) u JOIN bank.customers c "
           "ON c.id = u.who WHERE u.v > 300 AND u.v < 700) t GROUP BY t.region")
    columns, _ = assert_owners_filter(flagged[3], sql, "bank", ["insurer", "shop"], ["v", "amount", "premium"])
    assert len([c for c in columns if c.startswith("__own")]) == 2


def test_differential_privacy_over_flagged_filters(tmp_path, tables, federation_writer, grants_for, bank_dp,
                                                  oracle_for, monkeypatch):
    """Under DP the noised aggregate reads the flagged rows as it read the filtered ones, each owner keeping
    at most max_rows_per_identity rows of its table first (of the shop's NULL identity 10 of 14 rows, whose
    NULL notes the filter drops): with the sampler drawing 0, the exact count of those rows."""
    parties = ("bank", "shop", "insurer")
    federation_writer(tmp_path, flag_tables(tables), flag_grants(grants_for, parties) + bank_dp, parties=parties)
    shop = "shop.orders WHERE note LIKE 'rush%'"
    sql = f"SELECT COUNT(*) AS n FROM (SELECT customer_id AS who FROM {shop} UNION ALL SELECT id FROM bank.customers) t"
    bounded = ("SELECT COUNT(*) AS n FROM (SELECT customer_id FROM (SELECT * FROM shop.orders QUALIFY ROW_NUMBER() "
               "OVER (PARTITION BY customer_id) <= 10) WHERE note LIKE 'rush%' "
               "UNION ALL SELECT id FROM (SELECT * FROM bank.customers QUALIFY ROW_NUMBER() OVER (PARTITION BY id) "
               "<= 1)) t")
    monkeypatch.setattr(privacy, "sample", lambda values, scale, integer, noise: [0] * len(list(values)))
    with Engine(tmp_path / "federation.toml", timeout=120) as engine:
        _, _, program = program_of(engine, sql, "bank")
        assert "noise" in program and owner_filters(program["root"]) == ["shop"]
        got = engine.execute(sql, "bank").table.to_pylist()
        assert got == oracle_for(engine).con.sql(bounded).to_arrow_table().to_pylist()


MASKED = """
[[masks]]
party = "bank"
columns = ["shop.orders.note"]
method = "partial"
keep = 2
"""


def test_a_masked_column_in_the_condition_stays_refused(tmp_path, tables, federation_writer, grants_for,
                                                        assert_refused):
    """A column masked for the issuer and revealed is masked by its owner before it is shared, so it may not
    decide a filter, whoever evaluates the filter."""
    grants = flag_grants(grants_for, ("bank", "shop")).replace(
        '"shop.orders.category", "shop.orders.amount", "shop.orders.note"', '"shop.orders.category", '
        '"shop.orders.amount"') + grants_for(("bank", ("shop.orders.note",), "PLAINTEXT"))
    federation_writer(tmp_path, flag_tables(tables), grants + MASKED, parties=("bank", "shop"))
    with Engine(tmp_path / "federation.toml", timeout=120) as engine:
        assert_refused(engine, "SELECT t.note FROM (SELECT o.note FROM shop.orders o JOIN bank.customers c ON "
                       "c.id = o.customer_id WHERE o.note LIKE 'rush%' AND o.amount > 100) t", "bank",
                       PolicyViolation, "WHERE")
