"""bench/tpch.py's grants (issue 16): what an SCQL user writes, plus the keys of a party's join of its own
tables to every other party of the cross-party join (docs/federation.md, stricter than SCQL), plan Q5's
join cycle; without those keys it stays refused, naming the missing grant."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from sqlsecure.engine import Engine
from sqlsecure.errors import PolicyViolation
from sqlsecure.planner.physical import SecureStage

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import tpch  # noqa: E402

OWN_JOIN_KEYS = ("carrier.lineitem.l_suppkey", "carrier.supplier.s_suppkey", "bank.nation.n_regionkey",
                 "bank.region.r_regionkey")


@pytest.fixture(scope="module")
def federation(tmp_path_factory) -> Path:
    return tpch.write_federation(tmp_path_factory.mktemp("tpch_grants"), 0.001)


def test_q5_plans_with_the_benchs_grants(federation):
    with Engine(federation) as engine:
        plan = engine.plan(tpch.QUERIES["q5"], tpch.ISSUER).physical
    assert any(isinstance(step, SecureStage) for step in plan.steps)
    used = " ".join(plan.uses)
    assert all(column in used for column in OWN_JOIN_KEYS)


def test_q5_without_the_own_join_keys_is_refused(federation, tmp_path, assert_refused):
    text = federation.read_text().replace(',\n           "carrier.lineitem.l_suppkey", "carrier.supplier.s_suppkey"', "")
    assert "l_suppkey\", \"carrier.supplier.s_suppkey" not in text
    path = tmp_path / "federation.toml"
    path.write_text(text, encoding="utf-8")  # the tables beside it, as in the bench's directory
    for table in federation.parent.glob("*.parquet"):
        (tmp_path / table.name).symlink_to(table)
    with Engine(path) as engine:
        assert_refused(engine, tpch.QUERIES["q5"], tpch.ISSUER, PolicyViolation, "carrier.lineitem.l_suppkey")
