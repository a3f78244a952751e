"""How fast ``ucdir retrieve`` answers from a gallery index, against the floor of any torch program.

    python -m benchmarks.retrieval_cli [--gallery digits|pacs] [--repeats 3] [--work DIR] [--no-sweep]

Trains a tiny run (the embedded digits, preset ``digits_scratch``, row ``instance``, one epoch,
16 px), indexes a gallery of about 4,000 images with ``ucdir index RUN --gallery DIR`` (``digits``:
the printed digits built 400 per class, 4,000 images; ``pacs``: PACS's 3,929 sketches at
``../shared/data/pacs``, read only) and a 400-image part of it, then times fresh processes,
interleaved, the median of ``--repeats``:

- the floor: ``python -c "import torch, torchvision"``;
- ``ucdir --help`` and a command with a missing argument;
- cold ``ucdir retrieve RUN QUERY --index NAME``: 1 query on the 400- and on the 4,000-image
  gallery (what grows with the gallery), and 100 queries (one folder) on the 4,000-image one;

and prints each with its ratio to the floor (targets: retrieve 1 query <= 1.5x, 100 queries <= 3x,
help and option errors < 1 s). Then, unless ``--no-sweep``, the search sweep behind
``ucdir_core.evaluation.index.HNSW_FROM``: for synthetic clustered unit embeddings (128-d, a 16-d
latent mixture of 65 classes: real embeddings have a low intrinsic dimension; on 128 independent
dimensions HNSW's recall is far lower) of 16,000 to 64,000 rows, the time to read the index and
search 1 and 100 queries, exact (``IndexFlatIP``) and HNSW, and HNSW's recall@10 against exact
search at ``HNSW_FROM`` rows and on the real gallery's embeddings. Nothing is timed in the tests.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACS = REPO.parent / "shared" / "data" / "pacs"


def ucdir_command() -> list[str]:
    """How a user starts ``ucdir``: the console script beside this Python, else the same import."""
    script = Path(sys.executable).parent / "ucdir"
    return [str(script)] if script.exists() else [sys.executable, "-c", "import sys; from ucdir_core.cli import main; "
                                                                         "sys.exit(main())"]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def run(cmd: list[str], expect: int = 0) -> float:
    """Seconds ``cmd`` takes, in a fresh process; refuses another exit status than ``expect``."""
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env(), cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode != expect:
        raise SystemExit(f"{' '.join(cmd)} exited {done.returncode}: {done.stderr.strip()[-2000:]}")
    if expect == 0 and "note:" in done.stderr:
        raise SystemExit(f"{' '.join(cmd)} did not use its index: {done.stderr.strip()}")
    return seconds


def prepare(work: Path, gallery: str) -> tuple[Path, Path, Path]:
    """The run, one query image and a folder of 100 query images; indexes ``g4k`` and ``g400``."""
    ucdir = ucdir_command()
    digits = work / "digits"
    subprocess.run([*ucdir, "data", "digits", str(digits), "--per-class", "12"], env=env(), check=True,
                   capture_output=True)
    rundir = work / "run"
    subprocess.run([*ucdir, "train", "--preset", "digits_scratch", "--root", str(digits), "--run-dir", str(rundir),
                    "--epochs", "1", "--row", "instance", "--quiet", "--device", "cpu", "--set", "image_size=16",
                    "--set", "resize_size=16", "--set", "max_images_per_domain=96", "--set", "batch_size=16",
                    "--set", "workers=0"], env=env(), check=True, capture_output=True)
    if gallery == "pacs":
        if not (PACS / "sketch").is_dir():
            raise SystemExit(f"no PACS sketches at {PACS / 'sketch'}")
        big = PACS / "sketch"
    else:
        built = work / "gallery"
        subprocess.run([*ucdir, "data", "digits", str(built), "--per-class", "400"], env=env(), check=True,
                       capture_output=True)
        big = built / "printed"
    small = work / "gallery400"
    files = sorted(p for p in big.rglob("*") if p.is_file())
    for p in files[:: max(1, len(files) // 400)][:400]:
        dst = small / p.relative_to(big)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(p, dst)
    for name, folder in (("g4k", big), ("g400", small)):
        t0 = time.perf_counter()
        subprocess.run([*ucdir, "index", str(rundir), "--gallery", str(folder), "--name", name], env=env(),
                       check=True, capture_output=True)
        print(f"`ucdir index RUN --gallery {folder} --name {name}`: {time.perf_counter() - t0:.1f} s", flush=True)
    queries = work / "queries"
    queries.mkdir(exist_ok=True)
    handwritten = sorted((digits / "handwritten").rglob("*.png"))
    for i, p in enumerate(handwritten[:: len(handwritten) // 100][:100]):
        shutil.copy(p, queries / f"{i:03d}.png")
    return rundir, queries / "000.png", queries


def timings(rundir: Path, query: Path, queries: Path, repeats: int) -> dict[str, float]:
    ucdir = ucdir_command()
    cmds = {
        "import": ([sys.executable, "-c", "import torch, torchvision"], 0),
        "help": ([*ucdir, "--help"], 0),
        "bad option": ([*ucdir, "retrieve", str(rundir)], 2),
        "retrieve 1, 400": ([*ucdir, "retrieve", str(rundir), str(query), "--index", "g400"], 0),
        "retrieve 1, 4k": ([*ucdir, "retrieve", str(rundir), str(query), "--index", "g4k"], 0),
        "retrieve 100, 4k": ([*ucdir, "retrieve", str(rundir), str(queries), "--index", "g4k"], 0),
    }
    run(cmds["import"][0])  # file caches warm, as for any second command of a session
    seen: dict[str, list[float]] = {k: [] for k in cmds}
    for _ in range(repeats):
        for name, (cmd, code) in cmds.items():
            seen[name].append(run(cmd, code))
    return {k: statistics.median(v) for k, v in seen.items()}


def gallery_costs(folder: Path) -> str:
    """What a query pays for the gallery besides the search: reading the index and checking that it
    is fresh (a stat per gallery file), in this process, the median of 5."""
    from ucdir_core.evaluation import index as gi

    read, check = [], []
    for _ in range(5):
        t0 = time.perf_counter()
        g = gi.read_index(folder)
        t1 = time.perf_counter()
        assert gi.stale_reason(g.meta, g.meta["checkpoint"]["digest"], g.root) is None
        read.append(t1 - t0)
        check.append(time.perf_counter() - t1)
    return (f"of which the gallery's own part, {g.meta['count']:,} rows: reading the index "
            f"{statistics.median(read) * 1e3:.0f} ms, the freshness check (a stat per file) "
            f"{statistics.median(check) * 1e3:.0f} ms")


def report(t: dict[str, float], gallery_rows: int, repeats: int) -> list[str]:
    floor = t["import"]
    return [
        f"bare `python -c \"import torch, torchvision\"`: {floor:.2f} s (median of {repeats}, fresh processes)",
        f"`ucdir --help`: {t['help']:.2f} s; a missing argument (`ucdir retrieve RUN`, exit 2): "
        f"{t['bad option']:.2f} s",
        f"cold `ucdir retrieve RUN QUERY --index NAME`, 1 query, 400-image gallery: {t['retrieve 1, 400']:.2f} s "
        f"= {t['retrieve 1, 400'] / floor:.2f}x the import",
        f"cold `ucdir retrieve`, 1 query, {gallery_rows:,}-image gallery: {t['retrieve 1, 4k']:.2f} s "
        f"= {t['retrieve 1, 4k'] / floor:.2f}x the import (target 1.5x)",
        f"cold `ucdir retrieve`, 100 queries (one folder), {gallery_rows:,}-image gallery: "
        f"{t['retrieve 100, 4k']:.2f} s = {t['retrieve 100, 4k'] / floor:.2f}x the import (target 3x)",
    ]


def clustered(n: int, seed: int, dim: int = 128, latent: int = 16, classes: int = 65):
    """Unit rows with a low intrinsic dimension: a mixture of ``classes`` in a ``latent``-d space,
    mapped to ``dim`` dimensions, with a little isotropic noise."""
    import numpy as np

    rng = np.random.default_rng(0)
    w = rng.normal(size=(latent, dim))
    centres = 2 * rng.normal(size=(classes, latent))
    rng = np.random.default_rng(seed + 1)
    z = centres[rng.integers(classes, size=n)] + rng.normal(size=(n, latent))
    x = z @ w + 0.3 * rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def recall_at_10(exact, approx) -> float:
    return float(sum(len(set(a) & set(b)) for a, b in zip(exact, approx)) / (10 * len(exact)))


def sweep(work: Path, gallery_embeddings, sizes: list[int]) -> list[str]:
    """Read + search times of exact and HNSW indexes by size, and HNSW's recall@10."""
    import faiss
    import numpy as np

    from ucdir_core.evaluation import index as gi

    lines = ["", "search sweep (synthetic clustered unit rows, 128-d; read the index file, then search, median of "
             f"5; HNSW M={gi.HNSW_M}, efConstruction={gi.HNSW_EF_CONSTRUCTION}, efSearch={gi.HNSW_EF_SEARCH}):",
             "| rows | exact: read + 1 query | read + 100 | HNSW: read + 1 query | read + 100 | HNSW build "
             "| recall@10 |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    queries = clustered(100, 7)
    for n in sorted(set(sizes) | {gi.HNSW_FROM}):
        x = clustered(n, 0)
        cells = []
        found = {}
        for hnsw_from in (n + 1, n):  # exact, then HNSW
            t0 = time.perf_counter()
            index = gi.build_faiss(x, hnsw_from=hnsw_from)
            build = time.perf_counter() - t0
            path = work / f"sweep-{n}.faiss"
            faiss.write_index(index, str(path))
            for q in (queries[:1], queries):
                seconds = []
                for _ in range(5):
                    t0 = time.perf_counter()
                    loaded = faiss.deserialize_index(np.fromfile(path, dtype=np.uint8))
                    _, ids = loaded.search(q, 10)
                    seconds.append(time.perf_counter() - t0)
                cells.append(f"{statistics.median(seconds) * 1e3:.0f} ms")
            found[hnsw_from == n] = ids
            path.unlink()
        rec = recall_at_10(found[False], found[True])
        lines.append(f"| {n:,}{' (HNSW_FROM)' if n == gi.HNSW_FROM else ''} | {' | '.join(cells)} | {build:.1f} s | "
                     f"{rec:.3f} |")
    if gallery_embeddings is not None:
        emb = gallery_embeddings
        q = emb[:: max(1, len(emb) // 100)][:100]
        _, exact = gi.build_faiss(emb, hnsw_from=len(emb) + 1).search(q, 11)
        _, approx = gi.build_faiss(emb, hnsw_from=1).search(q, 11)
        lines.append(f"HNSW recall@10 against exact search on the real gallery's {len(emb):,} embeddings (HNSW "
                     f"forced): {recall_at_10(exact[:, 1:], approx[:, 1:]):.3f}")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gallery", choices=["digits", "pacs"], default="digits", help="the 4k-image gallery (default "
                   "digits: the printed digits built 400 per class)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs of each command (default 5; the median)")
    p.add_argument("--work", help="working folder (default: a temporary one, removed)")
    p.add_argument("--no-sweep", action="store_true", help="skip the exact-versus-HNSW sweep")
    p.add_argument("--sizes", default="16000,32000,64000", help="rows of the sweep (default 16000,32000,64000)")
    args = p.parse_args(argv)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="ucdir-retrieval-cli-"))
    os.environ.setdefault("UCDIR_DATA", str(work / "data-home"))
    try:
        rundir, query, queries = prepare(work, args.gallery)
        from ucdir_core.evaluation.index import read_index

        g4k = read_index(rundir / "index" / "g4k", embeddings=True)
        print(f"machine: {os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f}; gallery "
              f"{g4k.meta['source']} ({g4k.meta['count']:,} rows, {g4k.meta['faiss']})", flush=True)
        lines = report(timings(rundir, query, queries, args.repeats), g4k.meta["count"], args.repeats)
        lines.append(gallery_costs(rundir / "index" / "g4k"))
        print("\n".join(lines), flush=True)
        if not args.no_sweep:
            print("\n".join(sweep(work, g4k.embeddings, [int(s) for s in args.sizes.split(",")])), flush=True)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
