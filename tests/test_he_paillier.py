"""HEU Paillier layer: DJN encryption against phe, fixed-base tables, packing, messages, workers."""

import subprocess
import sys
import textwrap

import gmpy2
import numpy as np
import pyarrow as pa
import pytest
from phe import paillier

from sqlsecure.errors import DataError, ProtocolError
from sqlsecure.executors.heu import HEWorkers, SlotLayout, from_fixed_point, to_fixed_point
from sqlsecure.executors.heu.fixed_base import FixedBaseTable, choose_window, exponent_of, random_indices
from sqlsecure.executors.heu.kernels import OwnerKernel, PublicKernel
from sqlsecure.executors.heu.teichmuller import TeichmullerTable, fermat_quotient
from sqlsecure.executors.heu.messages import CiphertextBatch, GroupCount, KeyMessage, MaskedSums, ShareMessage
from sqlsecure.executors.heu.packing import PackingPlan, choose_packing, column_chunks, pack, unpack
from sqlsecure.executors.heu.paillier import (
    Encryptor,
    OwnerEncryptor,
    PublicKey,
    Randomizer,
    add,
    ciphertexts_from_blob,
    ciphertexts_to_blob,
    djn_exponent_bits,
    generate_keypair,
    mask_and_randomize,
    randomizer_bits,
    rerandomize,
    shift_left,
)


@pytest.fixture(scope="module")
def keys():
    return generate_keypair(1024)


@pytest.mark.parametrize("w", [4, 8, 11])
def test_fixed_base_table_matches_powmod(w):
    m = gmpy2.next_prime(gmpy2.mpz(2) ** 521) * gmpy2.next_prime(gmpy2.mpz(3) ** 300)
    table = FixedBaseTable(7, m, 40, window_bits=w)
    assert table.exponent_bits >= 40 and table.windows == -(-40 // w)
    for indices in table.random_indices(20) + [[i << w for i in range(table.windows)]]:  # + a = 0
        a = exponent_of(indices, w)
        assert 0 <= a < 2 ** table.exponent_bits
        assert table.power(indices, 3) == 3 * gmpy2.powmod(7, a, m) % m
    assert table.random_powers([5], [indices]) == [table.power(indices, 5)]


def test_fermat_quotient_is_additive_and_shifts_with_the_representative():
    p = gmpy2.next_prime(gmpy2.mpz(2) ** 127)
    x, y, k = 3**50 % p, 7**40 % p, 12345
    assert fermat_quotient(x * y, p) == (fermat_quotient(x, p) + fermat_quotient(y, p)) % p
    assert fermat_quotient(x + k * p, p) == (fermat_quotient(x, p) - k * gmpy2.invert(x, p)) % p


@pytest.mark.parametrize("w", [1, 4, 7])
def test_teichmuller_table_matches_powmod(keys, w):
    """Half-width entries and summed Fermat quotients give exactly (1 + p o) h_s^a mod p^2."""
    pk, sk = keys
    for prime in (sk.p, sk.q):
        p2 = prime * prime
        table = TeichmullerTable(pk.hs, prime, 45, w)
        assert table.windows == -(-45 // w)
        digits = np.vstack([np.random.default_rng(w).integers(0, 2**w, size=(20, table.windows)),
                            np.zeros((1, table.windows), dtype=np.int64),         # a = 0
                            np.full((1, table.windows), 2**w - 1)])               # a = 2^bits - 1
        offsets = [0, 1, prime - 1, 5 * prime + 3] + list(range(18))
        got = table.powers(digits, offsets)
        for row, o, c in zip(digits, offsets, got):
            a = sum(int(d) << (w * i) for i, d in enumerate(row))
            assert c == (1 + prime * o) * pow(pk.hs, a, p2) % p2
        assert table.powers(digits[:0]) == []
        with pytest.raises(ValueError, match="offsets for"):
            table.powers(digits, offsets[:-1])
        with pytest.raises(ValueError, match="exponent digits must be in"):
            table.powers(digits - 1)


def test_teichmuller_table_refuses_a_base_outside_the_subgroup(keys):
    _, sk = keys
    with pytest.raises(ValueError, match="subgroup of order p - 1"):
        TeichmullerTable(1 + sk.p, sk.p, 16, 4)  # order p: not an n-th residue
    with pytest.raises(ValueError, match="exponent digits"):
        TeichmullerTable(8, 3, 8, 4).powers(np.zeros((2, 3), dtype=np.int64))  # 8 = -1 mod 9


def test_random_exponents_cover_every_digit_uniformly():
    w, windows = 11, 94
    idx = np.array(random_indices(400, windows, w))
    digits = idx - (np.arange(windows) << w)
    assert digits.min() >= 0 and digits.max() < 2**w
    # 37,600 digits over 2^11 values: the mean and the share of set bits of a uniform digit
    assert abs(digits.mean() - (2**w - 1) / 2) < 25
    bits = (digits[..., None] >> np.arange(w)) & 1
    assert np.all(np.abs(bits.mean(axis=(0, 1)) - 0.5) < 0.02)


def test_window_choice_grows_with_the_batch_and_respects_the_budget():
    assert choose_window(1024, 10, 2048, tables=2) <= 6
    assert choose_window(1024, 10**5, 2048, tables=2) >= 10
    assert choose_window(1024, 10**9, 2048, tables=2, budget=16 << 20) <= 8


def test_djn_exponent_is_half_the_modulus():
    assert djn_exponent_bits(2048) == 1024 and djn_exponent_bits(3072) == 1536


@pytest.mark.parametrize("count", [5, 300])  # the powmod path and the table path
def test_encrypt_decrypt_and_phe_compatibility(keys, count):
    pk, sk = keys
    msgs = [0, 1, pk.n - 1] + list(range(2, count - 1))
    for enc in (Encryptor(pk), OwnerEncryptor(sk)):
        cts = enc.encrypt(msgs)
        assert sk.decrypt(cts) == msgs
        # phe decrypts them and adds them with its own ciphertexts
        phe_pk = pk.to_phe()
        a = paillier.EncryptedNumber(phe_pk, int(cts[3]))
        b = phe_pk.encrypt(40)
        assert sk.phe.decrypt(a + b) == msgs[3] + 40
        assert sk.phe.raw_decrypt(int(add(pk, cts[3], cts[4]))) == msgs[3] + msgs[4]
    assert len(set(Encryptor(pk).encrypt([5, 5, 5]))) == 3  # probabilistic


@pytest.mark.parametrize("w", [5, 11])
def test_owner_crt_ciphertexts_are_the_public_key_ciphertexts(keys, w):
    """Same exponent a: the key owner's CRT path gives exactly (1 + m n) h_s^a mod n^2, so with a
    drawn the same way (uniform on [0, 2^l), l >= DJN's ceil(k/2)) the distributions are equal."""
    pk, sk = keys
    bits = pk.exponent_bits
    owner = OwnerKernel(pk.n, pk.hs, sk.p, sk.q, bits, w)
    public = PublicKernel(pk.n, pk.hs, bits, w)
    assert owner.table_p.exponent_bits >= djn_exponent_bits(pk.n_bits)
    msgs = [0, 1, 12345, pk.n - 1]
    indices = random_indices(len(msgs), owner.table_p.windows, w)
    cts = owner.encrypt(msgs, indices)
    assert cts == public.encrypt(msgs, indices)
    n, n2 = pk.n, pk.nsquare
    assert cts == [(1 + m * n) * pow(pk.hs, exponent_of(i, w), n2) % n2 for m, i in zip(msgs, indices)]
    assert sk.decrypt(cts) == msgs
    assert owner.encrypt([]) == [] == owner.encrypt([], [])
    with pytest.raises(ValueError, match="exponents for"):
        owner.encrypt(msgs, indices[:-1])


def test_decryption_mod_p_alone_when_the_plaintext_is_small(keys):
    pk, sk = keys
    prime_bits = min(sk.p.bit_length(), sk.q.bit_length())
    small = [0, 1, 2 ** (prime_bits - 1) - 1]
    cts = OwnerEncryptor(sk).encrypt(small)
    assert sk.decrypt(cts, prime_bits - 1) == small == sk.decrypt(cts)
    big = [2**900 + 7, pk.n - 1]
    cts = OwnerEncryptor(sk).encrypt(big)
    assert sk.decrypt(cts, pk.n_bits) == big  # too large for one prime: both are used


def test_randomizers_encrypt_zero_and_hide_the_randomness(keys):
    pk, sk = keys
    assert randomizer_bits(1024) >= 1024 + 128
    for count in (2, 40):  # powmod path and table path
        factors = Randomizer(pk, uses=count).factors(count)
        assert len(set(factors)) == count and sk.decrypt(factors) == [0] * count
    c = Encryptor(pk).encrypt([9])[0]
    f = Randomizer(pk).factors(1)[0]
    out = mask_and_randomize(pk, c, 5, f)
    assert sk.decrypt([out]) == [14] and out != mask_and_randomize(pk, c, 5, 1)


def test_rerandomize_and_shift(keys):
    pk, sk = keys
    c = Encryptor(pk).encrypt([9])[0]
    r = rerandomize(pk, c, 5)
    assert r != c and sk.decrypt([r]) == [14]
    assert sk.decrypt([shift_left(pk, c, 100)]) == [9 << 100]


def test_plaintext_out_of_range_is_refused(keys):
    pk, sk = keys
    with pytest.raises(DataError):
        Encryptor(pk).encrypt([pk.n])
    with pytest.raises(DataError):
        OwnerEncryptor(sk).encrypt([-1])


def test_key_and_ciphertext_bytes(keys):
    pk, sk = keys
    assert PublicKey.from_bytes(pk.to_bytes()) == pk
    with pytest.raises(ProtocolError):
        PublicKey.from_bytes(pk.to_bytes()[:-1])
    cts = Encryptor(pk).encrypt([1, 2, 3])
    blob = ciphertexts_to_blob(cts, pk.ciphertext_bytes)
    assert ciphertexts_from_blob(blob, pk) == cts
    with pytest.raises(ProtocolError):
        ciphertexts_from_blob(b"\xff" * pk.ciphertext_bytes, pk)  # >= n^2


def test_slot_layout_documented_widths():
    layout = SlotLayout(value_bits=64, max_terms=10**6)
    assert layout.headroom_bits == 20 and layout.slot_bits == 64 + 20 + 40 + 1
    assert layout.slots(2048) == 2047 // 125 == 16
    assert SlotLayout(64, 1).headroom_bits == 0
    with pytest.raises(DataError):
        SlotLayout(64, 1, mask_bits=20)
    with pytest.raises(DataError):
        SlotLayout(64, 10**6).slots(120)


def test_encode_refuses_out_of_range_values():
    layout = SlotLayout(value_bits=8, max_terms=4)
    assert layout.encode(np.array([-128, 0, 127])) == [0, 128, 255]
    for bad in (128, -129):
        with pytest.raises(DataError, match="outside"):
            layout.encode(np.array([bad]))
    with pytest.raises(DataError):
        layout.encode(np.array([1.5]))
    with pytest.raises(DataError, match="overflow"):
        layout.check_terms(5)
    assert SlotLayout(64, 1).encode(np.array([-(2**63), 2**63 - 1])) == [0, 2**64 - 1]


def test_pack_unpack_and_result_plan():
    cols = [[1, 2], [3, 4], [5, 6]]
    packed = pack(cols, 10)
    assert [unpack(p, 3, 10) for p in packed] == [[1, 3, 5], [2, 4, 6]]
    assert [list(c) for c in column_chunks(5, 2)] == [[0, 1], [2, 3], [4]]
    plan = PackingPlan(columns=5, slots=3).result_plan(7)
    seen = [(e.group, e.first + j) for cts in plan for e in cts for j in range(e.width)]
    assert sorted(seen) == [(g, c) for g in range(7) for c in range(5)]
    assert all(sum(e.span for e in cts) <= 3 for cts in plan)
    assert PackingPlan(2, 4).result_plan(0) == []


@pytest.mark.parametrize("merge", [True, False])
def test_rows_per_ciphertext_plan(merge):
    plan = PackingPlan(columns=2, slots=8, rows_per_ciphertext=3, merge=merge)
    cols = [[1, 2, 3, 4], [5, 6, 7, 8]]  # 4 rows: two ciphertexts, the second with one row
    (packed,) = plan.pack_rows(cols, 10)
    assert [unpack(p, 6, 10) for p in packed] == [[1, 5, 2, 6, 3, 7], [4, 8, 0, 0, 0, 0]]
    assert plan.ciphertexts(4) == 2 and plan.accumulators(5) == 15
    result = plan.result_plan(5)
    entries = [e for cts in result for e in cts]
    assert sorted((e.group, e.position) for e in entries) == [(g, j) for g in range(5) for j in range(3)]
    assert all(e.span == 6 and e.width == 2 for e in entries)
    assert all(sum(e.span for e in cts) <= 8 for cts in result) and len(result) == 15
    with pytest.raises(DataError):
        PackingPlan(columns=3, slots=8, rows_per_ciphertext=3)


def test_packing_choice_follows_rows_and_groups():
    many_rows = choose_packing(10**6, 1000, 2, 16, 125, 2048, processes=2)
    assert many_rows.rows_per_ciphertext == 8  # 8x fewer encryptions, 8 accumulators per group
    assert choose_packing(10**5, 1, 1, 16, 121, 2048).rows_per_ciphertext == 16  # he_sum
    many_groups = choose_packing(20_000, 10_000, 1, 16, 120, 2048)
    assert many_groups.rows_per_ciphertext == 1 and many_groups.merge
    assert choose_packing(100, 3, 20, 16, 110, 2048).rows_per_ciphertext == 1  # two chunks


def test_cost_estimate_for_the_planner():
    from sqlsecure.executors.heu.packing import he_group_sum_seconds

    small, _, _ = he_group_sum_seconds(10**4, 1000, 2)
    mid, mid_wall, plan = he_group_sum_seconds(10**5, 1000, 2)
    big, _, big_plan = he_group_sum_seconds(10**6, 1000, 2)
    assert 0 < small < mid < big and mid_wall == mid / 2
    assert plan.rows_per_ciphertext < big_plan.rows_per_ciphertext
    assert he_group_sum_seconds(10**5, 1000, 2, key_bits=3072)[0] > mid


def test_fixed_point():
    x = np.array([-1.5, 0.25, 3.0, -0.0001])
    enc = to_fixed_point(x, 16)
    assert [from_fixed_point(int(v), 16) for v in enc] == pytest.approx(x.tolist(), abs=2**-16)
    with pytest.raises(DataError):
        to_fixed_point(np.array([np.nan]), 16)
    with pytest.raises(DataError):
        to_fixed_point(np.array([2.0**50]), 16)


def test_messages_round_trip(keys):
    pk, _ = keys
    w = pk.ciphertext_bytes
    km = KeyMessage(pk, SlotLayout(32, 77, 48), 77, 3, 4, False)
    assert KeyMessage.from_bytes(km.to_bytes()) == km
    assert GroupCount.from_bytes(GroupCount(12).to_bytes()) == GroupCount(12)
    blobs = [ciphertexts_to_blob(Encryptor(pk).encrypt([i, i + 1]), w) for i in range(2)]
    raw = CiphertextBatch(blobs).to_bytes(w)
    table = pa.ipc.open_stream(raw).read_all()
    assert table.schema.field("c0").type == pa.binary(w)
    assert CiphertextBatch.from_bytes(raw, 2, w).chunks == blobs
    with pytest.raises(ProtocolError):
        CiphertextBatch.from_bytes(raw, 3, w)
    ms = MaskedSums(5, blobs[0])
    assert MaskedSums.from_bytes(ms.to_bytes(w), w) == ms
    sm = ShareMessage([[-(2**120), 3, 0], [1, -1, 2**70]], [4, 5, 6])
    assert ShareMessage.from_bytes(sm.to_bytes()) == sm
    assert ShareMessage.from_bytes(ShareMessage([[1]], None).to_bytes()) == ShareMessage([[1]], None)


def test_worker_pool_encrypts_decrypts_and_randomizes(keys):
    pk, sk = keys
    workers = HEWorkers(2)
    batches = [list(range(i, i + 1100)) for i in (0, 1100)]
    blobs = list(workers.encrypt_stream(sk, iter(batches), 2200))
    cts = [c for b in blobs for c in ciphertexts_from_blob(b, pk)]
    assert workers.decrypt(sk, cts) == list(range(2200))
    assert workers.decrypt(sk, cts[:100], 20) == list(range(100))
    blob = next(workers.encrypt_stream(pk, iter([list(range(2000))]), 2000))  # public-key path
    assert sk.decrypt(ciphertexts_from_blob(blob, pk)[:3]) == [0, 1, 2]
    factors = workers.factors_later(pk, 50).result()
    assert len(set(factors)) == 50 and workers.decrypt(sk, factors) == [0] * 50
    with pytest.raises(DataError):
        list(workers.encrypt_stream(sk, iter([[pk.n] * 1500]), 1500))


def test_worker_processes_need_no_main_guard(tmp_path):
    """The workers never run the host's __main__: an unguarded script (here: from stdin) works."""
    script = textwrap.dedent("""
        from sqlsecure.executors.heu import HEWorkers, generate_keypair
        from sqlsecure.executors.heu.paillier import ciphertexts_from_blob
        pk, sk = generate_keypair(1024)
        blobs = list(HEWorkers(2).encrypt_stream(sk, iter([list(range(1500))]), 1500))
        print(sk.decrypt(ciphertexts_from_blob(blobs[0], pk)[-2:]))
    """)
    out = subprocess.run([sys.executable, "-"], input=script, capture_output=True, text=True, timeout=300,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[1498, 1499]"
