"""Run an SPU program with every compute party and the dealer as threads over one channel.

`run_spu(nparties, program)` builds an `InProcessChannel` over parties `p0..p{n-1}` plus
"dealer", starts the `Dealer` and one thread per party, and calls `program(session)` in each party
thread with that party's set-up `SpuSession`. It returns the per-party results, the channel (for
its byte and message counts) and the sessions' round counts. Any failure aborts the channel (so no
one waits forever) and the first real error is raised — the embedded runtime's discipline.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Callable

from sqlsecure.executors.runtime.channel import InProcessChannel
from sqlsecure.executors.spu.dealer import DEALER, Dealer
from sqlsecure.executors.spu.session import DEFAULT_FRAC_BITS, SpuSession


@dataclass
class SpuRun:
    results: list[Any]
    channel: InProcessChannel
    rounds: int  # rounds among compute parties after setup (same at every party)
    parties: list[str]

    def party_bytes(self) -> int:
        """Bytes between compute parties (excludes the dealer)."""
        return sum(b for (src, dst), b in self.channel.stats.bytes.items() if DEALER not in (src, dst))

    def dealer_bytes(self) -> int:
        return sum(b for (src, dst), b in self.channel.stats.bytes.items() if DEALER in (src, dst))


def run_spu(nparties: int, program: Callable[[SpuSession], Any], frac_bits: int = DEFAULT_FRAC_BITS,
            timeout: float = 120.0, measure_from_setup: bool = True, pooling: bool = True) -> SpuRun:
    parties = [f"p{i}" for i in range(nparties)]
    channel = InProcessChannel([*parties, DEALER], timeout=timeout)
    results: list[Any] = [None] * nparties
    rounds = [0] * nparties
    errors: list[BaseException] = []
    baseline: dict = {}
    ready = threading.Barrier(nparties + 1, action=lambda: baseline.update(stats=channel.stats.snapshot()))

    def party(i: int) -> None:
        try:
            session = SpuSession(channel.endpoint(parties[i]), parties, frac_bits=frac_bits, pooling=pooling)
            session.setup()
            ready.wait()
            start = session.rounds
            try:
                results[i] = program(session)
                rounds[i] = session.rounds - (start if measure_from_setup else 0)
            finally:
                session.close()
        except BaseException as exc:  # noqa: BLE001 - surfaced below
            errors.append(exc)
            ready.abort()
            channel.abort(f"{parties[i]}: {exc}")

    def dealer() -> None:
        try:
            Dealer(channel.endpoint(DEALER), parties, timeout).serve()
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
            channel.abort(f"dealer: {exc}")

    threads = [threading.Thread(target=dealer, daemon=True)]
    threads += [threading.Thread(target=party, args=(i,), daemon=True) for i in range(nparties)]
    for t in threads:
        t.start()
    try:
        ready.wait()
    except threading.BrokenBarrierError:
        pass
    for t in threads:
        t.join()
    if errors:
        real = [e for e in errors if "aborted" not in str(e)]
        raise (real or errors)[0]
    if measure_from_setup and "stats" in baseline:
        channel.stats = channel.stats.since(baseline["stats"])
    return SpuRun(results, channel, rounds[0], parties)
