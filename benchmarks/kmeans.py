"""k-means: faiss against scikit-learn on 50k x 128 points, K = 7, 65, 345 (time and inertia).

    python -m benchmarks.kmeans [--n 50000] [--dim 128] [--ks 7 65 345]

Both run 20 Lloyd iterations from one initialisation (faiss: random init, nredo=1; scikit-learn:
k-means++, n_init=1, max_iter=20, tol=0), so times compare the engines; inertia is the sum of
squared distances of the returned assignment.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=50000)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--ks", nargs="+", type=int, default=[7, 65, 345])
    args = p.parse_args(argv)
    from sklearn.cluster import KMeans

    from ucdir_core.method.clustering import kmeans

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(400, args.dim)).astype(np.float32)
    x = (centres[rng.integers(0, 400, args.n)] + rng.normal(size=(args.n, args.dim))).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    print("| K | faiss s | faiss inertia | sklearn s | sklearn inertia |")
    print("|---:|---:|---:|---:|---:|")
    for k in args.ks:
        t = time.perf_counter()
        _, _, inertia_f = kmeans(x, k, niter=20, nredo=1, max_points_per_centroid=args.n)
        tf = time.perf_counter() - t
        t = time.perf_counter()
        km = KMeans(k, n_init=1, max_iter=20, tol=0.0, random_state=0).fit(x)
        ts = time.perf_counter() - t
        print(f"| {k} | {tf:.2f} | {inertia_f:.1f} | {ts:.2f} | {km.inertia_:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
