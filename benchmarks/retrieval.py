"""Retrieval evaluation at scale: blocked P@k / mAP against the naive full-matrix implementation.

    python -m benchmarks.retrieval [--sizes 4400 50000 200000] [--dim 128] [--classes 7]

Prints time and peak memory (resident set growth, from a child process per measurement) of
``ucdir_core.evaluation.metrics.retrieval_metrics`` (P@k and mAP in one pass, and P@k alone) and of two
naive implementations (full N x N similarity matrix and a full argsort): ``reference`` follows the
reference's evaluation step for step (numpy argsort, a Python loop over queries for P@k),
``naive`` is the same idea vectorised in torch. They run only where their matrices fit in
--naive-limit-gib. Then, per size, the comparisons: P@k + mAP over P@k alone, the time mAP adds to
P@k (beside the reference's own mAP step on its argsorted matrix), and each naive implementation's
time over the blocked one's.
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


def reference(a, la, b, lb, ks):
    """The reference's evaluation, step for step: the whole cosine-similarity matrix, a full numpy
    argsort of every row, and a Python loop over queries for P@k (counting each query's relevant
    items anew). The reference has no mAP; it is added from the same sorted matrix, and the two
    parts are timed apart (``seconds_pk``: what the reference itself spends)."""
    t = time.perf_counter()
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    order = np.argsort(-(a @ b.T), axis=1)  # N x N
    correct = lb[order] == la[:, None]
    out = {}
    for k in ks:
        total = hits = 0
        for i in range(len(la)):
            k_i = min(k, int((lb == la[i]).sum()))
            total += k_i
            hits += int(correct[i, :k_i].sum())
        out[f"P@{k}"] = 100 * hits / total
    out["seconds_pk"] = time.perf_counter() - t
    t = time.perf_counter()
    r = correct.sum(axis=1)
    prec = np.cumsum(correct, axis=1) / np.arange(1, correct.shape[1] + 1) * correct
    out["mAP"] = 100 * float((prec.sum(axis=1) / np.maximum(r, 1)).mean())
    out["seconds_map"] = time.perf_counter() - t
    return out


def naive(a, la, b, lb, ks):
    """Full matrix and full argsort like the reference, but vectorised in torch (a stronger naive)."""
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
    """ucdir_core.evaluation.metrics.retrieval_metrics: one pass, top-k for P@k, one sort of each row for mAP."""
    from ucdir_core.evaluation.metrics import retrieval_metrics

    return retrieval_metrics(a, la, b, lb, ks, with_map=with_map)


def _child(which, n, dim, classes, ks, with_map, repeats, queue):
    a, la, b, lb = make_data(n, dim, classes)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    runs = []
    for _ in range(repeats):  # the fastest of `repeats` runs, as timeit reports
        t = time.perf_counter()
        if which == "reference":
            res = reference(a, la, b, lb, ks)
        elif which == "naive":
            res = naive(a, la, b, lb, ks)
        else:
            res = blocked(a, la, b, lb, ks, with_map and which == "blocked")
        runs.append({**res, "seconds": time.perf_counter() - t})
    best = {k: min(r[k] for r in runs) if k.startswith("seconds") else v for k, v in runs[0].items()}
    peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 2**20  # KiB -> GiB
    queue.put({"impl": which, "n": n, "repeats": repeats, "peak_gib": peak, **best})


def measure(which, n, dim, classes, ks, with_map=True, repeats=1):
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_child, args=(which, n, dim, classes, ks, with_map, repeats, q))
    p.start()
    p.join()
    return q.get() if p.exitcode == 0 else {"impl": which, "n": n, "error": f"exit {p.exitcode}"}


def summary(rows: list[dict]) -> list[str]:
    """The comparisons of one size's rows (``rows[0]`` the blocked run, with mAP if the next row is
    the blocked P@k alone), as lines of text."""
    blocked_row, by_impl = rows[0], {r["impl"]: r for r in rows[1:]}
    if "seconds" not in blocked_row:
        return [f"blocked failed ({blocked_row.get('error')})"]
    both = "mAP" in blocked_row
    what = "P@k + mAP" if both else "P@k"
    lines = [f"blocked {what} {blocked_row['seconds']:.3f} s, peak {blocked_row['peak_gib']:.3f} GiB"]
    alone = by_impl.get("blocked-P@k-only", {})
    if both and "seconds" in alone:
        lines.append(f"blocked P@k alone {alone['seconds']:.3f} s: P@k + mAP takes "
                     f"{blocked_row['seconds'] / alone['seconds']:.2f}x the time of P@k alone")
        extra = blocked_row["seconds"] - alone["seconds"]
        ref_map = by_impl.get("reference", {}).get("seconds_map")
        lines.append(f"mAP on top of P@k {extra:.3f} s" + ("" if ref_map is None else
                     f" (the reference's mAP from its argsorted matrix: {ref_map:.3f} s)"))
    for impl, how in (("reference", "numpy argsort, loop over queries"), ("naive", "torch argsort")):
        r = by_impl.get(impl, {})
        if "seconds" in r:
            lines.append(f"{impl} ({how}; P@k + mAP) {r['seconds']:.3f} s: "
                         f"{r['seconds'] / blocked_row['seconds']:.2f}x the time of blocked {what}")
        if impl == "reference" and "seconds_pk" in r and "seconds" in alone:
            lines.append(f"reference's own P@k (matrix, argsort, loop) {r['seconds_pk']:.3f} s: "
                         f"{r['seconds_pk'] / alone['seconds']:.2f}x the time of blocked P@k alone")
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", nargs="+", type=int, default=[4400, 50000, 200000])
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--classes", type=int, default=7)
    p.add_argument("--naive-limit-gib", type=float, default=12.0, help="run the naive one only below this")
    p.add_argument("--map-limit", type=int, default=200000, help="compute mAP only up to this size")
    p.add_argument("--repeats", type=int, default=3, help="runs per measurement for sizes up to 10,000 (the "
                   "fastest is reported; larger sizes run once)")
    args = p.parse_args(argv)
    print(f"torch threads {torch.get_num_threads()}, d={args.dim}, classes={args.classes}")
    for n in args.sizes:
        ks = (1, 5, 15) if n <= 10000 else (50, 100, 200)
        with_map = n <= args.map_limit
        rep = args.repeats if n <= 10000 else 1
        rows = [measure("blocked", n, args.dim, args.classes, ks, with_map, rep)]
        if with_map:
            rows.append(measure("blocked-P@k-only", n, args.dim, args.classes, ks, False, rep))
        naive_gib = n * n * (4 + 8 + 1 + 8) / 2**30  # sims, argsort indices, relevance, cumsum
        for impl in ("reference", "naive"):
            if naive_gib < args.naive_limit_gib:
                rows.append(measure(impl, n, args.dim, args.classes, ks, repeats=rep))
            else:
                rows.append({"impl": impl, "n": n, "skipped": f"needs about {naive_gib:.0f} GiB"})
        for r in rows:
            print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()}), flush=True)
        for line in summary(rows):
            print(f"n={n}: {line}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
