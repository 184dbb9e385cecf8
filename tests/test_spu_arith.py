"""SPU sharing, dealer, Beaver products, truncation, A2B/B2A against plaintext numpy; round and
byte bounds so a communication regression fails."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sqlsecure.errors import ProgrammingError, ProtocolError
from sqlsecure.executors.runtime.channel import InProcessChannel
from sqlsecure.executors.spu import arith, boolean
from sqlsecure.executors.spu.dealer import DEALER, RandomnessRequest
from sqlsecure.executors.spu.local import run_spu
from sqlsecure.executors.spu.prg import Prg
from sqlsecure.executors.spu.session import SpuSession
from sqlsecure.executors.spu.shares import ArithShare, as_ring, decode_fixed, encode_fixed, to_signed

PARTIES = [2, 3]
EDGES = [0, 1, -1, 2, -2, 2**62 - 1, -(2**62), 2**31, -(2**31), 12345678901, -987654321]
EDGE = st.sampled_from(EDGES) | st.integers(-(2**62), 2**62 - 1)


def share(s, values, owner=0, frac=0):
    values = np.asarray(values)
    ring = (as_ring(values) if frac == 0 else encode_fixed(values, frac)) if s.index == owner else None
    return arith.share_input(s, owner, ring, values.shape, frac)


def request_bytes(n_requests):
    """Upper bound of the requests' bytes (small JSON headers)."""
    return 64 * n_requests


@pytest.mark.parametrize("nparties", PARTIES)
def test_share_and_reveal_cost_nothing_but_the_opening(nparties):
    x = np.array([5, -7, 0, 2**62 - 1], dtype=np.int64)

    def program(s):
        xs = share(s, x, owner=nparties - 1)
        before = s.endpoint.channel.stats.snapshot()
        shared_bytes = before.total_bytes()
        return arith.reveal(s, xs, to=0), shared_bytes

    run = run_spu(nparties, program)
    assert to_signed(run.results[0][0]).tolist() == x.tolist()
    assert run.results[1][0] is None
    assert run.rounds == 1
    assert run.party_bytes() == 8 * len(x) * (nparties - 1)
    assert run.dealer_bytes() <= request_bytes(1)  # only the session's close message


@pytest.mark.parametrize("nparties", PARTIES)
def test_beaver_mul_one_round_and_exact_bytes(nparties):
    n = 1000
    rng = np.random.default_rng(1)
    x, y = rng.integers(-2**40, 2**40, n), rng.integers(-2**20, 2**20, n)
    baseline = {}

    def program(s):
        xs, ys = share(s, x), share(s, y, owner=nparties - 1)
        stats = s.endpoint.channel.stats
        baseline[s.index] = (s.rounds, stats.snapshot()) if s.index == 0 else None
        z = arith.beaver_mul(s, xs, ys)
        return z

    run = run_spu(nparties, program, pooling=False)  # one request per product: exact dealer bytes
    # reveal outside the measured part: sum of shares
    z = sum(r.data for r in run.results)
    assert (to_signed(z) == x * y).all()
    assert run.rounds == 1
    stats = run.channel.stats
    pairs = [(f"p{i}", f"p{j}") for i in range(nparties) for j in range(nparties) if i != j]
    for pair in pairs:
        assert stats.bytes[pair] == 2 * 8 * n and stats.messages[pair] == 1
    last = f"p{nparties - 1}"
    assert stats.bytes[(DEALER, last)] == 8 * n  # c_last only: a, b and other c's are seeded
    assert stats.bytes[(last, DEALER)] <= request_bytes(2)
    assert sum(b for (src, dst), b in stats.bytes.items() if src == DEALER and dst != last) == 0


@pytest.mark.parametrize("nparties", PARTIES)
def test_batched_products_share_one_round(nparties):
    a, b, c = np.arange(10), np.arange(10, 20), np.arange(-5, 5)

    def program(s):
        xa, xb, xc = share(s, a), share(s, b, 1), share(s, c, nparties - 1)
        p, q = arith.beaver_mul_many(s, [(xa, xb), (xb, xc)])
        return arith.reveal_many(s, [p, q])

    run = run_spu(nparties, program)
    p, q = run.results[0]
    assert (to_signed(p) == a * b).all() and (to_signed(q) == b * c).all()
    assert run.rounds == 2  # one product round + one reveal round


@pytest.mark.parametrize("nparties", PARTIES)
def test_matmul_and_dot(nparties):
    rng = np.random.default_rng(2)
    x, y = rng.integers(-1000, 1000, (3, 4)), rng.integers(-1000, 1000, (4, 5))
    v, w = rng.integers(-10**6, 10**6, 50), rng.integers(-10**6, 10**6, 50)

    def program(s):
        z = arith.matmul(s, share(s, x), share(s, y, 1))
        d = arith.dot(s, share(s, v), share(s, w, nparties - 1))
        return arith.reveal_many(s, [z, d])

    run = run_spu(nparties, program)
    z, d = run.results[0]
    assert (to_signed(z) == x @ y).all() and to_signed(d)[0] == int(v @ w)
    # matmul opens only the masked inputs: (12 + 20) words per ordered pair
    assert run.channel.stats.bytes[("p0", "p1")] == 8 * (12 + 20) + 8 * 100 + 8 * (15 + 1)


@pytest.mark.parametrize("nparties", PARTIES)
@settings(max_examples=12, deadline=None)
@given(values=st.lists(st.floats(-2**20, 2**20, allow_nan=False), min_size=1, max_size=20),
       other=st.floats(-2**9, 2**9, allow_nan=False))
def test_fixed_point_mul_and_truncation_error_bound(nparties, values, other):
    x = np.array(values)
    f = 16

    def program(s):
        xs = share(s, x, frac=f)
        ys = share(s, np.full(len(x), other), owner=nparties - 1, frac=f)
        prod = arith.mul(s, xs, ys)
        scaled = arith.mul_public(s, xs, -0.5)
        return arith.reveal_many(s, [prod, scaled])

    run = run_spu(nparties, program, frac_bits=f)
    prod, scaled = run.results[0]
    ex, ey = encode_fixed(x, f).view(np.int64), int(encode_fixed(other, f).view(np.int64))
    exact = [(int(a) * ey) >> f for a in ex]  # floor of the raw product / 2^F
    got = to_signed(prod).tolist()
    assert all(g - e in (0, 1) for g, e in zip(got, exact)), (got, exact)  # documented: +0 or +1 ulp
    assert np.allclose(decode_fixed(scaled, f), -0.5 * decode_fixed(encode_fixed(x, f), f), atol=2 / 2**f)


@pytest.mark.parametrize("nparties", PARTIES)
def test_truncation_at_range_edges(nparties):
    x = np.array([2**62 - 1, -(2**62), -1, 0, 1, -(2**40) - 3], dtype=np.int64)

    def program(s):
        return arith.reveal(s, arith.truncate(s, share(s, x), 20))

    got = to_signed(run_spu(nparties, program).results[0])
    want = x >> 20
    assert ((got - want) >= 0).all() and ((got - want) <= 1).all()


@pytest.mark.parametrize("nparties", PARTIES)
@settings(max_examples=10, deadline=None)
@given(st.lists(EDGE, min_size=1, max_size=24))
def test_a2b_and_b2a(nparties, values):
    x = np.array(values, dtype=np.int64)

    def program(s):
        xs = share(s, x, owner=nparties - 1)
        bits = boolean.a2b(s, xs)
        sign = boolean.b2a_bits(s, bits.bit(63))
        low = boolean.b2a_bits(s, bits.bit(0))
        return s.open_many(xor=[bits.data])[0], arith.reveal_many(s, [sign, low])

    run = run_spu(nparties, program)
    words, (sign, low) = run.results[0]
    assert (to_signed(words) == x).all()
    assert (sign == (x < 0)).all() and (low == (x & 1)).all()


@pytest.mark.parametrize("nparties, rounds", [(2, 7), (3, 8)])
def test_a2b_rounds_and_bytes(nparties, rounds):
    n = 256

    def program(s):
        return boolean.a2b(s, share(s, np.arange(n)))

    run = run_spu(nparties, program)
    assert run.rounds == rounds
    # Kogge-Stone: 1 + 2*5 + 1 = 12 word-ANDs per element, 16 B each per ordered pair (+1 CSA AND)
    ands = 12 + (1 if nparties == 3 else 0)
    assert run.channel.stats.bytes[("p0", "p1")] == 16 * n * ands


def test_requests_round_trip_and_reject_garbage():
    req = RandomnessRequest(7, "trunc_pair", (100, 16))
    assert RandomnessRequest.from_bytes(req.to_bytes()) == req
    with pytest.raises(ProtocolError, match="malformed randomness request"):
        RandomnessRequest.from_bytes(b"{nope")


def test_prg_streams_are_deterministic_and_distinct():
    prg = Prg(bytes(range(16)))
    assert (prg.words(3, 10) == Prg(bytes(range(16))).words(3, 10)).all()
    assert not (prg.words(3, 10) == prg.words(4, 10)).any()
    assert sorted(prg.permutation(1, 50).tolist()) == list(range(50))


def test_prg_words_are_the_aes_ctr_keystream_across_chunks():
    """Long streams come in fixed chunks (no buffer grows with the request): the same keystream."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    from sqlsecure.executors.spu.prg import ZERO_CHUNK

    seed, n = bytes(range(16)), ZERO_CHUNK // 8 * 2 + 3
    stream = Cipher(algorithms.AES(seed), modes.CTR((7).to_bytes(8, "big") + bytes(8))).encryptor()
    want = np.frombuffer(stream.update(bytes(8 * n)), dtype=np.uint64)
    assert (Prg(seed).words(7, n) == want).all()
    assert (Prg(seed).words(7, 5) == want[:5]).all()


def test_no_plaintext_or_share_crosses_in_clear():
    secret = np.array([0x5EC2E7_0000_1234, 0x5EC2E7_0000_5678], dtype=np.uint64)
    sent = []
    channel_holder = {}

    def program(s):
        channel = s.endpoint.channel
        if s.index == 0 and "spy" not in channel_holder:
            channel_holder["spy"] = True
            original = channel._send

            def spy(src, dst, tag, payload):
                sent.append(bytes(payload))
                original(src, dst, tag, payload)
            channel._send = spy
        xs = share(s, secret.view(np.int64))
        ys = share(s, secret.view(np.int64), owner=1)
        return arith.beaver_mul(s, xs, ys), boolean.a2b(s, xs)

    run_spu(2, program)
    needle = secret.tobytes()[:8]
    assert sent and not any(needle in m for m in sent)


def test_errors_name_the_problem():
    channel = InProcessChannel(["p0", "p1", DEALER], timeout=0.3)
    session = SpuSession(channel.endpoint("p0"), ["p0", "p1"])
    with pytest.raises(ProtocolError, match="'dealer'"):
        session.setup()
    with pytest.raises(ProgrammingError, match="not one of the SPU parties"):
        SpuSession(channel.endpoint(DEALER), ["p0", "p1"])
    with pytest.raises(ProgrammingError, match="scales differ"):
        ArithShare(np.zeros(2, np.uint64), 16) + ArithShare(np.zeros(2, np.uint64), 0)
    with pytest.raises(ProgrammingError, match="beaver_mul"):
        ArithShare(np.zeros(2, np.uint64)) * ArithShare(np.zeros(2, np.uint64))


def test_fanout_private_and_regular_ands_in_one_round():
    """and_arrays_many: Beaver ANDs of mixed widths, fan-out ANDs and (2-party) private ANDs, one
    round; the dealer's bool_fanout and private_and correlations are right."""
    rng = np.random.default_rng(3)
    x8, y8 = rng.integers(0, 256, 37, dtype=np.uint8), rng.integers(0, 256, 37, dtype=np.uint8)
    x32, y32, z32 = (rng.integers(0, 2**32, 11, dtype=np.uint32) for _ in range(3))
    u, v = rng.integers(0, 2**63, 5, dtype=np.uint64), rng.integers(0, 2**63, 5, dtype=np.uint64)

    def program(s):
        def mine(value, owner=0):
            return value if s.index == owner else np.zeros_like(value)
        got = boolean.and_arrays_many(s, [
            (mine(x8), mine(y8, 1)),
            boolean.FanoutAnd(mine(x32), mine(y32, 1), mine(z32)),
            boolean.PrivateAnd(mine(u), mine(v, 1)),
        ])
        return s.open_many(xor=[got[0], got[1][0], got[1][1], got[2]])

    run = run_spu(2, program)
    and8, f1, f2, priv = run.results[0]
    assert (and8 == (x8 & y8)).all() and (f1 == (x32 & y32)).all() and (f2 == (x32 & z32)).all()
    assert (priv == (u & v)).all()
    assert run.rounds == 2  # the ANDs, then the opening
    # AND round: masked x8, y8 (37 B, padded to 40 each); x32, y32, z32 (44 B -> 48 each: one
    # opening of the shared x); 5 private words. Then the opening: 37 + 11 + 11 + 5 words.
    assert run.channel.stats.bytes[("p0", "p1")] == (2 * 40 + 3 * 48 + 5 * 8) + 8 * (37 + 11 + 11 + 5)


@pytest.mark.parametrize("nparties", PARTIES)
def test_pooled_randomness_needs_few_dealer_messages(nparties):
    """With pooling (the default) 200 small products take their triples from doubling batches:
    a handful of dealer requests, not 200, the same correlations (products stay exact), and the
    parties' own traffic unchanged."""
    n, reps = 50, 200
    rng = np.random.default_rng(4)
    x, y = rng.integers(-2**30, 2**30, n), rng.integers(-2**30, 2**30, n)

    def program(s):
        xs, ys = share(s, x), share(s, y, owner=nparties - 1)
        return [arith.beaver_mul(s, xs, ys) for _ in range(reps)][-1]

    run = run_spu(nparties, program)
    assert (to_signed(sum(r.data for r in run.results)) == x * y).all()
    last = f"p{nparties - 1}"
    batches = sum(run.channel.stats.messages[(DEALER, p)] for p in run.parties)  # corrections go to either party
    assert batches <= 4  # 4096, 8192 elements ... >= 10^4 needed
    assert run.channel.stats.messages[(last, DEALER)] == batches + 1  # requests + close
    assert run.channel.stats.bytes[("p0", "p1")] == reps * 16 * n
