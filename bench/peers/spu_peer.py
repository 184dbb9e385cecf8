"""Peer benchmark: SecretFlow SPU on the aggregate `bench/spu.py --ops agg_sum,agg_max` times.

Runs in SPU's OWN virtualenv (SPU pins numpy 1.26, so it cannot share sqlsecure's), e.g.

    python3.11 -m venv /work/spu-venv && /work/spu-venv/bin/pip install spu
    /work/spu-venv/bin/python bench/peers/spu_peer.py --sizes 10000,100000,1000000

Setting, chosen to match ours: 2 parties, SEMI2K (additive sharing over Z_2^64 with a trusted
first party producing the Beaver triples — SPU's default `beaver_type`), FM64, both parties as
threads of one process over SPU's in-memory link (`libspu.link.create_mem`, what
`spu.utils.simulation.Simulator` uses). The column is compiled once (JAX -> PPHLO, not timed) and
secret-shared by `Io.make_shares` (not timed, as our `share_input` is not); the timed part is
`Runtime.run` at both parties, from a common start to the last party's finish. SUM is
`jnp.sum(x)`, MAX is `jnp.max(x)` over int32 values in [-1000, 1000) (SPU's default integer
width); the revealed result is checked against numpy.

Output: one line per (op, n): `peer <op> <n> <seconds> <ok|WRONG>`; `bench/spu.py` parses them.
Only this driver lives in sqlsecure's repository; SPU itself stays in its own venv.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time

import numpy as np


def run_once(op: str, n: int, seed: int) -> tuple[float, bool]:
    import jax.numpy as jnp
    import spu.libspu as libspu
    from spu import api as spu_api
    from spu.utils import frontend as spu_fe

    rng = np.random.default_rng(seed)
    x = rng.integers(-1000, 1000, n).astype(np.int32)
    fn = {"sum": jnp.sum, "max": jnp.max}[op]
    config = libspu.RuntimeConfig(protocol=libspu.ProtocolKind.SEMI2K, field=libspu.FieldType.FM64)
    executable, _ = spu_fe.compile(spu_fe.Kind.JAX, fn, (x,), {}, ["in0"], [libspu.Visibility.VIS_SECRET],
                                   lambda out: [f"out{i}" for i in range(len(out))])
    io = spu_api.Io(2, config)
    shares = io.make_shares(x, libspu.Visibility.VIS_SECRET)
    desc = libspu.link.Desc()
    for rank in range(2):
        desc.add_party(f"id_{rank}", f"thread_{rank}")
    start = threading.Barrier(2)
    seconds = [0.0, 0.0]
    outputs: list = [None, None]
    errors: list[BaseException] = []

    def party(rank: int) -> None:
        try:
            link = libspu.link.create_mem(desc, rank)
            rt = spu_api.Runtime(link, libspu.RuntimeConfig(config))
            rt.set_var(executable.input_names[0], shares[rank])
            start.wait()
            t0 = time.perf_counter()
            rt.run(executable)
            seconds[rank] = time.perf_counter() - t0
            outputs[rank] = [rt.get_var(name) for name in executable.output_names]
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
            start.abort()

    threads = [threading.Thread(target=party, args=(r,)) for r in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    got = io.reconstruct([outputs[0][0], outputs[1][0]])
    want = x.astype(np.int64).sum() if op == "sum" else x.max()
    return max(seconds), bool(int(np.asarray(got)) == int(want))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--ops", default="sum,max")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    import spu

    print(f"# SecretFlow SPU {getattr(spu, '__version__', '?')}, SEMI2K FM64, 2 parties as threads (mem link), "
          f"numpy {np.__version__}", flush=True)
    failed = False
    for op in args.ops.split(","):
        for n in (int(float(v)) for v in args.sizes.split(",")):
            seconds, ok = run_once(op, n, args.seed)
            failed |= not ok
            print(f"peer {op} {n} {seconds:.6f} {'ok' if ok else 'WRONG'}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
