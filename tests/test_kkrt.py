"""KKRT16 PSI: the OT layers against their definitions, the PSI against the plaintext reference and
the ECDH path, communication bounds, and malformed messages."""

import os
from itertools import product

import gmpy2
import numpy as np
import pyarrow as pa
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given, settings
from hypothesis import strategies as st

from sqlsecure.errors import ProtocolError
from sqlsecure.executors.psi import kkrt, ot
from sqlsecure.executors.runtime.channel import InProcessChannel
from sqlsecure.executors.psi.encoding import encode_keys
from sqlsecure.executors.psi.kkrt import kkrt_join_indices, kkrt_membership
from sqlsecure.executors.psi.ecdh import expand, expand_flat, local_join_indices, psi_join_indices, psi_membership


def run_pair(a, b, channel=None, names=("a", "b")):
    """Run a(endpoint) and b(endpoint) as two parties in two threads; return both results."""
    channel = channel or InProcessChannel(list(names), timeout=30)
    out = channel.run(dict(zip(names, (a, b))))
    return out[names[0]], out[names[1]], channel


def run_join(left, right, join=kkrt_join_indices, channel=None, names=("a", "b")):
    first, second = names
    return run_pair(lambda e: join(e, second, "t", left, True),
                    lambda e: join(e, first, "t", right, False), channel, names)


def run_membership(left, right, membership=kkrt_membership):
    ml, mr, _ = run_pair(lambda e: membership(e, "b", "t", left), lambda e: membership(e, "a", "t", right))
    return ml, mr


def pairs(li, ri):
    assert len(li) == len(ri)
    return sorted(zip(li.tolist(), ri.tolist()))


def nested_loop_join(left, right):
    return sorted((i, j) for (i, x), (j, y) in product(enumerate(left), enumerate(right))
                  if x is not None and x == y)


def enc(values):
    return [None if v is None else b"i%d" % v for v in values]


# --- the group and the base OT -------------------------------------------------------------------

def test_group_is_rfc7919_ffdhe3072():
    with gmpy2.context(precision=4000):
        e = gmpy2.exp(1)
        p = 2**3072 - 2**3008 + (int(gmpy2.floor(gmpy2.mpfr(2) ** 2942 * e)) + 2625351) * 2**64 - 1
    assert ot.FFDHE3072_P == p
    assert gmpy2.is_prime(p, 30) and gmpy2.is_prime((p - 1) // 2, 30)
    assert gmpy2.legendre(ot.GENERATOR, p) == 1  # g generates the subgroup of prime order (p - 1) / 2


def test_fixed_base_powers_equal_powmod():
    base = ot.FixedBase(12345)
    for _ in range(5):
        e = ot._exponent()
        assert base.pow(e) == gmpy2.powmod(12345, e, ot.FFDHE3072_P)


def test_base_ot_gives_the_chosen_key_only():
    choices = ot.random_bits(64)
    keys, got, _ = run_pair(lambda e: ot.base_ot_send(e, "b", "t", 64),
                            lambda e: ot.base_ot_receive(e, "a", "t", choices))
    picked = choices.astype(int)
    assert keys.shape == (64, 2, 16)
    assert (got == keys[np.arange(64), picked]).all()
    assert not (got == keys[np.arange(64), 1 - picked]).all(axis=1).any()
    assert not (keys[:, 0] == keys[:, 1]).all(axis=1).any()


@pytest.mark.parametrize("element", [1, "p-1", "non-residue", "oversized"])
def test_base_ot_rejects_elements_outside_the_subgroup(element):
    p = ot.FFDHE3072_P
    if element == "p-1":
        raw = int(p - 1).to_bytes(ot.ELEMENT, "big")
    elif element == "non-residue":
        x = next(x for x in range(2, 100) if gmpy2.legendre(x, p) == -1)
        raw = x.to_bytes(ot.ELEMENT, "big")
    elif element == "oversized":
        raw = bytes(ot.ELEMENT + 1)
    else:
        raw = int(element).to_bytes(ot.ELEMENT, "big")
    channel = InProcessChannel(["a", "b"], timeout=5)
    channel.endpoint("a").send("b", "t/base-ot/a", raw)
    with pytest.raises(ProtocolError, match="a sent"):
        ot.base_ot_receive(channel.endpoint("b"), "a", "t", ot.random_bits(8))


def test_ot_extension_gives_the_chosen_seed_of_each_pair():
    pi = ot.AesBlocks(os.urandom(16))
    (s, seeds), seed_pairs, channel = run_pair(lambda e: ot.kkrt_base_receive(e, "b", "t", pi),
                                               lambda e: ot.kkrt_base_send(e, "a", "t", pi))
    assert seed_pairs.shape == (ot.CODE_BITS, 2, 16) and seeds.shape == (ot.CODE_BITS, 16)
    picked = s.astype(int)
    assert (seeds == seed_pairs[np.arange(ot.CODE_BITS), picked]).all()
    assert not (seeds == seed_pairs[np.arange(ot.CODE_BITS), 1 - picked]).all(axis=1).any()
    # 128 base OTs (one group element each way, plus A), then the 128 x 512-bit IKNP matrix
    assert channel.stats.bytes[("a", "b")] == ot.ELEMENT + ot.KAPPA * ot.CODE_BITS // 8
    assert channel.stats.bytes[("b", "a")] == ot.KAPPA * ot.ELEMENT


def test_kkrt_extension_correlation_and_oprf():
    """q_i = t0_i ⊕ (C(w_i) ∧ s), so H(i, q_i ⊕ (C(w) ∧ s)) equals the receiver's H(i, t0_i)
    iff w = w_i: the OPRF."""
    pi = ot.AesBlocks(os.urandom(16))
    (s, seeds), seed_pairs, _ = run_pair(lambda e: ot.kkrt_base_receive(e, "b", "t", pi),
                                         lambda e: ot.kkrt_base_send(e, "a", "t", pi))
    code = ot.PseudorandomCode([os.urandom(16) for _ in range(4)])
    rows = ot.CHUNK_ROWS + 128  # two chunks, the second short
    inputs = np.frombuffer(os.urandom(16 * rows), dtype=np.uint8).reshape(rows, 16)
    d = code.encode(inputs)
    q, t0, _ = run_pair(lambda e: list(ot.kkrt_extend_send(e, "b", "t", s, seeds, rows)),
                        lambda e: list(ot.kkrt_extend_receive(e, "a", "t", seed_pairs, rows,
                                                              lambda lo, hi: d[lo:hi])))
    assert [start for start, _ in q] == [start for start, _ in t0] == [0, ot.CHUNK_ROWS]
    q, t0 = np.concatenate([x for _, x in q]), np.concatenate([x for _, x in t0])
    s_row = ot.pack_bits(s)
    assert (q == t0 ^ (d & s_row)).all()
    tweaks = ot.tweak_blocks(np.arange(rows))
    mine = ot.row_hash(pi, tweaks, t0)
    assert (ot.row_hash(pi, tweaks, q ^ (code.encode(inputs) & s_row)) == mine).all()
    other = np.roll(inputs, 1, axis=0)
    assert not (ot.row_hash(pi, tweaks, q ^ (code.encode(other) & s_row)) == mine).all(axis=1).any()


def test_columns_to_rows_transposes_the_bit_matrix():
    for k, n in [(128, 512), (512, 64), (512, 8192 + 64), (64, 8), (72, 200)]:
        columns = np.frombuffer(os.urandom(k * n // 8), dtype=np.uint8).reshape(k, n // 8)
        bits = np.unpackbits(columns, axis=1, bitorder="little")  # bits[j, i] = bit i of column j
        expected = np.packbits(bits.T, axis=1, bitorder="little")
        assert (ot.columns_to_rows(columns) == expected).all()


def test_code_and_hashes_are_aes_based_functions():
    keys = [os.urandom(16) for _ in range(4)]
    w = np.frombuffer(os.urandom(16 * 3), dtype=np.uint8).reshape(3, 16)
    ecb = [Cipher(algorithms.AES(k), modes.ECB()).encryptor() for k in keys]
    expected = [b"".join(bytes(a ^ b for a, b in zip(e.update(bytes(x)), bytes(x))) for e in ecb) for x in w]
    assert [bytes(r) for r in ot.PseudorandomCode(keys).encode(w)] == expected
    # the code spreads inputs far apart: distance ~256 of 512, never below κ here
    c = ot.PseudorandomCode(keys).encode(np.frombuffer(os.urandom(16 * 200), dtype=np.uint8).reshape(200, 16))
    distance = np.unpackbits(c[:100] ^ c[100:], axis=1).sum(axis=1)
    assert distance.min() >= ot.KAPPA
    pi = ot.AesBlocks(os.urandom(16))
    x = np.frombuffer(os.urandom(32), dtype=np.uint8).reshape(2, 16)
    assert not (ot.tccr_hash(pi, ot.tweak_blocks(np.array([0, 0])), x)
                == ot.tccr_hash(pi, ot.tweak_blocks(np.array([1, 1])), x)).all(axis=1).any()


# --- inputs and cuckoo hashing -----------------------------------------------------------------------

def test_cbc_mac_of_length_prefixed_keys():
    key = os.urandom(16)
    keys = [b"", b"a", b"a\x00", b"x" * 7, b"x" * 8, b"x" * 9, b"y" * 40, "ü".encode() * 30, b"a"]
    _, data, starts, lengths = kkrt.key_bytes(keys)
    got = kkrt.cbc_mac(data, starts, lengths, ot.AesBlocks(key))
    for k, block in zip(keys, got):
        message = len(k).to_bytes(8, "little") + k
        message += bytes(-len(message) % 16)
        cbc = Cipher(algorithms.AES(key), modes.CBC(bytes(16))).encryptor()
        assert bytes(block) == cbc.update(message)[-16:]
    assert len({bytes(b) for b in got}) == len(set(keys))


def test_distinct_keys_groups_equal_blocks():
    blocks = np.frombuffer(os.urandom(16 * 5), dtype=np.uint8).reshape(5, 16)
    rows = blocks[[3, 0, 3, 1, 4, 0, 2]]
    rows[6, :8] = rows[4, :8]  # the same first word as row 4, another value
    ids, representative = kkrt.distinct_keys(rows)
    assert len(representative) == 5
    assert ids[0] == ids[2] and ids[1] == ids[5] and ids[4] != ids[6] and len(set(ids.tolist())) == 5
    assert (rows[representative[ids]] == rows).all()


@pytest.mark.parametrize("n", [1, 7, 300, 20_000])
def test_cuckoo_places_every_key_in_one_of_its_bins(n):
    blocks = np.frombuffer(os.urandom(16 * n), dtype=np.uint8).reshape(n, 16)
    bins = kkrt.cuckoo_bins(n)
    assert bins % 64 == 0 and bins >= 1.45 * max(n, kkrt.MIN_TABLE_KEYS)
    candidates = kkrt.candidate_bins(blocks, ot.AesBlocks(os.urandom(16)), bins)
    slot, which = kkrt.cuckoo_insert(candidates, bins)
    placed = np.flatnonzero(slot >= 0)
    assert sorted(slot[placed].tolist()) == list(range(n))
    assert (candidates[slot[placed], which[placed]] == placed).all()


def test_parameters():
    assert 1.50 < kkrt.cuckoo_bins(10**6) / 10**6 < 1.55  # PSWW18 stash-less fit, λ = 40
    assert kkrt.value_bytes(10**6, 10**6) == 10  # 40 + log2(10^12) = 79.9 bits
    assert kkrt.value_bytes(1, 1) == 5
    assert kkrt.value_bytes(2**32 - 1, 2**32 - 1) <= 16


def test_the_flat_expand_every_psi_uses_is_psi_expand():
    rng = np.random.default_rng(5)
    groups = [list(range(s, s + c)) for s, c in zip(range(0, 200, 10), rng.integers(1, 5, 20))]
    mine = np.array([len(g) for g in groups])
    theirs = rng.integers(1, 4, 20)
    flat = np.array([r for g in groups for r in g])
    for left in (True, False):
        assert (expand_flat(flat, mine, theirs, left) == expand(groups, mine, theirs, left)).all()


# --- the PSI ---------------------------------------------------------------------------------------------

@settings(max_examples=12, deadline=None)
@given(st.lists(st.one_of(st.none(), st.integers(0, 12)), max_size=40),
       st.lists(st.one_of(st.none(), st.integers(0, 12)), max_size=40))
def test_psi_equals_reference(left_values, right_values):
    left, right = enc(left_values), enc(right_values)
    li, ri, _ = run_join(left, right)
    assert pairs(li, ri) == nested_loop_join(left, right)


@pytest.mark.parametrize("sizes", [(0, 0), (0, 30), (30, 0), (1, 1), (2000, 20), (20, 2000), (500, 500)])
def test_psi_sizes(sizes):
    rng = np.random.default_rng(sum(sizes))
    domain = max(sizes) + 1
    left = enc([None if v < 0 else int(v) for v in rng.integers(-3, domain, sizes[0])])
    right = enc([None if v < 0 else int(v) for v in rng.integers(-3, domain, sizes[1])])
    li, ri, _ = run_join(left, right)
    rl, rr = local_join_indices(left, right)
    assert pairs(li, ri) == pairs(rl, rr)
    ml, mr = run_membership(left, right)
    assert (ml == np.isin(np.arange(len(left)), rl)).all()
    assert (mr == np.isin(np.arange(len(right)), rr)).all()


def test_psi_equals_ecdh_path_on_typed_keys():
    """Text and integer keys through `encode_keys`: '5' never matches 5; long keys span many blocks."""
    rng = np.random.default_rng(11)
    ints = rng.integers(0, 60, 150)
    words = [None if i % 9 == 0 else f"customer-{i % 40}" + "x" * int(i % 5) * 20 for i in range(120)]

    def keys(values, dtype=None):
        return encode_keys(pa.table({"k": pa.array(values, dtype)}), ("k",))

    left = keys([int(v) for v in ints[:80]] + [None] * 3, pa.int64()) + keys(words[:70])
    right = (keys([str(v) for v in ints[80:]]) + keys([int(v) for v in ints[60:]], pa.int32())
             + keys(words[40:]))
    li, ri, _ = run_join(left, right)
    el, er, _ = run_join(left, right, join=psi_join_indices)
    assert pairs(li, ri) == pairs(el, er) == nested_loop_join(left, right)
    assert len(li) > 0
    ml, mr = run_membership(left, right)
    el, er = run_membership(left, right, psi_membership)
    assert (ml == el).all() and (mr == er).all()


def test_both_parties_agree_on_the_order():
    """Row k of the left output and row k of the right output hold the same key; within a key the
    left repeats each row, the right tiles its rows (as psi.expand)."""
    left = enc([1, 2, 2, 3, 5, 2, None])
    right = enc([2, 2, 3, 7, 2, 1])
    li, ri, _ = run_join(left, right)
    assert [left[i] for i in li] == [right[j] for j in ri]
    for key in set(left[i] for i in li):
        lrows = [i for i in li if left[i] == key]
        rrows = [j for i, j in zip(li, ri) if left[i] == key]
        nl, nr = left.count(key), right.count(key)
        assert lrows == sorted(lrows) and rrows == sorted(set(rrows)) * nl and len(lrows) == nl * nr


def test_equal_sizes_and_names_in_either_order():
    left, right = enc(range(0, 50)), enc(range(25, 75))
    for names in [("a", "b"), ("b", "a")]:
        li, ri, _ = run_join(left, right, names=names)
        assert pairs(li, ri) == nested_loop_join(left, right)


def test_communication_is_bounded():
    left = enc(list(range(300)) * 2)  # 300 distinct keys, each twice: the receiver
    right = enc(range(200, 400))  # 200 distinct, 100 common: the sender
    li, ri, channel = run_join(left, right)
    assert len(li) == 200
    bins = kkrt.cuckoo_bins(300)
    width = kkrt.value_bytes(300, 200)
    stats = channel.stats
    # R -> S: the hello (seed, size, an A it does not use), 128 base-OT choices, the corrections, the
    # matched positions, the counts
    assert stats.bytes[("a", "b")] == (16 + 8 + ot.ELEMENT + ot.KAPPA * ot.ELEMENT + bins * ot.CODE_BYTES
                                       + 4 * 100 + 4 * 100)
    assert stats.messages[("a", "b")] == 5 + -(-bins // ot.CHUNK_ROWS) - 1
    # S -> R: the hello (seed, size, A), the IKNP matrix, 3 values per key, the counts
    assert stats.bytes[("b", "a")] == (16 + 8 + ot.ELEMENT + ot.KAPPA * ot.CODE_BYTES
                                       + 3 * 200 * width + 4 * 100)
    assert stats.messages[("b", "a")] == 4
    # legs one after another: the hello, base-OT choices, IKNP, corrections, values, matched, counts
    assert stats.legs == 7


def test_no_plaintext_key_crosses(channel_spy):
    secret = b"s" + b"customer-4711-secret"
    channel = InProcessChannel(["a", "b"], timeout=30)
    sent = channel_spy(channel)
    run_join([secret, b"i1"], [b"i1", b"i2"], channel=channel)
    assert sent and not any(secret in m or b"customer-4711" in m for m in sent)


# --- malformed messages ------------------------------------------------------------------------------------

class TamperingChannel(InProcessChannel):
    """Changes the first message whose tag ends with `suffix` (`every`: each such message, both parties'
    where both send one: which of them comes first is the threads' race)."""

    def __init__(self, suffix, change, every=False):
        super().__init__(["a", "b"], timeout=10)
        self.suffix, self.change, self.done, self.every = suffix, change, False, every

    def _send(self, src, dst, tag, payload):
        if (self.every or not self.done) and tag.endswith(self.suffix):
            self.done = True
            payload = self.change(bytes(payload))
        super()._send(src, dst, tag, payload)


@pytest.mark.parametrize("suffix, change", [
    ("kkrt/hello", lambda m: m[:-1]),
    ("kkrt/hello", lambda m: m + b"\x00"),
    ("kkrt/hello", lambda m: m[:16] + (1 << 40).to_bytes(8, "little") + m[24:]),
    ("kkrt/hello*", lambda m: m[:24] + bytes(384)),  # an A outside the subgroup (S's: R discards its own)
    ("base-ot/b", lambda m: m[:-1]),
    ("iknp/u", lambda m: m[:-8]),
    ("kkrt/u", lambda m: m[:-64]),
    ("kkrt/values", lambda m: m[:-1]),
    ("kkrt/matched", lambda m: m[:-1]),
    ("kkrt/matched", lambda m: m[4:8] + m[:4] + m[8:]),  # not ascending
    ("kkrt/matched", lambda m: (10**6).to_bytes(4, "little") + m[4:]),  # not a position of the sender's keys
    ("counts", lambda m: m[:-4]),
    ("counts", lambda m: bytes(len(m))),  # a zero multiplicity
])
def test_malformed_message_raises_protocol_error(suffix, change):
    left = enc(list(range(40)) * 2)
    right = enc(range(20, 50))
    with pytest.raises(ProtocolError):
        run_join(left, right, channel=TamperingChannel(suffix.rstrip("*"), change, every=suffix.endswith("*")))


def test_peer_that_vanishes_fails_with_its_name():
    channel = InProcessChannel(["a", "b"], timeout=0.5)
    with pytest.raises(ProtocolError, match="'b'"):
        kkrt_join_indices(channel.endpoint("a"), "b", "t", enc([1, 2]), True)
