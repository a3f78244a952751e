"""Retrieval evaluation at scale: blocked P@k / mAP against the naive full-matrix implementation.

    python -m benchmarks.retrieval [--sizes 4400 50000 200000] [--dim 128] [--classes 7]

Prints time and peak memory (resident set growth, from a child process per measurement) of
``ucdir_core.metrics`` and of a naive implementation (full N x N similarity matrix and a full
argsort, as the reference does), which runs only where its matrices fit in --naive-limit-gib.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import time

import numpy as np
import torch


def make_data(n: int, dim: int, classes: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim)).astype(np.float32)
    la, lb = rng.integers(0, classes, n), rng.integers(0, classes, n)
    a = centres[la] + 1.5 * rng.normal(size=(n, dim)).astype(np.float32)
    b = centres[lb] + 1.5 * rng.normal(size=(n, dim)).astype(np.float32)
    return a, la, b, lb


def naive(a, la, b, lb, ks):
    """The reference's way: the whole similarity matrix, a full argsort of every row."""
    a = torch.nn.functional.normalize(torch.from_numpy(a), dim=1)
    b = torch.nn.functional.normalize(torch.from_numpy(b), dim=1)
    la, lb = torch.from_numpy(la), torch.from_numpy(lb)
    order = (a @ b.t()).argsort(dim=1, descending=True)  # N x N
    rel = lb[order] == la[:, None]
    r = torch.bincount(lb, minlength=int(la.max()) + 1)[la]
    out = {}
    for k in ks:
        kk = torch.clamp(r, max=k)
        csum = rel[:, :k].long().cumsum(1)
        out[f"P@{k}"] = 100 * float(csum.gather(1, (kk - 1).clamp(min=0)[:, None]).sum()) / float(kk.sum())
    prec = rel.float().cumsum(1) / torch.arange(1, rel.shape[1] + 1) * rel
    out["mAP"] = 100 * float((prec.sum(1) / r.clamp(min=1)).mean())
    return out


def blocked(a, la, b, lb, ks, with_map=True):
    """ucdir_core.metrics; also the seconds spent in P@k and in mAP."""
    from ucdir_core.metrics import mean_average_precision, precision_at_k

    t = time.perf_counter()
    out = {f"P@{k}": v for k, v in precision_at_k(a, la, b, lb, ks).items()}
    out["seconds_pk"] = time.perf_counter() - t
    if with_map:
        t = time.perf_counter()
        out["mAP"] = mean_average_precision(a, la, b, lb)
        out["seconds_map"] = time.perf_counter() - t
    return out


def _child(which, n, dim, classes, ks, with_map, queue):
    a, la, b, lb = make_data(n, dim, classes)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    res = naive(a, la, b, lb, ks) if which == "naive" else blocked(a, la, b, lb, ks, with_map)
    secs = time.perf_counter() - t
    peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 2**20  # KiB -> GiB
    queue.put({"impl": which, "n": n, "seconds": secs, "peak_gib": peak, **res})


def measure(which, n, dim, classes, ks, with_map=True):
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_child, args=(which, n, dim, classes, ks, with_map, q))
    p.start()
    p.join()
    return q.get() if p.exitcode == 0 else {"impl": which, "n": n, "error": f"exit {p.exitcode}"}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", nargs="+", type=int, default=[4400, 50000, 200000])
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--classes", type=int, default=7)
    p.add_argument("--naive-limit-gib", type=float, default=12.0, help="run the naive one only below this")
    p.add_argument("--map-limit", type=int, default=200000, help="compute mAP only up to this size")
    args = p.parse_args(argv)
    print(f"torch threads {torch.get_num_threads()}, d={args.dim}, classes={args.classes}")
    for n in args.sizes:
        ks = (1, 5, 15) if n <= 10000 else (50, 100, 200)
        with_map = n <= args.map_limit
        rows = [measure("blocked", n, args.dim, args.classes, ks, with_map)]
        naive_gib = n * n * (4 + 8 + 1 + 4) / 2**30  # sims, argsort indices, relevance, cumsum
        if naive_gib < args.naive_limit_gib:
            rows.append(measure("naive", n, args.dim, args.classes, ks))
        else:
            rows.append({"impl": "naive", "n": n, "skipped": f"needs about {naive_gib:.0f} GiB"})
        for r in rows:
            print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()}), flush=True)
        if "seconds" in rows[1] and "seconds" in rows[0]:
            print(f"n={n}: blocked is {rows[1]['seconds'] / rows[0]['seconds']:.1f}x faster than naive", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
