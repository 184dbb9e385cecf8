"""Benchmark: network mode over shaped links, every node in its own network namespace (run as root).

Builds the namespaces itself: one per node (issuer, bank, shop, dealer), each joined by a veth pair
to a bridge in a hub namespace, addresses 10.231.0.0/24. Bandwidth is shaped with `tc tbf` on both
ends of every veth; delay is added in user space, since this kernel has no netem: each server node
runs a small TCP proxy in its namespace (`_proxy` below) that listens on the node's public address
and forwards to its Flight server on 127.0.0.1, holding every chunk RTT/2 in each direction
(pipelined: a chunk's delay does not hold the next one back, so bandwidth stays the link's).

For each link (RTT ms / Mbit/s: 0 = unshaped, 2/10000, 20/1000, 80/200) it runs the queries of
issue 20 — a one-party query at a remote party, a PSI join COUNT+SUM, class 4 on HE and on the
SPU, an SPU filter, an SPU ORDER BY … LIMIT — issued as `bank` from the issuer's namespace, checks
every answer against plain DuckDB over the parties' files, and prints per query: seconds (median of
`--repeat`, after one untimed run), messages and bytes between the nodes, the extra round trips it paid over the unshaped
run ((t - t0) / RTT, as the issue measured them) and, for class 4, the planner's own prediction beside the
measurement: its price of the path the row ran (compute + round trips × RTT + bytes / bandwidth,
`planner/cost.py`'s `Price`, as `plan_query` prices it with group_sums = "auto" over the run's link) and
the path it would pick.

Everything started listens inside its own namespace (10.231.0.x or 127.0.0.1) and is torn down at
exit, on an error and on Ctrl-C (processes by their pid, then the namespaces). Not a test: it
times things, and needs root. The machine may be shared: keep runs small (`--rows`).

Run:  sudo python bench/network.py [--links 0,2,20,80] [--rows 2000] [--one-party-rows 10000]
                                   [--repeat 1] [--queries one_party,psi,he,spu_group,spu_filter,top_k]
                                   [--min-group-size 0]
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import dataclasses
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PREFIX = "sqsb"  # namespace and interface names start so: nothing else on the machine is touched
SUBNET = "10.231.0"
NODES = ("issuer", "bank", "shop", "dealer")
SERVERS = ("bank", "shop", "dealer")
PORT = 47100
LINKS = {0: None, 2: 10_000, 20: 1_000, 80: 200}  # RTT ms -> Mbit/s (None: unshaped)

QUERIES = {  # name -> (SQL, federation variant, rows key)
    "one_party": ("SELECT COUNT(*) AS n, SUM(w) AS s FROM shop.one WHERE w > 10", "he", "one"),
    "psi": ("SELECT COUNT(*) AS n, SUM(b.v) AS s FROM bank.t b JOIN shop.t s ON b.id = s.id", "he", "rows"),
    "he": ("SELECT b.g, SUM(s.w) AS total, COUNT(*) AS n FROM bank.t b JOIN shop.t s ON b.id = s.id GROUP BY b.g",
           "he", "rows"),
    "spu_group": ("SELECT b.g, SUM(s.w) AS total, COUNT(*) AS n FROM bank.t b JOIN shop.t s ON b.id = s.id "
                  "GROUP BY b.g", "spu", "rows"),
    "spu_filter": ("SELECT COUNT(*) AS n FROM bank.t b JOIN shop.t s ON b.id = s.id WHERE b.v > s.w", "he", "rows"),
    "top_k": ("SELECT b.id, s.w FROM bank.t b JOIN shop.t s ON b.id = s.id ORDER BY b.v + s.w DESC, b.id LIMIT 5",
              "he", "rows"),
}


def address(node: str) -> str:
    return f"{SUBNET}.{10 + NODES.index(node)}"


# ------------------------------------------------------------------------------- the namespaces


def sh(*args: str, check: bool = True) -> None:
    subprocess.run(list(args), check=check, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL if not check else None)


class Namespaces:
    """The hub (a bridge) and one namespace per node; `shape` sets every veth's rate."""

    def __init__(self):
        self.made = False

    def build(self) -> None:
        self.teardown()  # leftovers of an interrupted run
        self.made = True
        hub = f"{PREFIX}-hub"
        sh("ip", "netns", "add", hub)
        sh("ip", "-n", hub, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", hub, "link", "set", "br0", "up")
        for node in NODES:
            ns = f"{PREFIX}-{node}"
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "link", "add", f"{PREFIX}n{node[:4]}", "type", "veth", "peer", "name", f"{PREFIX}h{node[:4]}")
            sh("ip", "link", "set", f"{PREFIX}n{node[:4]}", "netns", ns)
            sh("ip", "link", "set", f"{PREFIX}h{node[:4]}", "netns", hub)
            sh("ip", "-n", ns, "link", "set", f"{PREFIX}n{node[:4]}", "name", "eth0")
            sh("ip", "-n", ns, "addr", "add", f"{address(node)}/24", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
            sh("ip", "-n", hub, "link", "set", f"{PREFIX}h{node[:4]}", "master", "br0")
            sh("ip", "-n", hub, "link", "set", f"{PREFIX}h{node[:4]}", "up")

    def shape(self, mbits: int | None) -> None:
        """Every veth end sends at most `mbits` (tbf; both ends, so both directions), or unshaped."""
        for node in NODES:
            for ns, dev in ((f"{PREFIX}-{node}", "eth0"), (f"{PREFIX}-hub", f"{PREFIX}h{node[:4]}")):
                sh("ip", "netns", "exec", ns, "tc", "qdisc", "del", "dev", dev, "root", check=False)
                if mbits is not None:
                    burst = max(64_000, mbits * 1_000_000 // 8 // 250)  # 4 ms of traffic at the rate
                    sh("ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", dev, "root", "tbf",
                       "rate", f"{mbits}mbit", "burst", str(burst), "latency", "200ms")

    def teardown(self) -> None:
        for node in (*NODES, "hub"):
            sh("ip", "netns", "del", f"{PREFIX}-{node}", check=False)


def in_namespace(node: str, *args: str, **popen) -> subprocess.Popen:
    return subprocess.Popen(["ip", "netns", "exec", f"{PREFIX}-{node}", sys.executable, __file__, *args], **popen)


# ----------------------------------------------------------------------------- data and nodes


def write_data(directory: Path, rows: int, one_rows: int) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(20)
    for party, column, extra in (("bank", "v", "g"), ("shop", "w", None)):
        (directory / party).mkdir(exist_ok=True)
        data = {"id": rng.permutation(2 * rows)[:rows].astype(np.int64), column: rng.integers(0, 1000, rows)}
        if extra:
            data[extra] = rng.integers(0, 16, rows)
        pq.write_table(pa.table(data), directory / party / "t.parquet")
    pq.write_table(pa.table({"id": np.arange(one_rows), "w": rng.integers(0, 1000, one_rows)}),
                   directory / "shop" / "one.parquet")


def write_federations(directory: Path, rtt_ms: float, mbits: int | None, min_group_size: int = 0) -> dict[str, Path]:
    """The federation files of the two class-4 variants; `min_group_size` (0: none, the published tables'
    setting; 4 is the default of a federation) over bank's ids declared unique, as they are (a permutation),
    so the SPU's class 4 keeps the one-hot path under the threshold (docs/network.md)."""
    from sqlsecure.certs import init_certs

    if not (directory / "certs").exists():
        init_certs(directory / "certs", list(NODES[1:]))
    nodes = {n: f'address = "{address(n)}:{PORT}"\ncertificate = "certs/{n}.pem"\nprivate_key = "certs/{n}.key"\n'
             for n in SERVERS}
    link = f"link_rtt_ms = {max(rtt_ms, 0.1)}\nlink_mbps = {mbits or 100_000}\n"
    out = {}
    for variant in ("he", "spu"):
        path = directory / f"federation-{variant}.toml"
        path.write_text(
            f'[federation]\nname = "bench"\nmin_group_size = {min_group_size}\ngroup_sums = "{variant}"\n{link}'
            f'ca = "certs/ca.pem"\nnetwork_timeout = 120\n'
            f'[parties.bank]\n{nodes["bank"]}[parties.bank.tables]\nt = "bank/t.parquet"\n'
            + ('[parties.bank.unique]\nt = [["id"]]\n' if min_group_size else "") +
            f'[parties.shop]\n{nodes["shop"]}[parties.shop.tables]\nt = "shop/t.parquet"\none = "shop/one.parquet"\n'
            f'[dealer]\n{nodes["dealer"]}'
            '[[grants]]\nparty = "bank"\ncolumns = ["shop.t.*", "shop.one.*"]\nconstraint = "PLAINTEXT"\n'
            '[[grants]]\nparty = "shop"\ncolumns = ["bank.t.*"]\nconstraint = "PLAINTEXT"\n')
        out[variant] = path
    return out


class Processes:
    """Every process this run started, ended by pid (SIGTERM, then SIGKILL) at teardown."""

    def __init__(self):
        self.running: list[subprocess.Popen] = []

    def start(self, node: str, *args: str, ready: str | None = None) -> subprocess.Popen:
        proc = in_namespace(node, *args, stdout=subprocess.PIPE, text=True)
        self.running.append(proc)
        if ready is not None:
            line = proc.stdout.readline()
            if ready not in line:
                raise RuntimeError(f"{node} {args[0]} did not start: {line!r}")
        return proc

    def stop_all(self) -> None:
        for proc in self.running:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.running:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.running = []


def start_nodes(procs: Processes, federation: Path, rtt_ms: float) -> None:
    for node in SERVERS:
        procs.start(node, "_proxy", address(node), str(PORT), str(rtt_ms / 2000), ready="proxying")
        procs.start(node, "_serve", str(federation), node, ready="serving")


# ----------------------------------------------------------------------------- in the namespaces


def serve(federation: str, name: str) -> None:
    """A node serving on 127.0.0.1 in its namespace (its proxy holds the public address)."""
    from sqlsecure.federation import load_federation
    from sqlsecure.party_service import PartyService

    config = load_federation(federation)
    node = dataclasses.replace(config.nodes[name], host="127.0.0.1")
    config = dataclasses.replace(config, nodes={**config.nodes, name: node})
    os.chdir(Path(federation).parent)
    service = PartyService(config, name)
    print(f"serving {name} on 127.0.0.1:{service.port}", flush=True)
    service.serve_forever()


def proxy(host: str, port: int, delay: float) -> None:
    """Listen on host:port, forward to 127.0.0.1:port, each chunk held `delay` s in each direction."""

    async def pump(reader, writer) -> None:
        loop = asyncio.get_running_loop()
        chunks: asyncio.Queue = asyncio.Queue()

        async def forward() -> None:
            while (item := await chunks.get()) is not None:
                due, data = item
                if (wait := due - loop.time()) > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()
            writer.close()

        sender = asyncio.create_task(forward())
        try:
            while data := await reader.read(1 << 16):
                chunks.put_nowait((loop.time() + delay, data))
        except ConnectionError:
            pass
        chunks.put_nowait(None)
        await sender

    async def connection(reader, writer) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer), return_exceptions=True)

    async def main() -> None:
        server = await asyncio.start_server(connection, host, port)
        print(f"proxying {host}:{port} with {delay * 1000:g} ms each way", flush=True)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def issue(federation: str, names: list[str], repeat: int) -> None:
    """As bank, in the issuer's namespace: run each query `repeat` times, check it, print JSON lines."""
    from sqlsecure.engine import Engine

    os.chdir(Path(federation).parent)
    with Engine(federation, runtime="network", identity="bank") as engine:
        engine.execute(QUERIES["one_party"][0], "bank")  # the catalogs and connections of a warm federation
        for name in names:
            sql = QUERIES[name][0]
            engine.execute(sql, "bank")  # untimed: the first run of a kind starts workers, key tables
            seconds, result = [], None
            for _ in range(repeat):
                start = time.perf_counter()
                result = engine.execute(sql, "bank")
                seconds.append(time.perf_counter() - start)
            print(json.dumps({"query": name, "seconds": statistics.median(seconds),
                              "messages": result.stats.total_messages(), "bytes": result.stats.total_bytes(),
                              "ok": matches_duckdb(sql, result.table, engine.config.min_group_size),
                              "prediction": prediction(engine, name)}),
                  flush=True)


def matches_duckdb(sql: str, got, k: int = 0) -> bool:
    """The answer equals plain DuckDB over the parties' files (rows as multisets, floats to 1e-6), groups of
    fewer than `k` rows dropped (both sides' ids are unique, so a group's rows are shop's distinct rows)."""
    import duckdb

    con = duckdb.connect()
    for party, tables in (("bank", ("t",)), ("shop", ("t", "one"))):
        con.execute(f"CREATE SCHEMA {party}")
        for table in tables:
            con.execute(f"CREATE VIEW {party}.{table} AS SELECT * FROM read_parquet('{party}/{table}.parquet')")
    want = con.sql(sql + (f" HAVING COUNT(*) >= {k}" if k and "GROUP BY" in sql else "")).fetchall()
    have = [tuple(row.values()) for row in got.to_pylist()]

    def key(row):
        return tuple(round(float(v), 6) if isinstance(v, (int, float)) else str(v) for v in row)

    return len(want) == len(have) and all(
        all(math.isclose(float(a), float(b), rel_tol=1e-6, abs_tol=1e-6) for a, b in zip(x, y))
        for x, y in zip(sorted(map(key, have)), sorted(map(key, want))))


PATHS = {"he": "he", "spu_group": "spu"}  # the class-4 queries -> the path each run forces


def prediction(engine, name: str, issuer: str = "bank") -> dict | None:
    """For a class-4 query: the planner's own price of the path `name` forces, over the engine's link
    (`plan_query` with group_sums = "auto": the `Estimate` it chooses by), and the path it would pick;
    None for the other queries, whose device the planner does not price."""
    from sqlsecure.planner import plan_query

    if name not in PATHS:
        return None
    priced = plan_query(QUERIES[name][0], catalog=engine.catalog, policy=engine.policy, issuer=issuer,
                        group_sums="auto", link=engine.link, psi=engine.config.psi,
                        he_key_bits=engine.config.he_key_bits).class_4
    path = priced.he if PATHS[name] == "he" else priced.spu
    return {"seconds": path.seconds(engine.link), "round_trips": path.round_trips, "bytes": path.bytes,
            "compute": path.compute, "choice": priced.engine}


# ---------------------------------------------------------------------------------------- main


def run_link(directory: Path, spaces: Namespaces, procs: Processes, rtt_ms: int, mbits: int | None,
             names: list[str], repeat: int, min_group_size: int = 0) -> list[dict]:
    spaces.shape(mbits)
    federations = write_federations(directory, rtt_ms, mbits, min_group_size)
    results = []
    for variant in ("he", "spu"):
        wanted = [n for n in names if QUERIES[n][1] == variant]
        if not wanted:
            continue
        start_nodes(procs, federations[variant], rtt_ms)
        try:
            client = procs.start("issuer", "_issue", str(federations[variant]), ",".join(wanted), str(repeat))
            for line in client.stdout:
                print(line, end="", file=sys.stderr, flush=True)  # kept if a later query fails
                results.append({**json.loads(line), "rtt_ms": rtt_ms, "mbits": mbits})
            if client.wait() != 0:
                raise RuntimeError(f"the issuer failed at {rtt_ms} ms ({variant})")
        finally:
            procs.stop_all()
    return results


def report(results: list[dict], rows: dict[str, int]) -> None:
    """One line per query and link: measured beside predicted (the planner's price of the path the row
    ran: seconds, round trips, MB; "-" where the planner prices no device), and the path it would pick."""
    local = {r["query"]: r["seconds"] for r in results if r["rtt_ms"] == 0}
    print(f"{'query':11} {'rows':>7} {'link':>14} {'s':>8} {'model s':>8} {'msgs':>6} {'+RTTs':>6} "
          f"{'model RTTs':>10} {'MB':>8} {'model MB':>8} {'compute s':>9} {'picks':>5} ok")
    for r in results:
        link = "unshaped" if r["rtt_ms"] == 0 else f"{r['rtt_ms']} ms/{r['mbits']} Mb"
        extra = ((r["seconds"] - local[r["query"]]) / (r["rtt_ms"] / 1000)
                 if r["rtt_ms"] and r["query"] in local else float("nan"))
        model = r["prediction"]
        priced = (f"{model['seconds']:8.2f}", f"{model['round_trips']:10.1f}", f"{model['bytes'] / 1e6:8.2f}",
                  f"{model['compute']:9.2f}", f"{model['choice'].upper():>5}") if model else (
            f"{'-':>8}", f"{'-':>10}", f"{'-':>8}", f"{'-':>9}", f"{'-':>5}")
        print(f"{r['query']:11} {rows[QUERIES[r['query']][2]]:>7} {link:>14} {r['seconds']:8.3f} {priced[0]} "
              f"{r['messages']:>6} {extra:6.1f} {priced[1]} {r['bytes'] / 1e6:8.2f} {priced[2]} {priced[3]} "
              f"{priced[4]} {'yes' if r['ok'] else 'NO'}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--links", default="0,2,20,80", help="RTTs in ms, of " + ",".join(map(str, LINKS)))
    parser.add_argument("--rows", type=int, default=2000, help="rows per party for the joins")
    parser.add_argument("--one-party-rows", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--queries", default=",".join(QUERIES))
    parser.add_argument("--min-group-size", type=int, default=0,
                        help="the federation's group threshold (0, as the published tables; 4 is the default)")
    args = parser.parse_args()
    if os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("tc"):
        print("needs root, ip and tc (network namespaces, veth pairs, tbf)", file=sys.stderr)
        return 2
    names = args.queries.split(",")
    links = [int(x) for x in args.links.split(",")]
    unknown = [n for n in names if n not in QUERIES] + [str(x) for x in links if x not in LINKS]
    if unknown:
        parser.error(f"unknown queries or links: {', '.join(unknown)}")
    directory = Path(tempfile.mkdtemp(prefix="sqlsecure-net-bench-"))
    spaces, procs = Namespaces(), Processes()

    def teardown() -> None:
        procs.stop_all()
        spaces.teardown()
        shutil.rmtree(directory, ignore_errors=True)

    atexit.register(teardown)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(130))  # atexit runs; Ctrl-C raises KeyboardInterrupt
    write_data(directory, args.rows, args.one_party_rows)
    spaces.build()
    results = []
    for rtt in links:
        results += run_link(directory, spaces, procs, rtt, LINKS[rtt], names, args.repeat, args.min_group_size)
    report(results, {"rows": args.rows, "one": args.one_party_rows})
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_serve":
        serve(sys.argv[2], sys.argv[3])
    elif len(sys.argv) > 1 and sys.argv[1] == "_proxy":
        proxy(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
    elif len(sys.argv) > 1 and sys.argv[1] == "_issue":
        issue(sys.argv[2], sys.argv[3].split(","), int(sys.argv[4]))
    else:
        sys.exit(main())
