"""Benchmark: PSI joins side by side — sqlsecure (ECDH-PSI, KKRT16 OT-PSI) vs SecretFlow SPU vs OpenMined PSI.

One run, at each size n (rows per side, `--sizes`, default 10^5 and 10^6): every system gets the
SAME two key sets — n distinct random 64-bit integers per side, `--overlap` of them (default 50%)
common to both — and must find exactly that intersection (checked; ok / WRONG / FAILED).

sqlsecure, two parties as threads in this process (as the embedded runtime runs them), each with
its `GroupWorkers` handle on the X25519 worker processes (`--processes` per handle, default all
cores), started before timing; an `InProcessChannel`. Keys are encoded with `encode_keys` (not
timed).
  ECDH      `executors.psi.psi_join_indices` (X25519; Meadows / Huberman-Franklin-Hogg)
  KKRT      `executors.kkrt.kkrt_join_indices` (KKRT16 OT-PSI), same contract; if that module is
            not importable yet, the row says so and the run goes on
  raw       the raw group-operation bound of the ECDH path: as many X25519 exchanges as it makes,
            2 * (distinct a + distinct b), as one batch through the warm workers on all cores
Both join paths return each party's row indices of the join; they are checked pair for pair against
`local_join_indices` (order-insensitive) and their intersection size against the known overlap.

Peers, each in its own virtualenv and run by a driver under bench/peers/ (inputs handed over as
raw int64 files; drivers print `peer <system> <protocol> <n> <seconds> <intersection> <ok|WRONG>`):
  SPU       `bench/peers/spu_psi_peer.py` under `--spu-python` (default $SQLSECURE_SPU_PEER_PYTHON
            or /work/spu-venv/bin/python; spu 0.9.5): `spu.psi.psi_execute`, protocols ECDH on
            CURVE_25519, ECDH on CURVE_FOURQ, KKRT, RR22; two party processes linked by brpc over
            127.0.0.1; time = the slower party's psi_execute (its CSV input and output included: its
            API works on files only). SPU's CURVE_25519 code is Intel IPP-crypto's multi-buffer X25519
            only on a CPU with AVX-512 IFMA, else libsodium, one point at a time: the note says which
  OpenMined `bench/peers/openmined_psi_peer.py` under `--openmined-python` (default
            $SQLSECURE_OPENMINED_PEER_PYTHON or /work/openmined-venv/bin/python): openmined.psi
            (ECDH over P-256), client and server roles in two processes over a 127.0.0.1 socket,
            RAW server set (exact); sizes above `--openmined-max` are skipped
A missing peer virtualenv is skipped with a note; `--setup-peers` creates it first (python -m venv,
then pip install spu==0.9.5 / openmined.psi — network needed).

Printed: a sqlsecure detail table (wall, raw bound, wall / raw, peak RSS of the process tree,
channel traffic), then ONE side-by-side table: per n and system, wall seconds, the intersection
found, the check, and the ratios `ECDH ÷ this` and `KKRT ÷ this` (sqlsecure's wall over this row's
wall: < 1 means sqlsecure is faster; in the raw-bound row, `ECDH ÷ this` is wall / raw). The load
average at the start of each row's run is shown: on a shared machine, compare within one run.
Progress and each run's time go to stderr. Exit 1 if any check fails.

Run:  python bench/psi.py [--sizes 100000,1000000] [--overlap 0.5] [--repeat R] [--processes N]
                          [--peers spu,openmined] [--spu-protocols ecdh-25519,ecdh-fourq,kkrt,rr22]
                          [--openmined-max N] [--setup-peers] [--seed S]
Quick check:  python bench/psi.py --sizes 10000
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

import numpy as np
import pyarrow as pa

from sqlsecure.executors.runtime.channel import InProcessChannel
from sqlsecure.executors.psi.blinding import PARALLEL_MIN, POINT, BlindingKey, GroupWorkers, hash_to_points
from sqlsecure.executors.psi.encoding import encode_keys
from sqlsecure.executors.psi.ecdh import local_join_indices, psi_join_indices

try:
    import psutil
except ImportError:
    psutil = None

try:  # being written alongside this benchmark; the column is skipped until it exists
    from sqlsecure.executors.psi.kkrt import kkrt_join_indices
    KKRT_MISSING = None
except Exception as exc:  # ImportError, or a module caught mid-edit
    kkrt_join_indices = None
    KKRT_MISSING = f"sqlsecure.executors.psi.kkrt not importable ({exc})"

PEERS_DIR = Path(__file__).resolve().parent / "peers"
SPU_PROTOCOLS = {  # driver name -> label in the table
    "ecdh-25519": "ECDH-PSI, CURVE_25519",
    "ecdh-fourq": "ECDH-PSI, FourQ",
    "kkrt": "KKRT16 OT-PSI",
    "rr22": "RR22 VOLE-PSI",
}
PEERS = {
    "spu": dict(env="SQLSECURE_SPU_PEER_PYTHON", venv="/work/spu-venv", module="spu",
                packages=["spu==0.9.5"], driver=PEERS_DIR / "spu_psi_peer.py"),
    "openmined": dict(env="SQLSECURE_OPENMINED_PEER_PYTHON", venv="/work/openmined-venv",
                      module="private_set_intersection.python", packages=["openmined.psi"],
                      driver=PEERS_DIR / "openmined_psi_peer.py"),
}


def tree_pids() -> list[int]:
    """This process and all its descendants (the X25519 worker processes among them)."""
    if psutil is not None:
        return [os.getpid(), *(p.pid for p in psutil.Process().children(recursive=True))]
    parent = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                parent[int(pid)] = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            pass
    tree, frontier = [os.getpid()], [os.getpid()]
    while frontier:
        pid = frontier.pop()
        kids = [p for p, pp in parent.items() if pp == pid]
        tree += kids
        frontier += kids
    return tree


def rss(pids: list[int]) -> int:
    """Sum of the resident set sizes of `pids`, in bytes (shared pages count once per process)."""
    total = 0
    for pid in pids:
        try:
            if psutil is not None:
                total += psutil.Process(pid).memory_info().rss
            else:
                with open(f"/proc/{pid}/status") as f:
                    total += next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) * 1024
        except (OSError, StopIteration, ValueError) if psutil is None else psutil.Error:
            pass
    return total


def tree_rss() -> int:
    return rss(tree_pids())


class PeakSampler(threading.Thread):
    """Peak of `tree_rss()`, sampled every `interval` s (the process list is refreshed every 1 s)."""

    def __init__(self, interval: float = 0.05):
        super().__init__(daemon=True)
        self.interval, self.pids, self._done = interval, tree_pids(), threading.Event()
        self.peak = rss(self.pids)

    def run(self) -> None:
        ticks = 0
        while not self._done.wait(self.interval):
            ticks += 1
            if ticks % round(1 / self.interval) == 0:
                self.pids = tree_pids()
            self.peak = max(self.peak, rss(self.pids))

    def stop(self) -> int:
        self._done.set()
        self.join()
        return max(self.peak, tree_rss())


def load() -> float:
    return os.getloadavg()[0]


def make_keys(n: int, overlap: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, int]:
    """Two sides of n distinct random int64 keys each, exactly round(n * overlap) of them common."""
    common = round(n * overlap)
    need = 2 * n - common
    drawn = np.zeros(0, dtype=np.int64)
    while len(drawn) < need:
        drawn = np.unique(np.concatenate([drawn, rng.integers(-2**63, 2**63 - 1, size=need - len(drawn) + 16,
                                                             dtype=np.int64)]))
    drawn = rng.permutation(drawn)[:need]
    a = np.concatenate([drawn[:common], drawn[common:n]])
    b = np.concatenate([drawn[:common], drawn[n:need]])
    return rng.permutation(a), rng.permutation(b), common


def row(n, system, protocol, setting, seconds=float("nan"), found=None, status="skipped", note="", **extra):
    return dict(n=n, system=system, protocol=protocol, setting=setting, seconds=seconds, found=found,
                status=status, note=note, load=extra.pop("load", load()), **extra)


def run_join(path: str, join, n: int, enc: dict, reference: np.ndarray, common: int,
             pools: dict[str, GroupWorkers], repeat: int, timeout: float) -> dict:
    """One sqlsecure join path, `repeat` times; best wall kept; checked against the reference pairs."""
    pairs = lambda l, r: np.stack([l, r])[:, np.lexsort((r, l))]
    label = {"ECDH": "ECDH-PSI, X25519", "KKRT": "KKRT16 OT-PSI"}[path]
    setting = (f"2 party threads + {pools['a'].processes} X25519 worker processes, in-process channel"
               if path == "ECDH" else "2 party threads, in-process channel")
    r = row(n, "sqlsecure", label, setting, seconds=float("inf"), status="ok", peak=0, path=path)
    for _ in range(repeat):
        channel = InProcessChannel(["a", "b"], timeout=timeout)
        out, errors = {}, []

        def party(me: str, peer: str) -> None:
            try:
                out[me] = join(channel.endpoint(me), peer, f"bench-{path}", enc[me], me == "a", pools[me])
            except BaseException as exc:
                errors.append(exc)
                channel.abort(f"{me} failed: {exc}")

        threads = [threading.Thread(target=party, args=pq) for pq in (("a", "b"), ("b", "a"))]
        r["load"] = load()
        sampler = PeakSampler()
        sampler.start()
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        r["peak"] = max(r["peak"], sampler.stop())
        if errors:
            traceback.print_exception(errors[0], file=sys.stderr)
            return dict(r, seconds=float("nan"), status="FAILED", note=f"{type(errors[0]).__name__}: {errors[0]}")
        r["seconds"] = min(r["seconds"], wall)
        got = pairs(out["a"], out["b"]) if len(out["a"]) == len(out["b"]) else None
        r["found"] = len(np.unique(out["a"])) if got is not None else None
        if got is None or not np.array_equal(got, reference) or r["found"] != common:
            r["status"] = "WRONG"
        r.update(bytes=channel.stats.total_bytes(), msgs=channel.stats.total_messages())
        print(f"# {time.strftime('%H:%M:%S')} n={n:,} sqlsecure {path}: {wall:.2f} s, {r['status']}",
              file=sys.stderr, flush=True)
    return r


def run_raw(n: int, a: np.ndarray, b: np.ndarray, pool: GroupWorkers, repeat: int) -> dict:
    """The X25519 work of the ECDH path alone, through the warm worker processes on all cores."""
    points = hash_to_points([b"i%d" % v for v in np.concatenate([np.unique(a), np.unique(b)]).tolist()])
    ops = 2 * len(points) // POINT
    r = row(n, "sqlsecure", "raw bound: X25519 exchanges", f"{ops:,} ops, {pool.processes} worker processes",
            seconds=float("inf"), status="-", ops=ops)
    for _ in range(repeat):
        r["load"] = load()
        t0 = time.perf_counter()
        blinded = BlindingKey().blind(points * 2, pool)  # X25519 is constant-time in its input
        r["seconds"] = min(r["seconds"], time.perf_counter() - t0)
        if len(blinded) != 2 * len(points):
            raise RuntimeError("raw bound: wrong number of blinded points")
    print(f"# {time.strftime('%H:%M:%S')} n={n:,} raw X25519 bound: {r['seconds']:.2f} s", file=sys.stderr, flush=True)
    return r


def peer_python(name: str, args: argparse.Namespace) -> tuple[str | None, str]:
    """(interpreter, '') if the peer's venv is usable, else (None, why), creating it with --setup-peers."""
    peer = PEERS[name]
    python = getattr(args, f"{name}_python") or os.environ.get(peer["env"]) or f"{peer['venv']}/bin/python"
    probe = lambda: subprocess.run([python, "-c", f"import {peer['module']}"], capture_output=True, text=True)
    if Path(python).exists() and probe().returncode == 0:
        return python, ""
    venv = Path(python).parent.parent
    if not args.setup_peers:
        return None, (f"no usable {name} interpreter at {python}: rerun with --setup-peers, or: python3.11 -m venv "
                      f"{venv} && {venv}/bin/pip install {' '.join(peer['packages'])}")
    print(f"# setting up {name}: {venv}", file=sys.stderr, flush=True)
    steps = [] if Path(python).exists() else [[sys.executable, "-m", "venv", str(venv)]]
    steps.append([python, "-m", "pip", "install", "--quiet", *peer["packages"]])
    for cmd in steps:
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            tail = " | ".join(done.stderr.strip().splitlines()[-3:])
            return None, f"setting up {name} failed: {' '.join(cmd)}: {tail}"
    check = probe()
    if check.returncode != 0:
        return None, f"{name} installed at {venv} but `import {peer['module']}` fails: {check.stderr.strip()[-200:]}"
    return python, ""


def run_peer(name: str, python: str, extra: list[str], n: int, files: tuple[Path, Path],
             timeout: float) -> tuple[list[dict], list[str]]:
    """Run one peer driver; parse its `peer ...` lines into rows; return (rows, its '#' lines)."""
    cmd = [python, str(PEERS[name]["driver"]), "--a", str(files[0]), "--b", str(files[1]),
           "--timeout", str(int(timeout)), *extra]
    started = load()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout * 5 + 60)
        stdout, stderr, code = done.stdout, done.stderr, done.returncode
    except subprocess.TimeoutExpired as exc:
        stdout, stderr, code = exc.stdout or "", exc.stderr or "", "timeout"
        stdout = stdout.decode() if isinstance(stdout, bytes) else stdout
        stderr = stderr.decode() if isinstance(stderr, bytes) else stderr
    comments, rows = [], []
    for line in stdout.splitlines():
        parts = line.split()
        if line.startswith("#"):
            comments.append(line)
        elif len(parts) >= 7 and parts[0] == "peer" and parts[1] == name:
            extra_fields = dict(p.split("=", 1) for p in parts[7:] if "=" in p)
            found = int(parts[5]) if parts[5].lstrip("-").isdigit() and int(parts[5]) >= 0 else None
            rows.append(dict(protocol=parts[2], seconds=float(parts[4]), found=found,
                             status=parts[6] if parts[6] in ("ok", "WRONG") else "FAILED", extra=extra_fields))
            print(f"# {time.strftime('%H:%M:%S')} n={n:,} {name} {parts[2]}: {parts[4]} s, {parts[6]}",
                  file=sys.stderr, flush=True)
    if code != 0 and not any(r["status"] != "ok" for r in rows):
        tail = " | ".join((stderr or stdout).strip().splitlines()[-3:])
        comments.append(f"# {name} driver exit {code}: {tail}")
    for r in rows:
        r["load"] = float(r["extra"].get("load", started))
    return rows, [f"# {name}: {c[2:]}" for c in comments]


def fmt_s(x: float) -> str:
    return "-" if x != x else f"{x:.2f}"


def fmt_ratio(ours: float | None, theirs: float) -> str:
    if ours is None or ours != ours or theirs != theirs or theirs <= 0:
        return "-"
    return f"{ours / theirs:.2f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="See the module docstring (head of bench/psi.py) for what is timed.")
    ap.add_argument("--sizes", default="100000,1000000", help="comma-separated rows per side (default 10^5,10^6)")
    ap.add_argument("--overlap", type=float, default=0.5, help="fraction of each side's keys in the intersection")
    ap.add_argument("--processes", type=int, default=None,
                    help="sqlsecure X25519 worker processes per party handle (default: cores)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="sqlsecure runs per size; the best wall and raw times are kept")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--peers", default="spu,openmined", help="peers to run: comma-separated subset of "
                    "spu,openmined, or 'none'")
    ap.add_argument("--spu-protocols", default=",".join(SPU_PROTOCOLS), help="comma-separated subset of "
                    f"{','.join(SPU_PROTOCOLS)}")
    ap.add_argument("--spu-python", default=None, help="SPU venv's python (default $SQLSECURE_SPU_PEER_PYTHON "
                    "or /work/spu-venv/bin/python)")
    ap.add_argument("--openmined-python", default=None, help="openmined.psi venv's python (default "
                    "$SQLSECURE_OPENMINED_PEER_PYTHON or /work/openmined-venv/bin/python)")
    ap.add_argument("--openmined-max", type=float, default=1e6, help="largest n to run openmined.psi at "
                    "(single-threaded: ~24 s at 10^5)")
    ap.add_argument("--setup-peers", action="store_true", help="create a missing peer virtualenv (pip, network)")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds allowed per protocol run")
    args = ap.parse_args()
    sizes = [int(float(s)) for s in args.sizes.split(",")]
    peers = [] if args.peers in ("", "none") else args.peers.split(",")
    for p in peers:
        if p not in PEERS:
            ap.error(f"unknown peer {p!r}; choose from {','.join(PEERS)}")
    spu_protocols = args.spu_protocols.split(",")
    for p in spu_protocols:
        if p not in SPU_PROTOCOLS:
            ap.error(f"unknown SPU protocol {p!r}; choose from {','.join(SPU_PROTOCOLS)}")
    import cryptography

    print(f"# {time.strftime('%Y-%m-%d %H:%M:%S %Z')}; python {platform.python_version()}, cryptography "
          f"{cryptography.__version__}, numpy {np.__version__}, {os.cpu_count()} cores, load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}, RSS via {'psutil' if psutil else '/proc'}", flush=True)
    print(f"# keys: n distinct random int64 per side, {args.overlap:.0%} common; seed {args.seed}", flush=True)
    notes = []
    if KKRT_MISSING:
        notes.append(f"sqlsecure KKRT skipped: {KKRT_MISSING}")
    pythons = {}
    for p in peers:
        pythons[p], why = peer_python(p, args)
        if why:
            notes.append(f"{p} skipped: {why}")
    rows: list[dict] = []
    failed = False
    pools = {p: GroupWorkers(args.processes) for p in ("a", "b")}
    work = Path(tempfile.mkdtemp(prefix="sqlsecure-psi-bench-"))
    try:
        for pool in pools.values():  # start the workers now, as a long-lived runtime would have
            BlindingKey().blind((b"\x09" + bytes(31)) * max(PARALLEL_MIN, 4096), pool)
        print(f"# process tree RSS with the X25519 workers warm, before any run: {tree_rss() / 2**20:,.0f} MB",
              flush=True)
        rng = np.random.default_rng(args.seed)
        for n in sizes:
            a, b, common = make_keys(n, args.overlap, rng)
            enc = {p: encode_keys(pa.table({"k": keys}), ("k",)) for p, keys in (("a", a), ("b", b))}
            ref_l, ref_r = local_join_indices(enc["a"], enc["b"])
            reference = np.stack([ref_l, ref_r])[:, np.lexsort((ref_r, ref_l))]
            size_rows = [run_join("ECDH", psi_join_indices, n, enc, reference, common, pools, args.repeat,
                                  args.timeout)]
            if kkrt_join_indices is not None:
                size_rows.append(run_join("KKRT", kkrt_join_indices, n, enc, reference, common, pools,
                                          args.repeat, args.timeout))
            else:
                size_rows.append(row(n, "sqlsecure", "KKRT16 OT-PSI", "-", note="executors.kkrt not there yet"))
            size_rows.append(run_raw(n, a, b, pools["a"], args.repeat))
            del enc
            files = (work / f"a_{n}.i64", work / f"b_{n}.i64")
            a.tofile(files[0])
            b.tofile(files[1])
            if "spu" in peers:
                setting = "2 processes, brpc over 127.0.0.1"
                if pythons["spu"]:
                    got, comments = run_peer("spu", pythons["spu"], ["--protocols", ",".join(spu_protocols)], n,
                                             files, args.timeout)
                    notes += [c[2:] for c in comments if c[2:] not in notes]
                    by = {g["protocol"]: g for g in got}
                    for p in spu_protocols:
                        g = by.get(p)
                        if g is None:
                            size_rows.append(row(n, "SPU 0.9.5", SPU_PROTOCOLS[p], setting, status="FAILED",
                                                 note="no result from the driver"))
                            continue
                        online, impl = g["extra"].get("online"), g["extra"].get("impl")
                        note = "; ".join(([f"online phase {online} s"] if online else [])
                                         + ([f"curve code: {impl}"] if impl else []))
                        size_rows.append(row(n, "SPU 0.9.5", SPU_PROTOCOLS[p], setting, g["seconds"], g["found"],
                                             g["status"], note, load=g["load"]))
                else:
                    size_rows += [row(n, "SPU", SPU_PROTOCOLS[p], setting, note="no SPU venv (see notes)")
                                  for p in spu_protocols]
            if "openmined" in peers:
                setting = "2 processes (client, server), socket over 127.0.0.1"
                if not pythons["openmined"]:
                    size_rows.append(row(n, "OpenMined PSI", "ECDH-PSI, P-256", setting,
                                         note="no openmined venv (see notes)"))
                elif n > args.openmined_max:
                    size_rows.append(row(n, "OpenMined PSI", "ECDH-PSI, P-256", setting,
                                         note=f"n > --openmined-max {args.openmined_max:,.0f}"))
                else:
                    got, comments = run_peer("openmined", pythons["openmined"], [], n, files, args.timeout)
                    notes += [c[2:] for c in comments if c[2:] not in notes]
                    if got:
                        g = got[0]
                        version = next((c.split()[4] for c in comments
                                        if c.startswith("# openmined: OpenMined PSI")), "")
                        size_rows.append(row(n, f"OpenMined PSI {version}".strip(), "ECDH-PSI, P-256, RAW set",
                                             setting, g["seconds"], g["found"], g["status"],
                                             f"messages {int(g['extra'].get('bytes', 0)) / 1e6:.1f} MB",
                                             load=g["load"]))
                    else:
                        size_rows.append(row(n, "OpenMined PSI", "ECDH-PSI, P-256", setting, status="FAILED",
                                             note="no result from the driver"))
            for r in size_rows:
                r["common"] = common
            rows += size_rows
            failed |= any(r["status"] in ("WRONG", "FAILED") for r in size_rows)
            for f in files:
                f.unlink(missing_ok=True)
    finally:
        for pool in pools.values():
            pool.close()
        for f in work.iterdir():
            f.unlink()
        work.rmdir()

    print("\n## sqlsecure\n")
    print("| n per side | path | wall s | raw X25519 s | wall / raw | peak RSS MB | channel MB | messages "
          "| intersection | check |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|:---:|")
    for n in sizes:
        ours = [r for r in rows if r["n"] == n and r["system"] == "sqlsecure"]
        raw = next(r for r in ours if "ops" in r)
        for r in ours:
            if "ops" in r:
                continue
            if r["status"] == "skipped":
                print(f"| {n:,} | KKRT | - | - | - | - | - | - | - | skipped |")
                continue
            ecdh = r["path"] == "ECDH"  # the raw bound is the ECDH path's (KKRT runs on AES, not X25519)
            ratio = fmt_ratio(r["seconds"], raw["seconds"]) if ecdh else "-"
            found = "-" if r["found"] is None else f"{r['found']:,}"
            print(f"| {n:,} | {r['path']} | {fmt_s(r['seconds'])} | {fmt_s(raw['seconds']) if ecdh else '-'} | {ratio} "
                  f"| {r['peak'] / 2**20:,.0f} | {r.get('bytes', 0) / 1e6:,.1f} | {r.get('msgs', '-')} "
                  f"| {found} | {r['status']} |")

    print("\n## side by side (same keys for every system; ratios: sqlsecure wall ÷ this row's wall, < 1 = "
          "sqlsecure faster)\n")
    print("| n per side | system | protocol | parties | wall s | intersection | check | ECDH ÷ this "
          "| KKRT ÷ this | load | note |")
    print("|---:|---|---|---|---:|---:|:---:|---:|---:|---:|---|")
    for n in sizes:
        size_rows = [r for r in rows if r["n"] == n]
        ecdh = next((r["seconds"] for r in size_rows if r.get("path") == "ECDH" and r["status"] == "ok"), None)
        kkrt = next((r["seconds"] for r in size_rows if r.get("path") == "KKRT" and r["status"] == "ok"), None)
        for r in size_rows:
            found = "-" if r["found"] is None else f"{r['found']:,}"
            check = r["status"] if r["status"] != "-" else "-"
            kk = "-" if r.get("path") == "KKRT" or "ops" in r else fmt_ratio(kkrt, r["seconds"])
            ec = "-" if r.get("path") == "ECDH" else fmt_ratio(ecdh, r["seconds"])
            print(f"| {n:,} | {r['system']} | {r['protocol']} | {r['setting']} | {fmt_s(r['seconds'])} | {found} "
                  f"| {check} | {ec} | {kk} | {r['load']:.1f} | {r['note']} |")
    print(f"\nExpected intersection: {', '.join(f'{round(n * args.overlap):,} at n = {n:,}' for n in sizes)}.")
    for note in notes:
        print(f"Note: {note}")
    print(f"# finished {time.strftime('%H:%M:%S')}, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if failed:
        print("FAILED: a result differs from the known intersection (see the check column)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
