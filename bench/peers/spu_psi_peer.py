"""Peer benchmark: SecretFlow SPU's two-party PSI (`spu.psi.psi_execute`) for `bench/psi.py`.

Runs in SPU's OWN virtualenv (SPU pins numpy 1.26, so it cannot share sqlsecure's), e.g.

    python3.11 -m venv /work/spu-venv && /work/spu-venv/bin/pip install spu==0.9.5
    /work/spu-venv/bin/python bench/peers/spu_psi_peer.py --a A.i64 --b B.i64

Inputs: two files of raw little-endian int64 keys, one per party (`numpy.ndarray.tofile`), as
`bench/psi.py` writes them. They are turned into one-column CSV files (`k`) before timing, since
SPU's PSI reads its input from CSV files only.

Setting: for each protocol, this coordinator starts two party processes of this same script
(`--party 0|1`), each with a brpc link (`spu.libspu.link.create_brpc`) to the other over two
127.0.0.1 ports picked free just before. Party 0 (alice) is the receiver and the left side of the
join; the result is not broadcast. Each party waits for the link (`Context.barrier()`), then
times `psi.psi_execute(PsiExecuteConfig, link)` — reading its CSV, the protocol, and writing the
receiver's aligned inner-join output CSV (SPU's end-to-end PSI, the only entry point of its
Python API). The reported seconds are the slower party's; `online` is the receiver's
`[...Receiver::Online] start` to `end` span from SPU's own log (the protocol without the file
work), for reference.

Protocols (`PsiProtocolConfig` v2 names): PROTOCOL_ECDH with EcdhParams(curve=CURVE_25519) and
with CURVE_FOURQ; PROTOCOL_KKRT; PROTOCOL_RR22 (default, not low-comm, mode). Inputs are declared
unique (`keys_unique=True`): every key occurs once per side.

Check: the receiver's output key set must equal the true intersection (numpy, from the inputs)
and the report's intersection count its size; else WRONG.

Output, one line per protocol:
    peer spu <protocol> <n> <seconds> <intersection> <ok|WRONG> online=<s> load=<1-min load average at start>
         [impl=<ECDH curve code SPU chose: IPPCP (AVX-512 IFMA multi-buffer) | libSodium | FourQ>]
Lines starting with '#' are comments; a failure prints `peer spu <protocol> <n> nan -1 FAILED`
and the tail of that party's log. SPU writes a perfetto trace to /tmp/psi_<random>.trace on every
run (a hard-coded path); this script deletes the ones its parties report.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

PROTOCOLS = {  # our name -> (PsiProtocol name, curve name or None)
    "ecdh-25519": ("PROTOCOL_ECDH", "CURVE_25519"),
    "ecdh-fourq": ("PROTOCOL_ECDH", "CURVE_FOURQ"),
    "kkrt": ("PROTOCOL_KKRT", None),
    "rr22": ("PROTOCOL_RR22", None),
}


def free_ports(k: int) -> list[int]:
    socks = []
    try:
        for _ in range(k):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def party_main(args: argparse.Namespace) -> int:
    """One party: link up, run psi_execute, write {seconds, report} to --result."""
    import spu.libspu as libspu
    import spu.psi as psi

    desc = libspu.link.Desc()
    desc.id = f"sqlsecure-bench-{args.protocol}"
    desc.recv_timeout_ms = args.timeout * 1000
    desc.http_timeout_ms = args.timeout * 1000
    desc.connect_retry_times = 120
    desc.connect_retry_interval_ms = 500
    for rank, port in enumerate(args.ports.split(",")):
        desc.add_party(("alice", "bob")[rank], f"127.0.0.1:{port}")
    link = libspu.link.create_brpc(desc, args.party)
    link.barrier()  # both parties are up: the common start
    name, curve = PROTOCOLS[args.protocol]
    protocol_conf = psi.PsiProtocolConfig(protocol=psi.parse_protocol(name), receiver_rank=0,
                                          broadcast_result=False)
    if curve:
        protocol_conf.ecdh_params = psi.EcdhParams(curve=psi.parse_curve_type(curve))
    config = psi.PsiExecuteConfig(
        protocol_conf=protocol_conf,
        input_params=psi.InputParams(path=args.input, selected_keys=["k"], keys_unique=True),
        output_params=psi.OutputParams(path=args.output),
        join_conf=psi.ResultJoinConfig(type=psi.ResultJoinType.JOIN_TYPE_INNER_JOIN, left_side_rank=0),
    )
    t0 = time.perf_counter()
    report = psi.psi_execute(config, link)
    seconds = time.perf_counter() - t0
    link.stop_link()
    Path(args.result).write_text(json.dumps(dict(
        seconds=seconds, original=report.original_count, intersection=report.intersection_count,
        intersection_unique=report.intersection_unique_count)))
    return 0


STAMP = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+)\]")


def online_seconds(log: str) -> float:
    """The receiver's `...Receiver::Online] start` -> `end` span, from SPU's log timestamps."""
    marks = {}
    for line in log.splitlines():
        m = STAMP.match(line)
        if m and "Receiver::Online]" in line:
            marks[line.rstrip().rsplit(" ", 1)[-1]] = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f")
    if "start" in marks and "end" in marks:
        return (marks["end"] - marks["start"]).total_seconds()
    return float("nan")


def remove_traces(log: str) -> None:
    for path in re.findall(r"Trace has been written to (/tmp/psi_[^\s]+\.trace)", log):
        try:
            os.unlink(path.rstrip("."))
        except OSError:
            pass


def run_protocol(protocol: str, csvs: list[Path], work: Path, n: int, truth, timeout: int) -> bool:
    import numpy as np

    load = os.getloadavg()[0]
    ports = ",".join(map(str, free_ports(2)))
    procs, logs, results, outputs = [], [], [], []
    env = dict(os.environ, TMPDIR=str(work))  # SPU's scratch directories go under TMPDIR
    for rank in range(2):
        logs.append(work / f"{protocol}.{rank}.log")
        results.append(work / f"{protocol}.{rank}.json")
        outputs.append(work / f"{protocol}.{rank}.out.csv")
        cmd = [sys.executable, __file__, "--party", str(rank), "--protocol", protocol, "--ports", ports,
               "--input", str(csvs[rank]), "--output", str(outputs[rank]), "--result", str(results[rank]),
               "--timeout", str(timeout)]
        with open(logs[rank], "w") as log:
            procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env))
    deadline = time.monotonic() + timeout
    try:  # wait for both; if one party fails or time runs out, end the other (it would wait for its peer)
        while any(p.poll() is None for p in procs):
            if time.monotonic() > deadline or any(p.returncode for p in procs):
                break
            time.sleep(0.05)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    codes = [p.wait() for p in procs]
    texts = [path.read_text(errors="replace") for path in logs]
    for text in texts:
        remove_traces(text)
    if any(codes) or not all(r.exists() for r in results):
        bad = next((i for i, c in enumerate(codes) if c), 0)
        tail = "\n".join(f"#   {line}" for line in texts[bad].strip().splitlines()[-6:])
        print(f"# spu {protocol} n={n}: party {bad} exit {codes[bad]} (timeout {timeout} s?)\n{tail}", flush=True)
        print(f"peer spu {protocol} {n} nan -1 FAILED", flush=True)
        return False
    got = [json.loads(r.read_text()) for r in results]
    seconds = max(g["seconds"] for g in got)
    with open(outputs[0]) as f:
        f.readline()  # header "k"
        out_keys = np.array(f.read().split(), dtype=np.int64)
    count = got[0]["intersection"]
    ok = count == len(truth) and len(out_keys) == len(truth) and np.array_equal(np.sort(out_keys), truth)
    impl = re.search(r"cryptor_selector\.cc:\d+\] Using (\S+)", texts[0])  # ECDH: which curve code ran
    print(f"peer spu {protocol} {n} {seconds:.6f} {count} {'ok' if ok else 'WRONG'} "
          f"online={online_seconds(texts[0]):.3f} load={load:.2f}{f' impl={impl.group(1)}' if impl else ''}",
          flush=True)
    for path in (*results, *outputs):
        path.unlink(missing_ok=True)
    return ok


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--a", help="party 0 (receiver, left) keys: raw int64 file")
    parser.add_argument("--b", help="party 1 (sender, right) keys: raw int64 file")
    parser.add_argument("--protocols", default=",".join(PROTOCOLS), help=f"subset of {','.join(PROTOCOLS)}")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per protocol run")
    parser.add_argument("--party", type=int, help=argparse.SUPPRESS)  # internal: one party process
    for internal in ("--protocol", "--ports", "--input", "--output", "--result"):
        parser.add_argument(internal, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.party is not None:
        return party_main(args)
    if not (args.a and args.b):
        parser.error("--a and --b are required")
    import numpy as np
    import spu

    keys = [np.fromfile(path, dtype=np.int64) for path in (args.a, args.b)]
    n = len(keys[0])
    truth = np.intersect1d(keys[0], keys[1])
    print(f"# SecretFlow SPU {spu.__version__} (spu.psi.psi_execute, v2 PsiExecuteConfig), 2 party processes "
          f"over brpc on 127.0.0.1, numpy {np.__version__}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="spu-psi-bench-"))
    failed = False
    try:
        csvs = []
        for rank, k in enumerate(keys):
            path = work / f"in{rank}.csv"
            with open(path, "w") as f:
                f.write("k\n")
                f.write("\n".join(map(str, k.tolist())))
                f.write("\n")
            csvs.append(path)
        for protocol in args.protocols.split(","):
            if protocol not in PROTOCOLS:
                parser.error(f"unknown protocol {protocol!r}; choose from {','.join(PROTOCOLS)}")
            failed |= not run_protocol(protocol, csvs, work, n, truth, args.timeout)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
