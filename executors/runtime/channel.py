"""Channels: the only way anything passes between parties.

A `Channel` connects the parties of one federation. Each party talks through its own `Endpoint`:
`send(to, tag, payload)` and `recv(frm, tag)`, payloads always bytes (Arrow IPC for tables), so
what crosses is exactly what a network would carry. Every channel counts, per ordered pair of
parties, the messages and bytes sent; protocol tests bound both.

The in-process channel also counts the **legs on the critical path** (`ChannelStats.legs`), without
timing: each message carries a Lamport depth, its sender's clock + 1; a receiver's clock becomes the
largest depth it has received. The deepest message is the number of one-way message legs that must
follow one another, so over a link of one-way delay d a query waits at least legs × d (a round in
which all parties send, then receive, is one leg; a request and its answer are two). A party's
clock is per party, not per thread: an upper bound where one party sends from several threads.

`InProcessChannel` is the embedded runtime's channel (parties are isolated objects in one
process); a network channel implements the same interface, so one plan runs over either.
"""

from __future__ import annotations

import queue
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from sqlsecure.errors import ProtocolError

DEFAULT_TIMEOUT = 120.0


@dataclass
class ChannelStats:
    """Messages and bytes per ordered pair (src, dst); `legs`, the deepest message's Lamport depth
    (the sequential message legs on the critical path; counted by the in-process channel, 0 where
    a channel does not count it)."""

    messages: Counter = field(default_factory=Counter)
    bytes: Counter = field(default_factory=Counter)
    legs: int = 0

    def total_bytes(self) -> int:
        return sum(self.bytes.values())

    def total_messages(self) -> int:
        return sum(self.messages.values())

    def snapshot(self) -> "ChannelStats":
        return ChannelStats(Counter(self.messages), Counter(self.bytes), self.legs)

    def since(self, earlier: "ChannelStats") -> "ChannelStats":
        """Messages and bytes since `earlier`; `legs` stays the depth reached (a depth, not a sum)."""
        return ChannelStats(self.messages - earlier.messages, self.bytes - earlier.bytes, self.legs)


class Endpoint:
    """One party's side of a channel."""

    def __init__(self, channel: "Channel", party: str):
        self.channel = channel
        self.party = party

    def send(self, to: str, tag: str, payload: bytes) -> None:
        self.channel._send(self.party, to, tag, payload)

    def recv(self, frm: str, tag: str, timeout: float | None = None) -> bytes:
        return self.channel._recv(frm, self.party, tag, timeout)

    def send_table(self, to: str, tag: str, table: pa.Table) -> None:
        self.send(to, tag, table_to_bytes(table))

    def recv_table(self, frm: str, tag: str, timeout: float | None = None) -> pa.Table:
        return table_from_bytes(self.recv(frm, tag, timeout), frm)


class Channel:
    """Interface: connects parties; subclasses move the bytes."""

    def __init__(self, parties: list[str], timeout: float = DEFAULT_TIMEOUT):
        self.parties = list(parties)
        self.timeout = timeout
        self.stats = ChannelStats()
        self._lock = threading.Lock()

    def endpoint(self, party: str) -> Endpoint:
        if party not in self.parties:
            raise ProtocolError(f"no party {party!r} on this channel")
        return Endpoint(self, party)

    def _count(self, src: str, dst: str, n: int) -> None:
        with self._lock:
            self.stats.messages[(src, dst)] += 1
            self.stats.bytes[(src, dst)] += n

    def _send(self, src: str, dst: str, tag: str, payload: bytes) -> None:
        raise NotImplementedError

    def _recv(self, src: str, dst: str, tag: str, timeout: float | None) -> bytes:
        raise NotImplementedError

    def abort(self, reason: str) -> None:
        """Wake every waiting receiver with a ProtocolError (a party failed)."""


class InProcessChannel(Channel):
    """Parties in one process: a FIFO queue per ordered pair."""

    _ABORT = object()

    def __init__(self, parties: list[str], timeout: float = DEFAULT_TIMEOUT):
        super().__init__(parties, timeout)
        self._queues = {(a, b): queue.Queue() for a in self.parties for b in self.parties if a != b}
        self._aborted: str | None = None
        self._clock = dict.fromkeys(self.parties, 0)  # each party's Lamport clock (see `ChannelStats.legs`)

    def _queue(self, src: str, dst: str) -> queue.Queue:
        try:
            return self._queues[(src, dst)]
        except KeyError:
            raise ProtocolError(f"no channel from {src!r} to {dst!r}") from None

    def _send(self, src: str, dst: str, tag: str, payload: bytes) -> None:
        if not isinstance(payload, (bytes, bytearray, memoryview)):
            raise ProtocolError(f"{src!r} -> {dst!r} [{tag}]: only bytes cross a channel")
        data = bytes(payload)  # a copy: the receiver never shares the sender's buffer
        q = self._queue(src, dst)
        self._count(src, dst, len(data))
        with self._lock:
            depth = self._clock[src] + 1
            self.stats.legs = max(self.stats.legs, depth)
        q.put((tag, data, depth))

    def _recv(self, src: str, dst: str, tag: str, timeout: float | None) -> bytes:
        q = self._queue(src, dst)
        wait = self.timeout if timeout is None else timeout
        try:
            item = q.get(timeout=wait)
        except queue.Empty:
            raise ProtocolError(
                f"party {src!r} sent nothing to {dst!r} for {wait:g} s (waiting for {tag!r})"
            ) from None
        if item is self._ABORT:
            q.put(item)
            raise ProtocolError(f"query aborted while {dst!r} waited for {src!r} ({tag}): {self._aborted}")
        got, data, depth = item
        if got != tag:
            raise ProtocolError(f"party {src!r} sent {got!r} to {dst!r}, expected {tag!r}")
        with self._lock:
            self._clock[dst] = max(self._clock[dst], depth)
        return data

    def abort(self, reason: str) -> None:
        self._aborted = reason
        for q in self._queues.values():
            q.put(self._ABORT)

    def run(self, programs: dict[str, Callable[[Endpoint], Any]]) -> dict[str, Any]:
        """Run each party's program(endpoint) in a thread of its own; their results, by party. A
        failing party aborts the channel (its peers stop waiting) and its error is raised."""
        out, errors = {}, []

        def party(name: str, program) -> None:
            try:
                out[name] = program(self.endpoint(name))
            except BaseException as exc:  # noqa: BLE001 - raised below
                errors.append(exc)
                self.abort(f"{name}: {exc}")

        threads = [threading.Thread(target=party, args=item) for item in programs.items()]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        return out


def table_to_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def table_from_bytes(data: bytes, frm: str = "peer") -> pa.Table:
    try:
        return pa.ipc.open_stream(pa.py_buffer(data)).read_all()
    except pa.ArrowInvalid as exc:
        raise ProtocolError(f"malformed table from {frm!r}: {exc}") from None
