"""Network mode: every party (and the SPU dealer, and the enclave driver) its own Arrow Flight service.

Transport. Each node runs a Flight server with mutual TLS: it presents its own certificate (issued
by the federation CA, naming the node) and accepts only clients whose certificate the same CA
issued; gRPC gives the server the client certificate's name, which is the caller's identity for
every authorisation decision below. Clients check the server's certificate against the CA *and*
the expected node name (TLS hostname override), so a message for `shop` reaches only `shop`.

Messages. `NetworkChannel` implements the `Channel` interface of `channel.py`. A query's messages
to one peer travel over one long-lived Flight `DoExchange` call (`PeerStream`), opened at the first
message and ended when the node's part of the query ends: each message is one metadata-only frame
(tag, payload bytes); the peer's handler accepts the stream once the query is prepared there and
the caller takes part, then puts every frame in the query's mailbox for that sender. A send returns
once gRPC has taken the frame (no round trip per message); a stream carries frames in order, so
each ordered pair stays FIFO; a refusal by the peer surfaces at the next send or when the stream is
closed, which waits until the peer has read everything. `recv` waits on the mailbox exactly as the
in-process channel does (tag checked, timeout -> `ProtocolError` naming the silent party). What a
node holds of messages not yet received is bounded per peer and per query (`HoldLimits`).

Queries. The issuer's engine (`NetworkRuntime`, authenticated with the issuer's certificate)
sends the JSON-encoded plan (`plan_codec`) to every node of the query at once (`run`: prepare,
start and a first wait in one call, so the protocol starts one round trip after the query is
issued), then `wait`s for the nodes still running. The engine and every party keep the parties'
catalogs (`PartyCatalog`, versioned by digest) and Flight clients across queries; `run` names the
versions the plan was made with, and a node that finds its own moved on answers "stale" (the engine
re-reads the catalogs and plans again). A node accepts `run` / `prepare` / `start` / `wait` /
`abort` only from the plan's issuer (an abort that overtakes the `run` marks the query ended, so the
late `run` is refused), and a message stream only (a) for a query it prepared (one that arrives
first waits, unread, for the `run`, up to the issuer's deadline for it, `registration_deadline`; at
most `WAITING_STREAMS` per peer), (b) from a node of that query, (c) while the query runs. There is
no action that reads a table: a node answers only with protocol messages its executor chooses to
send, with its schema (public), and — to the issuer alone — the issuer's own result.

Faults. A receiver waiting on a silent peer asks it every second whether it still runs the query
(`alive`): "running" or "done"; "ended" (it refused, aborted or finished the query); or "pending"
(it never heard of it: its `run` may still be queued, so the receiver keeps waiting, up to
`registration_deadline`). The answer names the answering process (`incarnation`). A node that dies
(the probe, its `wait` and any send to it fail at once), hangs (does not answer within the timeout),
ended the query or restarts (another process answers, or "pending" comes from a peer that had sent
messages; else the issuer's `wait` on it is refused) makes the query fail with a `ProtocolError`
naming it (a stream to a dead peer breaks at once; an abort cancels the node's
streams, so a send blocked on a hung peer returns); a live peer that is merely computing (a long
PSI) may stay silent; the engine then aborts the query at every other node, which wakes their
waiting receivers and drops the query's state. Nothing is revealed: the issuer's
result is only returned when every node finished cleanly.
"""

from __future__ import annotations

import datetime
import hashlib
import decimal
import json
import queue
import re
import threading
import time
import uuid
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.flight as flight

from sqlsecure import errors as error_classes
from sqlsecure.errors import ConfigError, Error, InternalError, OperationalError, ProtocolError
from sqlsecure.executors.runtime.channel import ChannelStats, InProcessChannel, table_from_bytes, table_to_bytes
from sqlsecure.executors.tee.stage import ACTOR
from sqlsecure.executors.runtime.party import contained_error
from sqlsecure.executors.runtime.plan_codec import decode_plan, encode_plan
from sqlsecure.executors.spu.dealer import DEALER
from sqlsecure.planner.physical import EnclaveStage, PhysicalPlan, SpuStep

QUERY_ID = re.compile(r"^[0-9a-f]{32}$")
POLL = 1.0  # seconds a `wait` call blocks at the node before answering "running"
PROBE_EVERY = 1.0  # seconds of silence after which a waiting receiver asks whether its peer is alive
MAX_SILENCE = 3600.0  # a live peer may compute this long without sending what is awaited
FINISHED_TTL = 300.0  # a finished query's outcome is kept this long for its issuer's `wait`
WAITING_STREAMS = 16  # message streams one peer may have waiting here for queries not yet prepared
ENDED_KEPT = 16384  # ids of queries ended here, remembered so a late probe or message is told "ended"


def registration_deadline(timeout: float) -> float:
    """How long after a query starts somewhere a node of it may still be registering it: the
    deadline of the issuer's `run` call to that node (its first wait plus the network timeout).
    Later, the issuer's call has failed and the query is being aborted."""
    return POLL + timeout


@dataclass(frozen=True)
class Identity:
    """A node's TLS material: its name, certificate chain, key, and the federation CA."""

    name: str
    certificate: bytes
    private_key: bytes
    ca: bytes

    @classmethod
    def from_config(cls, config, name: str) -> "Identity":
        node = config.nodes.get(name)
        if node is None or config.ca is None:
            raise ConfigError(f"{config.path}: {name!r} has no network address and certificate "
                              "(address, certificate, private_key, and federation.ca)")
        if node.private_key is None or not node.private_key.is_file():
            raise ConfigError(f"{config.path}: {name}.private_key: this process acts as {name!r} and needs its "
                              f"private key ({node.private_key or 'not given'})")
        return cls(name, node.certificate.read_bytes(), node.private_key.read_bytes(), config.ca.read_bytes())


class Peers:
    """Flight clients to the other nodes, authenticated as `identity`; one per peer, rebuilt after a failure.

    A client is closed only when no call uses it: gRPC must not close a channel another thread is
    calling on (a party that dies fails several threads' calls at once: the waits, the probes, the
    aborts), nor may the process exit while a call is in flight. `close` waits for the calls."""

    def __init__(self, identity: Identity, addresses: dict[str, str]):
        self.identity = identity
        self.addresses = dict(addresses)
        self._clients: dict[str, flight.FlightClient] = {}
        self._in_use: dict[int, int] = {}  # id(client) -> calls in flight on it
        self._retired: dict[int, flight.FlightClient] = {}  # forgotten, closed by their last call
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self.calls: Counter = Counter()  # (peer, action) -> RPCs made: tests bound the overhead per query

    def _acquire(self, name: str) -> flight.FlightClient:
        with self._lock:
            client = self._clients.get(name)
            if client is None:
                address = self.addresses.get(name)
                if address is None:
                    raise ProtocolError(f"no network address for {name!r} in the federation")
                client = flight.FlightClient(
                    f"grpc+tls://{address}", tls_root_certs=self.identity.ca, cert_chain=self.identity.certificate,
                    private_key=self.identity.private_key, override_hostname=name)
                self._clients[name] = client
            self._in_use[id(client)] = self._in_use.get(id(client), 0) + 1
            return client

    def _release(self, client: flight.FlightClient) -> None:
        with self._lock:
            left = self._in_use[id(client)] - 1
            if left:
                self._in_use[id(client)] = left
                return
            del self._in_use[id(client)]
            retired = self._retired.pop(id(client), None)
            self._idle.notify_all()
        if retired is not None:
            _close_client(retired)

    def forget(self, name: str) -> None:
        """Drop the client of `name` (the next call connects anew); closed now, or by its last call."""
        with self._lock:
            client = self._clients.pop(name, None)
            if client is not None and id(client) in self._in_use:
                self._retired[id(client)], client = client, None
        if client is not None:
            _close_client(client)

    def call(self, name: str, kind: str, body: bytes, timeout: float | None) -> bytes:
        """One action on node `name`; transport failures become ProtocolErrors naming it."""
        options = flight.FlightCallOptions(timeout=timeout)
        client = self._acquire(name)
        with self._lock:
            self.calls[(name, kind)] += 1
        try:
            results = list(client.do_action(flight.Action(kind, body), options=options))
        except flight.FlightError as exc:
            raise self.failure(name, kind, exc, timeout) from None
        finally:
            self._release(client)
        return b"".join(r.body.to_pybytes() for r in results)

    def failure(self, name: str, kind: str, exc: flight.FlightError, timeout: float | None) -> ProtocolError:
        """A transport failure of a call to `name` as a ProtocolError naming it; a broken client is
        dropped (the next call connects anew), a refusal keeps it."""
        if isinstance(exc, flight.FlightUnauthorizedError):
            return ProtocolError(f"party {name!r} refused {kind}: {_detail(exc)}")
        self.forget(name)
        if isinstance(exc, (flight.FlightTimedOutError, flight.FlightCancelledError)):
            waited = f"within {timeout:g} s " if timeout is not None else ""
            return ProtocolError(f"party {name!r} did not answer {waited}({kind}); it may hang or be overloaded")
        if isinstance(exc, flight.FlightUnavailableError):
            return ProtocolError(f"party {name!r} is unreachable at {self.addresses.get(name)} ({kind}): "
                                 f"{_first_line(exc)}")
        return ProtocolError(f"party {name!r} failed on {kind}: {_detail(exc)}")

    def open_stream(self, name: str, query_id: str) -> "PeerStream":
        """A long-lived `DoExchange` to `name` carrying one query's messages. It does not wait for
        `name`: the first message follows the call's opening at once (no extra round trip), and a
        refusal (the query is not prepared there, this node takes no part) surfaces at a later send
        or at the stream's close."""
        client = self._acquire(name)
        with self._lock:
            self.calls[(name, "exchange")] += 1
        try:
            writer, reader = client.do_exchange(flight.FlightDescriptor.for_command(query_id.encode("ascii")))
        except flight.FlightError as exc:
            self._release(client)
            raise self.failure(name, "exchange", exc, None) from None
        return PeerStream(self, name, client, writer, reader)

    def call_each(self, names: list[str], kind: str, bodies: dict[str, bytes] | bytes,
                  timeout: float | None) -> dict[str, bytes | BaseException]:
        """The same action on every node of `names` at once (one round trip, not one per node): each
        node's answer, or the exception its call raised."""
        def one(name: str):
            body = bodies[name] if isinstance(bodies, dict) else bodies
            try:
                return self.call(name, kind, body, timeout)
            except BaseException as exc:  # noqa: BLE001 - returned to the caller, which decides
                return exc

        if len(names) == 1:
            return {names[0]: one(names[0])}
        with ThreadPoolExecutor(max_workers=len(names)) as pool:
            return dict(zip(names, pool.map(one, names)))

    def close(self, wait: float = 30.0) -> None:
        """Close every client, first waiting (up to `wait` s; each call has its own deadline) for the
        calls in flight, so none runs into a closed channel or into the process's exit."""
        for name in list(self._clients):
            self.forget(name)
        with self._lock:
            self._idle.wait_for(lambda: not self._in_use, timeout=wait)


class PeerStream:
    """One query's messages from this node to one peer, over one `DoExchange` call: each message is a
    metadata-only Flight frame, `tag \\n payload`. Writes are ordered (one lock), so each ordered pair
    stays FIFO; a write returns once gRPC has taken the frame, and a refusal by the peer surfaces at
    the next write or at `close`, which waits until the peer has read every frame."""

    def __init__(self, peers: Peers, peer: str, client: flight.FlightClient, writer, reader):
        self.peers, self.peer = peers, peer
        self._client, self._writer, self._reader = client, writer, reader
        self._lock = threading.Lock()  # one write (or the close) at a time
        self._end_lock = threading.Lock()
        self._ended = False

    def send(self, tag: str, payload: bytes) -> None:
        frame = tag.encode("utf-8") + b"\n" + payload
        with self._lock:
            if self._ended:
                raise ProtocolError(f"the message stream to {self.peer!r} is closed ({tag})")
            try:
                self._writer.write_metadata(pa.py_buffer(frame))
            except flight.FlightError as exc:
                self.end()
                raise self.peers.failure(self.peer, f"exchange, at message {tag}", exc, None) from None

    def close(self) -> None:
        """End the stream cleanly: every frame was read by the peer, or its refusal is raised."""
        with self._lock:
            if self._ended:
                return
            try:
                self._writer.done_writing()
                while True:
                    self._reader.read_chunk()
            except StopIteration:
                self._writer.close()
            except flight.FlightError as exc:
                raise self.peers.failure(self.peer, "exchange, at its end", exc, None) from None
            finally:
                self.end()

    def cancel(self) -> None:
        """Break the call at once (a failed or aborted query): a write blocked on a hung peer returns."""
        try:
            self._reader.cancel()
        except Exception:  # already ended
            pass

    def end(self) -> None:
        """Release the call's client (once): `Peers.close` waits for its last user."""
        with self._end_lock:
            if self._ended:
                return
            self._ended = True
        self.cancel()
        try:
            self._writer.close()
        except Exception:  # cancelled or already closed: nothing to report
            pass
        self.peers._release(self._client)


def _close_client(client: flight.FlightClient) -> None:
    try:
        client.close()
    except Exception:  # closing a broken connection; nothing to report
        pass


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _detail(exc: BaseException) -> str:
    text = _first_line(exc)
    return text.split("Detail:")[0].rstrip(". ") if "Detail:" in text else text


@dataclass(frozen=True)
class HoldLimits:
    """What a node holds of one query's messages that arrived before its executor asked for them
    (`federation.network_hold_*`): bytes and messages from one peer, and from all peers together.
    Beyond, the query fails with a ProtocolError (a peer that floods a node cannot exhaust its
    memory). Defaults leave room for the largest protocol message of 10^6-row stages."""

    peer_bytes: int = 512 << 20
    peer_messages: int = 4096
    query_bytes: int = 1 << 30
    query_messages: int = 16384

    @classmethod
    def from_config(cls, config) -> "HoldLimits":
        return cls(**config.network_hold)


class NetworkChannel(InProcessChannel):
    """One query's channel at one node: sends go over one long-lived stream per peer (`PeerStream`);
    the node's server fills the mailboxes, holding at most `limits` of messages not yet received."""

    def __init__(self, me: str, participants: list[str], query_id: str, peers: Peers, timeout: float,
                 limits: HoldLimits = HoldLimits()):
        super().__init__(participants, timeout)
        self.me = me
        self.query_id = query_id
        self.limits = limits
        self._peers = peers
        self._streams: dict[str, PeerStream] = {}
        self._streams_lock = threading.Lock()
        self._opening: dict[str, threading.Lock] = {p: threading.Lock() for p in self.parties}
        self._held_bytes: Counter = Counter()  # by sender: bytes delivered here, not yet received
        self._held_messages: Counter = Counter()
        self._held_lock = threading.Lock()
        self._heard_from: set[str] = set()  # peers a message arrived from: they had registered the query
        self._incarnations: dict[str, str] = {}  # peer -> the process that first answered a probe
        self._opened_at = time.monotonic()

    def _send(self, src: str, dst: str, tag: str, payload: bytes) -> None:
        if src != self.me:
            raise ProtocolError(f"{self.me!r} cannot send as {src!r}")
        if dst not in self.parties or dst == src:
            raise ProtocolError(f"no channel from {src!r} to {dst!r}")
        if not isinstance(payload, (bytes, bytearray, memoryview)):
            raise ProtocolError(f"{src!r} -> {dst!r} [{tag}]: only bytes cross a channel")
        if "\n" in tag:
            raise ProtocolError(f"tag {tag!r} contains a newline")
        self._raise_if_aborted()
        data = bytes(payload)
        stream = self._stream(dst)
        self._count(src, dst, len(data))
        try:
            stream.send(tag, data)
        except ProtocolError:
            self._raise_if_aborted()  # our own abort cancelled the stream: that, not the peer, is the cause
            raise

    def _raise_if_aborted(self) -> None:
        if self._aborted is not None:
            raise ProtocolError(f"query aborted: {self._aborted}") from None

    def _stream(self, peer: str) -> PeerStream:
        """The query's stream to `peer`, opened at the first message to it."""
        with self._opening[peer]:
            stream = self._streams.get(peer)
            if stream is None:
                stream = self._peers.open_stream(peer, self.query_id)
                with self._streams_lock:
                    if self._aborted is not None:
                        stream.end()
                        self._raise_if_aborted()
                    self._streams[peer] = stream
            return stream

    def finish(self) -> None:
        """The node's part ended cleanly: close every stream once the peers have read all of it (a
        refusal by a peer is raised here)."""
        with self._streams_lock:
            streams = list(self._streams.values())
        try:
            for stream in streams:
                stream.close()
        except ProtocolError:
            self._raise_if_aborted()
            raise

    def release(self) -> None:
        """Drop every stream (after `finish`, or on failure): their clients go back to `Peers`."""
        with self._streams_lock:
            streams, self._streams = list(self._streams.values()), {}
        for stream in streams:
            stream.end()

    def abort(self, reason: str) -> None:
        super().abort(reason)
        with self._streams_lock:
            streams = list(self._streams.values())
        for stream in streams:  # a write blocked on a hung peer returns
            stream.cancel()

    def _recv(self, src: str, dst: str, tag: str, timeout: float | None) -> bytes:
        """Wait for `src`'s next message, probing it every `PROBE_EVERY` s while it is silent: a peer
        that is gone, hangs (does not answer within the channel's timeout), restarted, or ended this
        query fails the wait at once, naming it; a live peer that is still computing, or has not yet
        registered the query (`_probe`), may stay silent up to `timeout` if given, else `MAX_SILENCE`."""
        q = self._queue(src, dst)
        limit = MAX_SILENCE if timeout is None else timeout
        deadline = time.monotonic() + limit
        while True:
            try:
                item = q.get(timeout=max(0.0, min(PROBE_EVERY, deadline - time.monotonic())))
                break
            except queue.Empty:
                if time.monotonic() >= deadline:
                    raise ProtocolError(f"party {src!r} sent nothing to {dst!r} for {limit:g} s "
                                        f"(waiting for {tag!r})") from None
                if self._aborted is None and self._probe(src, tag) == "done" and q.empty():
                    raise ProtocolError(f"party {src!r} finished without sending {tag!r} to {dst!r}")
        if item is self._ABORT:
            q.put(item)
            raise ProtocolError(f"query aborted while {dst!r} waited for {src!r} ({tag}): {self._aborted}")
        got, data = item
        with self._held_lock:
            self._held_bytes[src] -= len(data)
            self._held_messages[src] -= 1
        if got != tag:
            raise ProtocolError(f"party {src!r} sent {got!r} to {dst!r}, expected {tag!r}")
        return data

    def _probe(self, peer: str, tag: str) -> str:
        """'running', 'pending' (not registered there yet: its `run` may still be on its way) or
        'done'. Raises, naming the peer, if it is gone, hangs, ended the query, restarted (another
        process answers, or it never heard of a query it sent messages of), or is still pending past
        the issuer's deadline for its `run` (`registration_deadline`)."""
        body = json.dumps({"query": self.query_id}).encode()
        try:
            answer = json.loads(self._peers.call(peer, "alive", body, self.timeout).decode())
        except ProtocolError as exc:
            raise ProtocolError(f"while {self.me!r} waited for {tag!r}: {exc}") from None
        answer = answer if isinstance(answer, dict) else {}
        state = answer.get("state")
        if self._incarnations.setdefault(peer, answer.get("incarnation")) != answer.get("incarnation") or (
                state == "pending" and peer in self._heard_from):
            raise ProtocolError(f"party {peer!r} restarted and no longer runs this query while {self.me!r} "
                                f"waited for {tag!r}")
        if state == "pending":
            return self._still_pending(peer, tag)
        if state not in ("running", "done", "ended"):
            raise ProtocolError(f"party {peer!r} gave a malformed answer to the liveness probe while {self.me!r} "
                                f"waited for {tag!r}")
        if state == "ended":
            raise ProtocolError(f"party {peer!r} ended this query (finished, failed or aborted it) while "
                                f"{self.me!r} waited for {tag!r}")
        return state

    def _still_pending(self, peer: str, tag: str) -> str:
        """A peer that has not registered the query yet is waited for, up to the issuer's deadline
        for registering it there."""
        deadline = registration_deadline(self.timeout)
        if time.monotonic() - self._opened_at > deadline:
            raise ProtocolError(f"party {peer!r} has not registered this query {deadline:g} s after it started at "
                                f"{self.me!r}, which waited for {tag!r}: the issuer's run never reached it")
        return "pending"

    def deliver(self, src: str, tag: str, data: bytes) -> None:
        """A message from `src` arrived at this node (called by the server): held until received,
        within `limits`; beyond them the query fails here (and the stream refuses the message)."""
        q = self._queue(src, self.me)
        with self._held_lock:
            over = self._over_limits(src, len(data))
            if over is None:
                self._heard_from.add(src)
                self._held_bytes[src] += len(data)
                self._held_messages[src] += 1
                q.put((tag, data))
        if over is not None:
            reason = (f"{self.me!r} holds too much of query {self.query_id} not yet received: {over} "
                      f"(message {tag!r} from {src!r}); raise federation.network_hold_* if the protocol needs it")
            self.abort(reason)
            raise ProtocolError(reason)

    def _over_limits(self, src: str, size: int) -> str | None:
        """Which hold limit one more message of `size` bytes from `src` breaks (under the lock)."""
        limits = self.limits
        checks = ((self._held_bytes[src] + size, limits.peer_bytes, f"bytes from {src!r}", "peer_bytes"),
                  (self._held_messages[src] + 1, limits.peer_messages, f"messages from {src!r}", "peer_messages"),
                  (sum(self._held_bytes.values()) + size, limits.query_bytes, "bytes from all peers", "query_bytes"),
                  (sum(self._held_messages.values()) + 1, limits.query_messages, "messages from all peers",
                   "query_messages"))
        for held, limit, what, key in checks:
            if held > limit:
                return f"{held} {what} > {limit} (network_hold_{key})"
        return None


def split_frame(metadata) -> tuple[str, bytes]:
    """(tag, payload) of one frame of a message stream."""
    try:
        tag, payload = metadata.to_pybytes().split(b"\n", 1)
        return tag.decode("utf-8"), payload
    except (AttributeError, ValueError, UnicodeDecodeError):
        raise flight.FlightServerError("malformed protocol message") from None


# --------------------------------------------------------------------------------------------- node


@dataclass
class QueryState:
    query_id: str
    issuer: str
    plan: PhysicalPlan
    channel: NetworkChannel | None
    started: bool = False
    done: threading.Event = field(default_factory=threading.Event)
    result: pa.Table | None = None
    error: BaseException | None = None
    finished_at: float = 0.0


class EndedQueries:
    """The ids of the last `keep` queries ended here (refused, aborted, finished and collected), so
    that a late probe, message stream or `run` for one is told it ended rather than taken as new."""

    def __init__(self, keep: int = ENDED_KEPT):
        self._order: deque[str] = deque()
        self._ids: set[str] = set()
        self._keep = keep

    def add(self, query_id: str) -> None:
        if query_id in self._ids:
            return
        self._order.append(query_id)
        self._ids.add(query_id)
        if len(self._order) > self._keep:
            self._ids.discard(self._order.popleft())

    def __contains__(self, query_id: str) -> bool:
        return query_id in self._ids


class StaleCatalog(ProtocolError):
    """The issuer planned with a catalog version of a party that is no longer current: the issuer
    refreshes those parties' catalogs and plans again (`Engine.execute`, by `stale_parties`)."""

    def __init__(self, parties: list[str]):
        super().__init__(f"the catalog of {', '.join(sorted(parties))} changed since this engine read it; "
                         "refresh it and plan again")
        self.stale_parties = sorted(parties)


class Node(flight.FlightServerBase):
    """One node's Flight service. `role(plan, query_id, endpoint)` runs the node's part of a plan
    (a party's executor, the dealer, the enclave driver) and returns the node's result or None;
    `catalog()` returns the party's public catalog: its schema, its tables' row counts rounded up to a
    power of two, and the version (a digest) of both (None for actors)."""

    def __init__(self, identity: Identity, host: str, port: int, addresses: dict[str, str], role,
                 catalog=None, timeout: float = 30.0, accepts=None, calls=None, limits: HoldLimits = HoldLimits()):
        self.identity = identity
        self.limits = limits
        self.name = identity.name
        self.peers = Peers(identity, addresses)
        self.known = frozenset(addresses)
        self.timeout = timeout
        self._role = role
        self._catalog = catalog
        self._calls = calls  # calls() -> Counters of this node's other clients' RPCs (its planning engine)
        self._accepts = accepts  # accepts(plan, header) -> str | None (why not); raises StaleCatalog
        self._queries: dict[str, QueryState] = {}
        self._lock = threading.Lock()
        self._registered = threading.Condition(self._lock)  # a query was prepared or refused here
        self._ended = EndedQueries()  # queries refused, aborted or finished here
        self.incarnation = uuid.uuid4().hex  # this process: a peer that sees it change knows we restarted
        self._waiting: Counter = Counter()  # peer -> its message streams waiting for a query's `run`
        super().__init__(f"grpc+tls://{host}:{port}",
                         tls_certificates=[flight.CertKeyPair(identity.certificate, identity.private_key)],
                         verify_client=True, root_certificates=identity.ca)

    # --- helpers

    def _caller(self, context) -> str:
        caller = context.peer_identity().decode("utf-8", "replace")
        if caller not in self.known:
            raise flight.FlightUnauthorizedError(f"{caller!r} is not a member of this federation")
        return caller

    def _state(self, query_id: str, caller: str, *, issuer_only: bool) -> QueryState:
        with self._lock:
            state = self._queries.get(query_id)
        if state is None:
            raise flight.FlightUnauthorizedError(f"{self.name} runs no query {query_id!r}")
        if issuer_only and caller != state.issuer:
            raise flight.FlightUnauthorizedError(f"only the issuer {state.issuer!r} may control query {query_id}")
        if not issuer_only:
            channel = state.channel
            if channel is None or caller == self.name or caller not in channel.parties:
                raise flight.FlightUnauthorizedError(f"{caller!r} takes no part in query {query_id} here")
        return state

    def _drop(self, query_id: str) -> None:
        with self._lock:
            self._queries.pop(query_id, None)
            self._end(query_id)

    def _end(self, query_id: str) -> None:
        """Under the lock: `query_id` will not run here; wake the messages waiting for it."""
        self._ended.add(query_id)
        self._registered.notify_all()

    def _await_prepared(self, query_id: str, caller: str) -> None:
        """A peer's message stream may reach a node before the issuer's `run` does (every node starts as
        soon as it has accepted the query; under load a `run` may sit queued): it waits, unread, until
        the query is prepared or ends here, up to the issuer's deadline for that `run`
        (`registration_deadline`); at most WAITING_STREAMS per peer wait at once."""
        with self._lock:
            if query_id in self._queries:
                return
            if self._waiting[caller] >= WAITING_STREAMS:
                raise flight.FlightUnauthorizedError(
                    f"{caller!r} has {WAITING_STREAMS} message streams waiting at {self.name} for queries "
                    "not prepared here")
            self._waiting[caller] += 1
            try:
                self._registered.wait_for(lambda: query_id in self._queries or query_id in self._ended,
                                          timeout=registration_deadline(self.timeout))
            finally:
                self._waiting[caller] -= 1

    def _sweep(self) -> None:
        now = time.monotonic()
        with self._lock:
            for qid in [q for q, s in self._queries.items() if s.done.is_set() and now - s.finished_at > FINISHED_TTL]:
                del self._queries[qid]
                self._end(qid)

    def calls_made(self) -> dict[str, int]:
        """RPCs this node has made, by action: what a test bounds per query (the fixed overhead)."""
        total = Counter()
        for counter in [self.peers.calls, *(self._calls() if self._calls else [])]:
            for (_, kind), n in list(counter.items()):
                total[kind] += n
        return dict(total)

    def active_queries(self) -> list[str]:
        with self._lock:
            return sorted(self._queries)

    # --- Flight

    def list_actions(self, context):
        return [("run", "prepare and start a query at once: header line + JSON plan (issuer only)"),
                ("prepare", "register a query: header line + JSON plan (issuer only)"),
                ("start", "start a prepared query (issuer only)"),
                ("wait", "the node's outcome of a query (issuer only)"),
                ("abort", "abandon a query and drop its state (issuer only)"),
                ("alive", "whether this node runs a query: running or done (its nodes only), ended, or pending"),
                ("catalog", "this party's public schema, sizes, magnitude classes and their version"),
                ("schema", "this party's public schema"),
                ("sizes", "this party's table sizes, rounded up to a power of two"),
                ("status", "the queries this node holds state for, and the RPCs it made by action")]

    def do_action(self, context, action):
        caller = self._caller(context)
        body = action.body.to_pybytes() if action.body is not None else b""
        kind = action.type
        try:
            if kind == "prepare":
                try:
                    return self._prepare(caller, body)
                except StaleCatalog as exc:
                    raise flight.FlightUnauthorizedError(str(exc)) from None
            if kind == "run":
                return self._run(caller, body)
            if kind in ("start", "wait", "abort"):
                header = json.loads(body.decode())
                query_id = header.get("query") if isinstance(header, dict) else None
                if not isinstance(query_id, str) or not QUERY_ID.match(query_id):
                    raise flight.FlightServerError("malformed query id")
                if kind == "abort" and self._end_unknown(query_id):
                    return [b"ok"]
                state = self._state(query_id, caller, issuer_only=True)
                if kind == "start":
                    return self._start(state)
                if kind == "abort":
                    if state.channel is not None:
                        state.channel.abort(str(header.get("reason", "aborted by the issuer"))[:500])
                    self._drop(query_id)
                    return [b"ok"]
                return self._wait(state, float(header.get("wait", POLL)))
            if kind == "alive":
                header = json.loads(body.decode())
                query_id = header.get("query") if isinstance(header, dict) else None
                if not isinstance(query_id, str) or not QUERY_ID.match(query_id):
                    raise flight.FlightServerError("malformed query id")
                return [json.dumps({"state": self._liveness(query_id, caller),
                                    "incarnation": self.incarnation}).encode()]
            if kind in ("catalog", "schema", "sizes"):
                catalog = self._catalog() if self._catalog else {"schema": {}, "sizes": {}, "version": ""}
                return [json.dumps(catalog if kind == "catalog" else catalog[kind]).encode()]
            if kind == "status":
                return [json.dumps({"queries": self.active_queries(), "calls": self.calls_made()}).encode()]
        except (ProtocolError, ValueError, UnicodeDecodeError) as exc:
            raise flight.FlightServerError(f"{kind}: {exc}") from None
        raise flight.FlightServerError(f"unknown action {kind!r}")

    def do_exchange(self, context, descriptor, reader, writer):
        """A peer's message stream for one query (`PeerStream`): read once the query is prepared here
        and the caller takes part in it (refused otherwise); then every frame goes to the query's
        mailbox for the caller, until the caller ends the stream. Nothing is ever written back."""
        caller = self._caller(context)
        query_id = (descriptor.command or b"").decode("ascii", "replace")
        if not QUERY_ID.match(query_id):
            raise flight.FlightServerError("malformed query id")
        self._await_prepared(query_id, caller)
        state = self._state(query_id, caller, issuer_only=False)
        self._check_running(state)
        for chunk in reader:
            tag, payload = split_frame(chunk.app_metadata)
            channel = self._check_running(state)
            try:
                channel.deliver(caller, tag, payload)
            except ProtocolError as exc:
                raise flight.FlightServerError(str(exc)) from None

    def _liveness(self, query_id: str, caller: str) -> str:
        """What a probe learns of a query here: 'running' or 'done' (to its nodes only), 'ended'
        (refused, aborted or finished and collected), or 'pending' (never heard of: its `run` may
        still be on its way, or this node restarted since, which the prober tells by `incarnation`)."""
        with self._lock:
            state = self._queries.get(query_id)
            if state is None or state.channel is None:
                return "ended" if query_id in self._ended else "pending"
        self._state(query_id, caller, issuer_only=False)  # participants only
        return "done" if state.done.is_set() else "running"

    def _end_unknown(self, query_id: str) -> bool:
        """An abort that overtook the query's `run`: remember the query as ended, so that the late
        `run` is refused and the streams and probes waiting for it are told at once."""
        with self._lock:
            if query_id in self._queries:
                return False
            self._end(query_id)
            return True

    def _check_running(self, state: QueryState) -> NetworkChannel:
        """The channel of a query that is still prepared or running here (a prepared query queues
        early messages); one that finished, was aborted or dropped takes no more."""
        with self._lock:
            current = self._queries.get(state.query_id) is state
        channel = state.channel
        if not current or channel is None or state.done.is_set():
            raise flight.FlightUnauthorizedError(f"query {state.query_id} is not running at {self.name}")
        return channel

    def _prepare(self, caller: str, body: bytes):
        self._sweep()
        line, _, plan_bytes = body.partition(b"\n")
        header = json.loads(line.decode())
        query_id, participants = header.get("query"), header.get("participants")
        if not isinstance(query_id, str) or not QUERY_ID.match(query_id):
            raise flight.FlightServerError("malformed query id")
        if (not isinstance(participants, list) or not all(isinstance(p, str) for p in participants)
                or self.name not in participants or not set(participants) <= self.known):
            raise flight.FlightServerError(f"participants must be federation members including {self.name!r}")
        plan = decode_plan(plan_bytes, PhysicalPlan)
        if caller != plan.issuer:
            raise flight.FlightUnauthorizedError(f"{caller!r} is not the issuer of this plan ({plan.issuer!r})")
        expected = set(plan.parties) | ({DEALER} if any(isinstance(s, SpuStep) for s in plan.steps) else set()) \
            | ({ACTOR} if any(isinstance(s, EnclaveStage) for s in plan.steps) else set())
        if set(participants) != expected:
            raise flight.FlightServerError(f"participants {sorted(participants)} do not match the plan's "
                                           f"{sorted(expected)}")
        try:
            why_not = self._accepts(plan, header) if self._accepts else None
        except StaleCatalog:
            self._refuse(query_id)
            raise
        if why_not:
            self._refuse(query_id)
            raise flight.FlightUnauthorizedError(why_not)
        timeout = header.get("timeout", self.timeout)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= 86400:
            raise flight.FlightServerError("malformed timeout")
        channel = NetworkChannel(self.name, sorted(participants), query_id, self.peers, float(timeout), self.limits)
        with self._lock:
            if query_id in self._queries:
                raise flight.FlightServerError(f"query {query_id} already exists")
            if query_id in self._ended:
                raise flight.FlightUnauthorizedError(f"query {query_id} already ended at {self.name} "
                                                     "(aborted before its run arrived)")
            self._queries[query_id] = QueryState(query_id, caller, plan, channel)
            self._registered.notify_all()
        return [b"ok"]

    def _refuse(self, query_id: str) -> None:
        with self._lock:
            if query_id not in self._queries:
                self._end(query_id)

    def _run(self, caller: str, body: bytes):
        """`prepare`, `start` and a first `wait` in one call: the issuer's only round trip before the
        protocol starts, and a short query's outcome comes back on it. A stale catalog is an answer
        (the issuer plans again), not a failure."""
        header = json.loads(body.partition(b"\n")[0].decode())
        wait = header.get("wait", 0.0) if isinstance(header, dict) else None
        if isinstance(wait, bool) or not isinstance(wait, (int, float)):
            raise flight.FlightServerError("malformed run header or wait")
        try:
            self._prepare(caller, body)
        except StaleCatalog as exc:
            return [json.dumps({"state": "stale", "parties": exc.stale_parties}).encode() + b"\n"]
        state = self._state(header["query"], caller, issuer_only=True)
        self._start(state)
        return self._wait(state, float(wait))

    def _start(self, state: QueryState):
        with self._lock:
            if state.started:
                raise flight.FlightServerError(f"query {state.query_id} already started")
            state.started = True

        def run() -> None:
            channel = state.channel
            try:
                state.result = self._role(state.plan, state.query_id, channel.endpoint(self.name))
                channel.finish()  # every message sent was taken by its peer
            except BaseException as exc:  # reported to the issuer by `wait`: class and public message only
                state.error = contained_error(self.name, exc, state.issuer)
                channel.abort(f"{self.name} failed: {state.error}")
            finally:
                channel.release()
                state.finished_at = time.monotonic()
                state.done.set()

        threading.Thread(target=run, name=f"{self.name}-{state.query_id[:8]}", daemon=True).start()
        return [b"ok"]

    def _wait(self, state: QueryState, wait: float):
        if not state.done.wait(max(0.0, min(wait, 30.0))):
            return [json.dumps({"state": "running"}).encode() + b"\n"]
        stats = [[s, d, state.channel.stats.messages[(s, d)], n] for (s, d), n in state.channel.stats.bytes.items()]
        self._drop(state.query_id)
        state.channel = None  # the mailboxes go with it
        header = {"state": "done" if state.error is None else "failed", "stats": stats}
        if state.error is not None:
            header["error"] = str(state.error)
            header["type"] = type(state.error).__name__
            if getattr(state.error, "private_detail", None):  # the issuer's own data: to the issuer alone
                header["detail"] = state.error.private_detail
            return [json.dumps(header).encode() + b"\n"]
        payload = b""
        if self.name == state.issuer and state.result is not None:
            payload = table_to_bytes(state.result)
        return [json.dumps(header).encode() + b"\n" + payload]

    def close(self) -> None:
        with self._lock:
            states = list(self._queries.values())
            self._queries.clear()
        for state in states:
            if state.channel is not None:
                state.channel.abort(f"{self.name} is shutting down")
        self.peers.close(wait=self.timeout)
        self.shutdown()


# ------------------------------------------------------------------------------------ the issuer


def _error_from(name: str, header: dict) -> Error:
    cls = getattr(error_classes, str(header.get("type")), None)
    if not (isinstance(cls, type) and issubclass(cls, Error)):
        cls = InternalError
    text = str(header.get("error", "failed"))
    error = cls(text if name in text else f"at {name}: {text}")
    if isinstance(header.get("detail"), str):  # sent only by the issuer's own node, about its own data
        error.private_detail = header["detail"]
    return error


def encode_parameters(values) -> list:
    """Query parameters as typed JSON, so a party re-derives exactly the issuer's plan."""
    out = []
    for v in values:
        if v is None or isinstance(v, (bool, int, float, str)):
            out.append(["v", v])
        elif isinstance(v, bytes):
            out.append(["bytes", v.hex()])
        elif isinstance(v, decimal.Decimal):
            out.append(["decimal", str(v)])
        elif isinstance(v, datetime.datetime):
            out.append(["timestamp", v.isoformat()])
        elif isinstance(v, datetime.date):
            out.append(["date", v.isoformat()])
        elif isinstance(v, datetime.time):
            out.append(["time", v.isoformat()])
        else:
            raise ProtocolError(f"cannot send a parameter of type {type(v).__name__}")
    return out


def decode_parameters(items) -> list:
    readers = {"v": lambda x: x, "bytes": bytes.fromhex, "decimal": decimal.Decimal,
               "timestamp": datetime.datetime.fromisoformat, "date": datetime.date.fromisoformat,
               "time": datetime.time.fromisoformat}
    if not isinstance(items, list) or not all(isinstance(i, list) and len(i) == 2 and i[0] in readers for i in items):
        raise ProtocolError("malformed query parameters")
    return [readers[kind](value) for kind, value in items]


@dataclass(frozen=True)
class PartyCatalog:
    """A party's published catalog: table -> columns, table -> rows rounded up to a power of two, table ->
    numeric column -> its magnitude class (M: every |value| < 2^M, planner/magnitudes.py), and the version
    (digest of all three) that every prepare names, so that a change of any is seen at once."""

    schema: dict[str, tuple[tuple[str, str], ...]]
    sizes: dict[str, int]
    version: str
    classes: dict[str, dict[str, int]] = field(default_factory=dict)

    @classmethod
    def of(cls, schema: dict, sizes: dict, classes: dict | None = None) -> "PartyCatalog":
        schema = {str(t): tuple((str(c), str(d)) for c, d in cols) for t, cols in sorted(schema.items())}
        sizes = {str(t): int(n) for t, n in sorted(sizes.items())}
        classes = {str(t): {str(c): _class_bits(m) for c, m in sorted(cols.items())}
                   for t, cols in sorted((classes or {}).items()) if cols}
        text = json.dumps([sorted(schema.items()), sorted(sizes.items()), sorted(classes.items())]).encode()
        return cls(schema, sizes, hashlib.sha256(text).hexdigest()[:16], classes)

    @classmethod
    def from_json(cls, party: str, raw: bytes) -> "PartyCatalog":
        try:
            body = json.loads(raw.decode())
            catalog = cls.of(body["schema"], body["sizes"], body.get("classes"))
        except (ValueError, KeyError, TypeError, AttributeError):
            raise ProtocolError(f"party {party!r} sent a malformed catalog") from None
        if catalog.version != body.get("version"):
            raise ProtocolError(f"party {party!r} sent a catalog whose version does not match its content")
        return catalog

    def to_json(self) -> dict:
        return {"schema": self.schema, "sizes": self.sizes, "classes": self.classes, "version": self.version}


def _class_bits(value) -> int:
    """A published magnitude class: an integer (ValueError otherwise, so a malformed catalog is refused)."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"a magnitude class is an integer, not {value!r}")
    return value


class RunReplies:
    """The first answers (to `run`) of a query's nodes, to tell whether one of them found the issuer's
    catalog stale."""

    def __init__(self, nodes: int):
        self._left = nodes
        self._stale = False
        self._all = threading.Condition()

    def arrived(self, raw: bytes) -> None:
        """A node answered `run` with `raw` (empty if the call failed)."""
        try:
            state = json.loads(raw.partition(b"\n")[0].decode()).get("state") if raw else None
        except (ValueError, AttributeError):
            state = None
        with self._all:
            self._left -= 1
            self._stale = self._stale or state == "stale"
            self._all.notify_all()

    def any_stale(self, wait: float) -> bool:
        """Whether a node answered "stale", once every node answered (or `wait` s passed)."""
        with self._all:
            self._all.wait_for(lambda: self._left <= 0, timeout=wait)
            return self._stale


class NetworkRuntime:
    """The issuer's side of network mode: sends the plan to every node of the query and collects
    the issuer's result. Same interface as `EmbeddedRuntime` (execute, cancel, last_stats, close)."""

    def __init__(self, config, identity: str, timeout: float | None = None):
        self.identity = Identity.from_config(config, identity)
        self.issuer = identity
        self.timeout = float(timeout if timeout is not None else config.network_timeout)
        self.peers = Peers(self.identity, {name: node.address for name, node in config.nodes.items()})
        self.last_stats = ChannelStats()
        self.progress = None  # not reported in network mode
        self._running: tuple[str, list[str]] | None = None
        self._cancelled = False
        self._lock = threading.Lock()
        self._catalogs: dict[str, PartyCatalog] = {}  # kept across queries; refreshed when a version changes
        self.rounds_before_start = 0  # round trips of the last query before its protocol started

    def refresh(self, parties: list[str]) -> None:
        """Ask these parties for their catalog (schema, sizes, version), all at once."""
        for party, answer in self.peers.call_each(list(parties), "catalog", b"", self.timeout).items():
            if isinstance(answer, BaseException):
                raise answer
            self._catalogs[party] = PartyCatalog.from_json(party, answer)

    def schemas(self, parties: list[str]) -> dict[str, dict[str, list[tuple[str, str]]]]:
        """Each party's public schema, from the cached catalogs (read once, refreshed on a version change)."""
        missing = [p for p in parties if p not in self._catalogs]
        if missing:
            self.refresh(missing)
        return {party: {t: list(cols) for t, cols in self._catalogs[party].schema.items()} for party in parties}

    def sizes(self, party: str) -> dict[str, int]:
        """A party's table sizes (rounded up to a power of two), from its cached catalog."""
        if party not in self._catalogs:
            self.refresh([party])
        return dict(self._catalogs[party].sizes)

    def magnitudes(self, party: str, table: str, columns: tuple[str, ...]) -> dict[str, int]:
        """The magnitude classes a party publishes of these columns of its table, from its cached catalog."""
        if party not in self._catalogs:
            self.refresh([party])
        published = self._catalogs[party].classes.get(table, {})
        return {c: published[c] for c in columns if c in published}

    def versions(self, parties) -> dict[str, str]:
        """The catalog version of each party this engine plans with."""
        return {party: self._catalogs[party].version for party in parties if party in self._catalogs}

    def status(self, name: str) -> list[str]:
        return json.loads(self.peers.call(name, "status", b"", self.timeout).decode())["queries"]

    def execute(self, plan: PhysicalPlan, query: tuple[str, list] | None = None) -> pa.Table:
        with self._lock:
            return self._execute(plan, query)

    def _execute(self, plan: PhysicalPlan, query: tuple[str, list] | None = None) -> pa.Table:
        if plan.issuer != self.issuer:
            raise ProtocolError(f"this engine acts as {self.issuer!r} and cannot issue a query as {plan.issuer!r}")
        participants = sorted(plan.parties)
        if any(isinstance(s, SpuStep) for s in plan.steps):
            participants.append(DEALER)
        if any(isinstance(s, EnclaveStage) for s in plan.steps):
            participants.append(ACTOR)
        query_id = uuid.uuid4().hex
        sql, parameters = query if query is not None else (None, [])
        header = json.dumps({"query": query_id, "participants": participants, "timeout": self.timeout,
                             "sql": sql, "parameters": encode_parameters(parameters),
                             "catalogs": self.versions(plan.parties), "wait": POLL}).encode()
        self._running, self._cancelled = (query_id, participants), False
        try:
            return self._collect(plan, query_id, participants, header + b"\n" + encode_plan(plan))
        except BaseException as exc:
            self._abort(query_id, participants, f"{type(exc).__name__}: {exc}")
            if self._cancelled:
                raise OperationalError("query cancelled; nothing was revealed") from None
            raise
        finally:
            self._running = None

    def _collect(self, plan: PhysicalPlan, query_id: str, participants: list[str], run: bytes) -> pa.Table:
        """Each node's outcome, by one thread per node: `run` (every node prepares, re-deriving the
        plan from its cached catalogs, and starts at once: one round trip before the protocol, which
        brings a short query's outcome back), then `wait` polls. The first failure ends the
        collection; the other threads stop after their current call (each call has its deadline)."""
        outcomes: queue.Queue = queue.Queue()
        collected = threading.Event()
        replies = RunReplies(len(participants))
        self.rounds_before_start = 1

        def node(name: str) -> None:
            body = json.dumps({"query": query_id, "wait": POLL}).encode()
            try:
                raw = b""
                try:
                    raw = self.peers.call(name, "run", run, POLL + self.timeout)
                finally:
                    replies.arrived(raw)
                while True:
                    line, _, payload = raw.partition(b"\n")
                    header = json.loads(line.decode())
                    if header.get("state") != "running":
                        outcomes.put((name, header, payload, None))
                        return
                    if collected.is_set():
                        return
                    raw = self.peers.call(name, "wait", body, POLL + self.timeout)
            except BaseException as exc:
                outcomes.put((name, None, b"", exc))

        for name in participants:
            threading.Thread(target=node, args=(name,), name=f"run-{name}", daemon=True).start()
        try:
            return self._outcomes(plan, participants, outcomes, replies)
        finally:
            collected.set()

    def _outcomes(self, plan: PhysicalPlan, participants: list[str], outcomes: queue.Queue,
                  replies: "RunReplies") -> pa.Table:
        stats = ChannelStats()
        result = None
        for _ in participants:
            name, header, payload, exc = outcomes.get()
            failed = exc is not None or header.get("state") != "done"
            # a node refused as stale fails its peers' messages to it: that, not their failure, is the cause
            if failed and replies.any_stale(wait=POLL + self.timeout):
                self._catalogs = {p: c for p, c in self._catalogs.items() if p not in plan.parties}
                raise StaleCatalog(sorted(plan.parties))  # re-read every party of the plan at once, then plan again
            if exc is not None:
                raise exc if isinstance(exc, Error) else ProtocolError(f"party {name!r}: {exc}")
            if header.get("state") != "done":
                raise _error_from(name, header)
            for src, dst, messages, size in header.get("stats", []):
                stats.messages[(src, dst)] += int(messages)
                stats.bytes[(src, dst)] += int(size)
            if name == plan.issuer:
                result = table_from_bytes(payload, name) if payload else None
        self.last_stats = stats
        if result is None:
            raise InternalError("the issuer produced no result")
        return result

    def _abort(self, query_id: str, names: list[str], reason: str) -> None:
        """Tell every node to drop the query (in the background: a hung node must not hold us up)."""
        body = json.dumps({"query": query_id, "reason": reason[:400]}).encode()

        def abort(name: str) -> None:
            try:
                self.peers.call(name, "abort", body, min(self.timeout, 10.0))
            except Error:
                pass  # dead or hung: its own peers time out; a restarted node knows nothing of the query

        threads = [threading.Thread(target=abort, args=(n,), daemon=True) for n in names]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=2.0)

    def cancel(self) -> None:
        running = self._running
        if running is not None:
            self._cancelled = True
            self._abort(running[0], running[1], "cancelled by the user")

    def close(self) -> None:
        """Close the clients once the calls in flight (polls, aborts) end: none may outlive the engine."""
        self.peers.close(wait=POLL + self.timeout)
