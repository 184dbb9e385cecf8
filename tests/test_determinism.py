"""The suite's own determinism (issue 17, CI failing by chance): property tests draw the same examples on
every run, so a failure is reproducible and a pass means the same thing each time; DP noise is checked
with a stated chance of failing; the oracle refuses to compare rows a LIMIT picks among ties."""

import math
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings

from tests.conftest import NOISE_FAILURE, _chernoff_edge, noise_laws, noise_mismatch

TESTS = Path(__file__).parent


def test_property_tests_draw_the_same_examples_every_run():
    assert settings.default.derandomize and settings.default.database is None
    assert settings.default.deadline is None  # a deadline measures the machine's speed


def test_no_property_test_opts_out_of_derandomize_or_sets_a_deadline():
    opted_out = [p.name for p in TESTS.glob("test_*.py")
                 if p.name != Path(__file__).name and re.search(r"derandomize=False|deadline=(?!None)", p.read_text())]
    assert not opted_out


def test_noise_check_keeps_the_samplers_law_and_catches_a_wrong_one():
    """tests.conftest.noise_mismatch: draws of the stated law pass, a 20% wrong scale or a shifted
    mean is caught (seeded draws: this test itself is deterministic)."""
    rng = np.random.default_rng(17)
    laplace, gauss = rng.laplace(0, 3.0, 4000), rng.normal(0, 3.0, 4000)
    assert noise_mismatch(100 + laplace, 100, "laplace", 3.0, False) is None
    assert noise_mismatch(100 + gauss, 100, "gaussian", 3.0, False) is None
    assert "scale" in noise_mismatch(100 + 1.2 * laplace, 100, "laplace", 3.0, False)
    assert "scale" in noise_mismatch(100 + 1.2 * gauss, 100, "gaussian", 3.0, False)
    assert "mean" in noise_mismatch(101 + laplace, 100, "laplace", 3.0, False)


def test_noise_bound_is_chernoffs_closed_form_for_a_gaussian_mean():
    """For N(0, s^2) Chernoff's bound on the mean of n draws is s sqrt(2 ln(1/p) / n)."""
    (_, _, mean, log_mgf, lam_max), _ = noise_laws("gaussian", 3.0, False)
    edge = _chernoff_edge(log_mgf, mean, 4000, NOISE_FAILURE, lam_max, 1)
    assert edge == pytest.approx(3.0 * math.sqrt(2 * math.log(1 / NOISE_FAILURE) / 4000), rel=1e-3)


def test_a_limit_cutting_through_ties_is_flagged(oracle):
    """Oracle.check refuses to compare an ORDER BY ... LIMIT whose cut falls between tied rows."""
    tied = "SELECT name, region FROM bank.customers ORDER BY region LIMIT 3"
    assert oracle.cuts_through_ties(tied, "bank", 2)
    with pytest.raises(AssertionError, match="ties, so which are kept is chance"):
        oracle.check(tied)
    oracle.check("SELECT name, region FROM bank.customers ORDER BY region, name LIMIT 3")
    assert oracle.cuts_through_ties("SELECT name FROM bank.customers LIMIT 3", "bank", 1)  # no ORDER BY at all


def test_a_derived_columns_grants_are_checked_in_one_order():
    """A derived table's column stands for a set of base columns: they are checked (and listed among the
    plan's uses, the first refusal named) in sorted order, never in the process's hash order."""
    from sqlsecure.planner.usage import Usage
    from sqlsecure.policy.grants import ColumnRef, Use
    from sqlglot import exp

    usage = Usage.__new__(Usage)
    refs = [ColumnRef("bank", "t", name) for name in ("z", "a", "m", "b")]
    usage.lineage, usage.derived = {"d": ("", None, frozenset(refs))}, {}
    seen = []
    usage._require = lambda ref, viewer, use, context: seen.append(ref)
    usage.require(exp.column("x", table="d"), ["shop"], Use.COMPARE, "WHERE")
    assert seen == sorted(refs, key=str)
