"""A semi- or anti-join's sort compares classed integer keys on their published width (issue 16 speed).

`secret_relation.semi_join` sorted (keys not NULL, key limbs, side tag) each as a 64-bit comparison column,
four comparison trees per pair for one key. With the keys' published classes (`program.key_classes`, as
`pk_join` takes them) the flags sort on 2 bits and a classed key, zeroed on rows that match nothing and
offset by 2^M, on M + 2: one packed column with the tiebreak (Secrecy's comorbidity: `pid IN (SELECT ...)`).
Checked against DuckDB (IN, NOT EXISTS, NOT IN with a NULL on the right, empty sides, 2 and 3 parties) and
the widths the sort receives.
"""

import pytest

from sqlsecure.executors.spu import relational
from tests.test_classed_keys import PEOPLE, VISITS, run_classed
from tests.test_secret_program import inp


def semi_node(kind: str, order: int, null_aware: bool = False) -> dict:
    keys = ['"pid"', '"id"'] if order == 0 else ['"id"', '"pid"']
    node = {"op": "join", "kind": kind, "left": inp(0), "right": inp(1), "left_keys": [keys[0]],
            "right_keys": [keys[1]], "condition": None}
    return {**node, "null_aware": True} if null_aware else node


SEMI = [  # (kind, null_aware, tables in order, SQL)
    ("semi", False, 0, "SELECT * FROM t0 WHERE pid IN (SELECT id FROM t1)"),
    ("semi", False, 1, "SELECT * FROM t0 WHERE id IN (SELECT pid FROM t1)"),
    ("anti", False, 0, "SELECT * FROM t0 WHERE NOT EXISTS (SELECT 1 FROM t1 WHERE t1.id = t0.pid)"),
    ("anti", True, 1, "SELECT * FROM t0 WHERE id NOT IN (SELECT pid FROM t1)"),
]


@pytest.mark.parametrize("nparties,empty", [(2, None), (3, None), (3, 0), (2, 1)])
@pytest.mark.parametrize("kind,null_aware,order,sql", SEMI)
def test_a_classed_semi_join_matches_duckdb(nparties, kind, null_aware, order, sql, empty):
    tables = [VISITS, PEOPLE] if order == 0 else [PEOPLE, VISITS]
    run_classed(nparties, semi_node(kind, order, null_aware), tables, sql, empty)


def test_the_semi_joins_sort_compares_classed_keys_on_their_widths(monkeypatch):
    """(keys not NULL, key + 16, side) on (2, 6, 2) bits: |pid| < 8 and |id| < 16 make the pair's class 4."""
    seen = []
    real = relational.sort

    def recording(s, keys, payload=(), descending=None, key_bits=None, first=None):
        if s.index == 0:
            seen.append(list(key_bits) if key_bits is not None else None)
        return real(s, keys, payload, descending, key_bits, first)

    monkeypatch.setattr(relational, "sort", recording)
    run_classed(2, semi_node("semi", 0), [VISITS, PEOPLE], SEMI[0][3])
    assert seen == [[2, 6, 2]]
