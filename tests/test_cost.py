"""The class-4 cost model: its prices move the way the two paths' costs do."""

import math

from sqlsecure.planner.cost import Link, estimate


def test_in_process_the_spu_wins_until_it_would_need_too_much_memory():
    """A text key (4 limbs) with SUM, COUNT and AVG of one column, as bench/he.py measures, on a
    24 GiB machine (at 10^7 rows HE by memory; since HE's quiet unit price, by time as well)."""
    for rows in (10, 10**3, 10**5, 10**6):
        assert estimate(rows, 3, 4, Link(), arguments=1, memory=24 << 30).engine == "spu"
    big = estimate(10**7, 3, 4, Link(), arguments=1, memory=24 << 30)
    assert big.engine == "he" and "more than a quarter of a compute party's assumed memory" in big.why


def test_an_spu_that_would_not_fit_in_memory_is_not_chosen():
    fits = estimate(10**6, 2, 1, Link(), memory=64 << 30)
    assert fits.engine == "spu" and "GiB" not in fits.why
    tight = estimate(10**6, 2, 1, Link(), memory=4 << 30)  # ~1.1 GiB of shares > a quarter of 4 GiB
    assert tight.engine == "he" and "more than a quarter of a compute party's assumed memory" in tight.why


def test_he_prices_each_distinct_value_column_once():
    one = estimate(10**6, 3, 4, Link(), arguments=1)
    assert one.he_seconds < estimate(10**6, 3, 4, Link()).he_seconds
    assert one.spu_seconds == estimate(10**6, 3, 4, Link()).spu_seconds


def test_a_slow_link_favours_he_and_a_large_table_the_spu_again():
    wan = Link(rtt=0.08, bandwidth=2e6)  # 80 ms, 16 Mbit/s
    assert estimate(10**4, 2, 1, wan).engine == "he"
    lan = Link(rtt=0.0002, bandwidth=1.25e9)
    assert estimate(10**4, 2, 1, lan).engine == "spu"


def test_prices_grow_with_rows_columns_key_limbs_and_key_size():
    base = estimate(10**5, 1, 1, Link(rtt=0.01, bandwidth=1e8))
    assert estimate(10**6, 1, 1, Link(rtt=0.01, bandwidth=1e8)).he_seconds > base.he_seconds
    assert estimate(10**5, 3, 4, Link(rtt=0.01, bandwidth=1e8)).spu_seconds > base.spu_seconds
    assert estimate(10**5, 1, 1, Link(rtt=0.01, bandwidth=1e8), key_bits=3072).he_seconds > base.he_seconds
    assert "HE ≈" in base.why and "SPU ≈" in base.why and "√rows" in base.why and "per ciphertext" in base.why


def test_a_link_describes_itself():
    assert Link().describe() == "in-process link"
    assert Link(0.001, 125e6).describe() == "link 1 ms round trip, 1000 Mbit/s"
    assert math.isinf(Link().bandwidth)


def test_the_memory_assumed_is_the_same_on_every_machine(monkeypatch):
    """Each party re-derives the plan on its own machine: the device choice may not read that machine's RAM."""
    import os
    from sqlsecure.planner import cost
    before = estimate(3 * 10**6, 2, 1, Link())
    monkeypatch.setattr(os, "sysconf", lambda name: 1)  # a machine reporting almost no memory
    after = estimate(3 * 10**6, 2, 1, Link())
    assert cost.memory_bytes() == cost.ASSUMED_MEMORY and (before.engine, before.why) == (after.engine, after.why)
