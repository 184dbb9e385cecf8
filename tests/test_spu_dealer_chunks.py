"""The dealer computes an elementwise triple's correction in chunks, in reused buffers (bench/spu_ops.py):
every element, across chunk boundaries and after larger requests, still makes a triple, and a PRG stream
read from any word on is the stream itself."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sqlsecure.executors.spu.dealer import DEALER_CHUNK, Dealer, RandomnessRequest, seeded_private_and, seeded_triple
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


@pytest.mark.parametrize("nparties", [2, 3])
@pytest.mark.parametrize("kind", ["arith_fanout", "bool_fanout"])
@pytest.mark.parametrize("fan", [1, 2, 3])
def test_fanouts_hold_across_chunks_for_every_row(nparties, kind, fan):
    dealer = dealer_of(nparties)
    for rid, count in enumerate([DEALER_CHUNK + 3, 5, 1]):
        target, correction = dealer.produce(RandomnessRequest(rid, kind, (count, fan)))
        assert target == nparties - 1 and correction.shape == (fan * count,)
        parts = [seeded_triple(prg, rid, i, nparties, count, fan * count, fan * count)
                 for i, prg in enumerate(dealer.prgs)]
        shares = [(a, b, correction if c is None else c) for a, b, c in parts]
        if kind == "bool_fanout":
            a, b, c = (np.bitwise_xor.reduce([s[j] for s in shares]) for j in range(3))
            assert (c.reshape(fan, count) == (a & b.reshape(fan, count))).all()
        else:
            a, b, c = (np.sum([s[j] for s in shares], axis=0, dtype=np.uint64) for j in range(3))
            assert (c.reshape(fan, count) == a * b.reshape(fan, count)).all()


def test_private_and_holds_across_chunks():
    dealer = dealer_of(2)
    for rid, count in enumerate([2 * DEALER_CHUNK + 1, 4, 1]):
        target, c0 = dealer.produce(RandomnessRequest(rid, "private_and", (count,)))
        a, none = seeded_private_and(dealer.prgs[0], rid, 0, count)
        b, c1 = seeded_private_and(dealer.prgs[1], rid, 1, count)
        assert target == 0 and none is None and ((c0 ^ c1) == (a & b)).all()


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**20), st.lists(st.integers(0, 300), max_size=6))
def test_a_keystream_read_in_pieces_is_the_stream(start, pieces):
    prg = Prg(bytes(range(16)))
    stream, buf = prg.keystream(9, start), np.full(300 + SPARE_WORDS, 7, np.uint64)
    got = [stream.into(buf, m).copy() for m in pieces]
    want = prg.words(9, start + sum(pieces))[start:]
    assert (np.concatenate([np.zeros(0, np.uint64), *got]) == want).all()


def test_a_keystream_refuses_a_buffer_without_room():
    with pytest.raises(ValueError, match="needs"):
        Prg(bytes(16)).keystream(0).into(np.empty(4, np.uint64), 4)
