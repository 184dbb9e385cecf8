"""HEU Paillier layer: DJN encryption against phe, fixed-base tables, packing, messages, workers."""

import gmpy2
import numpy as np
import pyarrow as pa
import pytest
from phe import paillier

from sqlsecure.errors import DataError, ProtocolError
from sqlsecure.executors.heu import HEWorkers, SlotLayout, from_fixed_point, to_fixed_point
from sqlsecure.executors.heu.fixed_base import FixedBaseTable
from sqlsecure.executors.heu.messages import CiphertextBatch, KeyMessage, MaskedSums, ShareMessage
from sqlsecure.executors.heu.packing import column_chunks, pack, result_plan, unpack
from sqlsecure.executors.heu.paillier import (
    Encryptor,
    OwnerEncryptor,
    PublicKey,
    add,
    ciphertexts_from_blob,
    ciphertexts_to_blob,
    djn_exponent_bits,
    generate_keypair,
    rerandomize,
    shift_left,
)


@pytest.fixture(scope="module")
def keys():
    return generate_keypair(1024)


def test_fixed_base_table_matches_powmod():
    m = gmpy2.next_prime(gmpy2.mpz(2) ** 521) * gmpy2.next_prime(gmpy2.mpz(3) ** 300)
    table = FixedBaseTable(7, m, 40)
    exp = bytes([1, 255, 0, 17, 200])
    assert table.power(exp, 3) == 3 * gmpy2.powmod(7, int.from_bytes(exp, "little"), m) % m


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
    plan = result_plan(groups=7, columns=5, slots=3)
    seen = [(g, f + j) for cts in plan for g, f, w in cts for j in range(w)]
    assert sorted(seen) == [(g, c) for g in range(7) for c in range(5)]
    assert all(sum(w for _, _, w in cts) <= 3 for cts in plan)
    assert result_plan(0, 2, 4) == []


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
    km = KeyMessage(pk, SlotLayout(32, 77, 48), 77, 3)
    assert KeyMessage.from_bytes(km.to_bytes()) == km
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


def test_worker_pool_encrypts_and_decrypts(keys):
    pk, sk = keys
    workers = HEWorkers(2)
    try:
        batches = [list(range(i, i + 1100)) for i in (0, 1100)]
        blobs = list(workers.encrypt_stream(sk, iter(batches), 2200))
        cts = [c for b in blobs for c in ciphertexts_from_blob(b, pk)]
        assert workers.decrypt(sk, cts) == list(range(2200))
        blob = next(workers.encrypt_stream(pk, iter([list(range(2000))]), 2000))  # public-key path
        assert sk.decrypt(ciphertexts_from_blob(blob, pk)[:3]) == [0, 1, 2]
    finally:
        workers.close()
