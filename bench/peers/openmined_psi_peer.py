"""Peer benchmark: OpenMined PSI (`openmined.psi`, ECDH over P-256) for `bench/psi.py`.

Runs in its OWN virtualenv (openmined.psi pins protobuf), e.g.

    python3.11 -m venv /work/openmined-venv && /work/openmined-venv/bin/pip install openmined.psi
    /work/openmined-venv/bin/python bench/peers/openmined_psi_peer.py --a A.i64 --b B.i64

Inputs: two files of raw little-endian int64 keys (`numpy.ndarray.tofile`), as `bench/psi.py`
writes them; read with the standard `array` module (no numpy in this venv), passed to the library
as decimal strings (its API takes `list[str]`).

Setting: openmined.psi's Python API is a pair of role objects (`server`, `client`) whose protobuf
messages the caller carries — it has no transport of its own. This script runs the two roles in
two processes (the server a child process) joined by a `multiprocessing.connection` socket on
127.0.0.1, messages serialised with `SerializeToString()`:

  1. server -> client: ServerSetup = CreateSetupMessage(fpr, n_client, server keys, data structure)
     client -> server: Request = CreateRequest(client keys)
     (both computed at once from a common start; the client reads the setup before it sends)
  2. server -> client: Response = ProcessRequest(Request)
  3. client: GetIntersection(ServerSetup, Response) -> indices of its keys in the intersection.

`reveal_intersection=True` (the client learns the elements, as a join needs). The data structure is
RAW by default (the server's encrypted set in full: exact, as every other system in the table);
`--ds gcs` / `--ds bloom` use the compressed ones with `--fpr` (default 1e-9) as the false-positive
probability of the whole query. The library is single-threaded, so each role uses one core.

Timed: from the common start (the server's "go" after the connection is up) to the client's result.
Check: the client's intersection indices must pick exactly the true intersection (computed here in
plain Python from the inputs); else WRONG.

Output, one line:  peer openmined <ds> <n> <seconds> <intersection> <ok|WRONG> bytes=<total message bytes>
        load=<1-min load average at start>
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import time
from array import array
from multiprocessing.connection import Client, Listener


def read_keys(path: str) -> list[str]:
    keys = array("q")
    with open(path, "rb") as f:
        keys.frombytes(f.read())
    if sys.byteorder != "little":
        keys.byteswap()
    return [str(k) for k in keys]


def data_structure(psi, name: str):
    return {"raw": psi.DataStructure.RAW, "gcs": psi.DataStructure.GCS, "bloom": psi.DataStructure.BLOOM_FILTER}[name]


def server_role(address, keys_path: str, n_client: int, ds: str, fpr: float) -> None:
    import private_set_intersection.python as psi

    with Listener(address) as listener:  # listen first: the client may connect while the keys load
        items = read_keys(keys_path)
        conn = listener.accept()
    with conn:
        conn.recv_bytes()  # client ready
        conn.send_bytes(b"go")
        server = psi.server.CreateWithNewKey(True)
        conn.send_bytes(server.CreateSetupMessage(fpr, n_client, items, data_structure(psi, ds)).SerializeToString())
        request = psi.Request()
        request.ParseFromString(conn.recv_bytes())
        conn.send_bytes(server.ProcessRequest(request).SerializeToString())
        conn.recv_bytes()  # client done


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--a", required=True, help="client keys (left side; it learns the intersection): raw int64")
    parser.add_argument("--b", required=True, help="server keys: raw int64")
    parser.add_argument("--ds", choices=("raw", "gcs", "bloom"), default="raw", help="server set encoding")
    parser.add_argument("--fpr", type=float, default=1e-9, help="false-positive probability (gcs, bloom)")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds")
    args = parser.parse_args(argv)
    import private_set_intersection.python as psi

    client_items = read_keys(args.a)
    n = len(client_items)
    truth = set(client_items) & set(read_keys(args.b))
    print(f"# OpenMined PSI {psi.__version__} (ECDH over P-256), client and server in two processes over "
          f"127.0.0.1 (multiprocessing.connection), data structure {args.ds}", flush=True)

    listener = Listener(("127.0.0.1", 0))  # pick a free port, then hand it to the server
    address = listener.address
    listener.close()
    load = os.getloadavg()[0]
    server = mp.get_context("spawn").Process(target=server_role, args=(address, args.b, n, args.ds, args.fpr))
    server.start()
    for _ in range(1200):  # the server process starts (spawn: a fresh interpreter) within 60 s
        try:
            conn = Client(address)
            break
        except ConnectionRefusedError:
            time.sleep(0.05)
    else:
        print(f"peer openmined {args.ds} {n} nan -1 FAILED", flush=True)
        server.kill()
        return 1

    def recv() -> bytes:
        if not conn.poll(args.timeout):
            raise TimeoutError(f"no message from the server in {args.timeout} s")
        return conn.recv_bytes()

    try:
        conn.send_bytes(b"ready")
        recv()  # go: the common start
        t0 = time.perf_counter()
        client = psi.client.CreateWithNewKey(True)
        request = client.CreateRequest(client_items).SerializeToString()
        setup_bytes = recv()  # first take the setup (the server computed it meanwhile), then send: two
        conn.send_bytes(request)  # large messages sent both ways at once would fill both socket buffers
        response_bytes = recv()
        setup, response = psi.ServerSetup(), psi.Response()
        setup.ParseFromString(setup_bytes)
        response.ParseFromString(response_bytes)
        indices = client.GetIntersection(setup, response)
        seconds = time.perf_counter() - t0
        conn.send_bytes(b"done")
    except (OSError, EOFError, TimeoutError) as exc:  # the server died or hung: its traceback is on stderr
        print(f"# client: {type(exc).__name__}: {exc}", flush=True)
        print(f"peer openmined {args.ds} {n} nan -1 FAILED", flush=True)
        server.kill()
        return 1
    finally:
        conn.close()
    server.join(args.timeout)
    found = {client_items[i] for i in indices}
    ok = len(indices) == len(truth) and found == truth
    total = len(request) + len(setup_bytes) + len(response_bytes)
    print(f"peer openmined {args.ds} {n} {seconds:.6f} {len(indices)} {'ok' if ok else 'WRONG'} bytes={total} "
          f"load={load:.2f}", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
