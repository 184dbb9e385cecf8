"""Each PSI hashes or MACs only its distinct keys (issue 16: TPC-H Q5's unbalanced PSI hashed one SHA-256 per
lineitem row, millions of rows for 25 nation keys). Per row it still finds the same distinct key as when
every row was hashed; NULL rows stay -1."""

import numpy as np
import pytest

from sqlsecure.executors.psi import ecdh, kkrt, unbalanced
from sqlsecure.executors.psi.blinding import hash_to_buffer
from sqlsecure.executors.psi.encoding import distinct_encoded
from sqlsecure.executors.psi.ot import AesBlocks

ROWS = [b"i3", None, b"s3", b"i3", b"", b"i7", None, b"i3", b"s3", b"x\x00\x01"]


def reference_ids(encoded) -> np.ndarray:
    """Per row, the rank of its key among the sorted distinct keys (a bijection with any other order)."""
    distinct = sorted({k for k in encoded if k is not None})
    return np.array([-1 if k is None else distinct.index(k) for k in encoded])


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Both give NULL rows -1 and group the other rows alike."""
    return np.array_equal(a < 0, b < 0) and len({(x, y) for x, y in zip(a, b)}) == len(set(a.tolist()))


def test_distinct_encoded_numbers_rows_by_exact_bytes():
    rows, distinct = distinct_encoded(ROWS)
    assert distinct == [b"i3", b"s3", b"", b"i7", b"x\x00\x01"]
    assert [None if i < 0 else distinct[i] for i in rows] == ROWS


def test_empty_and_all_null_keys():
    assert distinct_encoded([])[1] == [] and distinct_encoded([None, None])[0].tolist() == [-1, -1]


@pytest.fixture
def hashed(monkeypatch) -> list[int]:
    """How many keys each call of the SHA-256 hashing gets."""
    counts = []

    def counting(keys):
        keys = list(keys)
        counts.append(len(keys))
        return hash_to_buffer(keys)

    monkeypatch.setattr(ecdh, "hash_to_buffer", counting)
    monkeypatch.setattr(unbalanced, "hash_to_points", lambda keys: bytes(counting(keys)))
    return counts


def test_ecdh_hashes_each_distinct_key_once(hashed):
    ids, points = ecdh._distinct_points(ROWS)
    assert sum(hashed) == len(points) == 5
    assert same_partition(ids, reference_ids(ROWS))
    assert points.tolist() == sorted(np.frombuffer(hash_to_buffer(sorted(set(ROWS) - {None})), "S32").tolist())


def test_unbalanced_hashes_each_distinct_key_once(hashed):
    keys = unbalanced._keys(ROWS)
    assert sum(hashed) == keys.size == 5
    assert same_partition(keys.ids, reference_ids(ROWS))
    expected = np.frombuffer(hash_to_buffer(sorted(set(ROWS) - {None})), dtype=np.uint8).reshape(-1, 32)
    assert keys.distinct_points(np.arange(5)) == expected[np.lexsort(expected.T[::-1])].tobytes()


def test_kkrt_macs_each_distinct_key_once(monkeypatch):
    macked, original = [], kkrt.cbc_mac

    def counting(data, starts, lengths, mac):
        macked.append(len(lengths))
        return original(data, starts, lengths, mac)

    monkeypatch.setattr(kkrt, "cbc_mac", counting)
    mac = AesBlocks(bytes(16))
    ids, blocks = kkrt._distinct_blocks(*kkrt.distinct_encoded(ROWS), mac)
    assert macked == [5] and len(blocks) == 5
    assert same_partition(ids, reference_ids(ROWS))
    _, data, starts, lengths = kkrt.key_bytes(ROWS)  # every row MACed, as before: the same distinct blocks
    every = original(data, starts, lengths, mac)
    assert sorted(map(bytes, blocks)) == sorted(set(map(bytes, every)))
