"""The class-4 cost model: its prices move the way the two paths' costs do."""

import math

from sqlsecure.planner.cost import Link, estimate


def test_in_process_the_spu_wins_up_to_a_few_100_000_rows_and_he_beyond():
    for rows in (10, 10**3, 10**5):
        assert estimate(rows, 2, 1, Link()).engine == "spu"
    for rows in (10**6, 10**7):
        assert estimate(rows, 2, 1, Link()).engine == "he"


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
