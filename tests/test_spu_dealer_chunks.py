"""The dealer computes an elementwise triple's correction in chunks, in reused buffers (bench/spu_ops.py):
every element, across chunk boundaries and after larger requests, still makes a triple, and a PRG stream
read from any word on is the stream itself."""

import numpy as np
import pytest

from sqlsecure.executors.spu.dealer import DEALER_CHUNK, Dealer, RandomnessRequest, seeded_triple
from sqlsecure.executors.spu.prg import SPARE_WORDS, Prg


def dealer_of(nparties: int) -> Dealer:
    dealer = Dealer(None, [f"p{i}" for i in range(nparties)])
    dealer.prgs = [Prg(bytes([i + 1] * 16)) for i in range(nparties)]
    return dealer


@pytest.mark.parametrize("nparties", [2, 3])
@pytest.mark.parametrize("kind", ["arith_triple", "bool_triple"])
def test_triples_hold_across_chunks_and_reused_buffers(nparties, kind):
    dealer = dealer_of(nparties)
    for rid, count in enumerate([2 * DEALER_CHUNK + 5, 3, DEALER_CHUNK, 1]):  # the big one first: buffers reused
        target, correction = dealer.produce(RandomnessRequest(rid, kind, (count,)))
        assert target == nparties - 1 and correction.shape == (count,)
        parts = [seeded_triple(prg, rid, i, nparties, count, count, count) for i, prg in enumerate(dealer.prgs)]
        shares = [(a, b, correction if c is None else c) for a, b, c in parts]
        if kind == "bool_triple":
            a, b, c = (np.bitwise_xor.reduce([s[j] for s in shares]) for j in range(3))
            assert (c == (a & b)).all()
        else:
            a, b, c = (np.sum([s[j] for s in shares], axis=0, dtype=np.uint64) for j in range(3))
            assert (c == a * b).all()


@pytest.mark.parametrize("start, n", [(0, 1), (1, 1), (2, 7), (3, 8), (1001, 64)])
def test_words_into_reads_the_stream_from_any_word(start, n):
    prg = Prg(bytes(range(16)))
    buf = np.full(n + SPARE_WORDS, 7, np.uint64)
    assert (prg.words_into(5, start, buf, n) == prg.words(5, start + n)[start:]).all()
