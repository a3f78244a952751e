"""PACS benchmark: every pair, every loss ablation row, both splits, on 2 CPU cores.

    python -m benchmarks.pacs --root ../shared/data/pacs --out results/pacs.json
    python -m benchmarks.pacs --table results/pacs.json      # the README's table of means

Regime: the ``pacs`` preset (``ucdir_core/config.py``; README, "PACS benchmark"). Every method of
a pair and split gets the same budget. Numbers are the last epoch's (no epoch selection). Results
are written after every run, and a rerun skips finished runs. Run folders go to ``runs/pacs``,
where the notebooks find them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from itertools import combinations
from pathlib import Path

import numpy as np
import torch

from ucdir_core import companion as C
from ucdir_core.ablation import ABLATIONS, ablation_config
from ucdir_core.config import get_preset

DOMAINS = ("art_painting", "cartoon", "photo", "sketch")
METHODS = ("baseline", *ABLATIONS)
SEEDED = ("instance", "full")  # rows repeated with a second seed

def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def base_config(root: str):
    """The ``pacs`` preset (the regime) on the PACS folder at ``root``."""
    return get_preset("pacs").replace(root=str(Path(root).resolve()), dataset="pacs")


def regime_text(cfg) -> str:
    """One line naming the training regime of ``cfg`` (stored in the results file)."""
    if cfg.trunk_blocks is None:
        trained = "end to end"
    else:
        trained = (f"stem + stages 0-{cfg.trunk_blocks - 1} frozen, {cfg.cached_views} cached augmented views per "
                   f"image; stages {cfg.trunk_blocks} and up, head conv + MLP head ({cfg.head_init} init) trained"
                   + (" with frozen BatchNorm statistics" if cfg.freeze_bn else ""))
    return (f"{cfg.backbone} ImageNet weights, {cfg.image_size} px; {trained}; key momentum {cfg.momentum}; "
            f"{cfg.epochs} epochs; last epoch")


def parse_pairs(specs: list[str] | None) -> list[tuple[str, str]] | None:
    """``["photo-sketch", ...]`` -> ``[("photo", "sketch"), ...]`` (None when not given)."""
    return [tuple(s.split("-")) for s in specs] if specs else None


def run_method(cfg, method: str, runs: Path) -> dict:
    """Per-direction metrics of one method on one pair (last epoch)."""
    if method == "baseline":  # the pretrained backbone, untrained, same cached evaluation view
        return C.baseline_report(cfg)[0]
    run_dir = runs / C.run_name(cfg, method)
    C.train_or_load(ablation_config(cfg, method), run_dir, progress=False)
    return C.summary(run_dir)["last"]["eval"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default="../shared/data/pacs", help="PACS root (default ../shared/data/pacs)")
    p.add_argument("--out", default="results/pacs.json", help="results file (default results/pacs.json)")
    p.add_argument("--runs", default="runs/pacs", help="run folders (default runs/pacs, shared with the notebooks)")
    p.add_argument("--pairs", nargs="+", help="pairs as A-B (default: all six)")
    p.add_argument("--splits", nargs="+", default=["full", "heldout"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1], help="first seed for every row, the others "
                   "for the instance and full rows (default 0 1)")
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS),
                   help="rows to run (default: all)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override the regime")
    p.add_argument("--table", help="print the README table of means from this results file and exit")
    p.add_argument("--table-pairs", nargs="+", metavar="A-B", help="with --table: average over these pairs only")
    args = p.parse_args(argv)
    if args.table:
        print(means_table(json.loads(Path(args.table).read_text()), parse_pairs(args.table_pairs)))
        return 0
    cfg0 = base_config(args.root).with_overrides(args.set)
    pairs = parse_pairs(args.pairs) or list(combinations(DOMAINS, 2))
    pairs.sort(key=lambda pair: pair != ("photo", "sketch"))  # the notebooks' pair first
    out = Path(args.out)
    res = json.loads(out.read_text()) if out.exists() else {}
    res.update({"dataset": "pacs", "config": cfg0.to_dict(), "seed": args.seeds[0], "commit": git_commit(),
                "regime": regime_text(cfg0),
                "machine": {"cores": os.cpu_count(), "device": "cpu" if not torch.cuda.is_available() else
                            torch.cuda.get_device_name(0), "platform": platform.platform()}})
    res.setdefault("results", {})
    res.setdefault("seeds", {})
    t0 = time.time() - res.get("wall_seconds", 0.0)
    for split in args.splits:
        for a, b in pairs:
            cfg = cfg0.replace(domains=(a, b), split=split)
            for seed in args.seeds:
                for method in args.methods:
                    if seed != args.seeds[0] and (method not in SEEDED or split != "full"):
                        continue  # second seeds: instance and full rows, full split
                    t = time.time()
                    report = run_method(cfg.replace(seed=seed), method, Path(args.runs))
                    bucket = res["results"] if seed == args.seeds[0] else res["seeds"].setdefault(str(seed), {})
                    bucket.setdefault(split, {}).setdefault(method, {}).update(report)
                    res["wall_seconds"] = time.time() - t0
                    out.parent.mkdir(parents=True, exist_ok=True)
                    out.write_text(json.dumps(res, indent=1, sort_keys=True) + "\n")
                    mean = C.mean_over_directions(report)
                    print(f"{split} {a}-{b} {method} seed {seed}: P@1 {mean['P@1']:.1f} mAP {mean['mAP']:.1f} "
                          f"({time.time() - t:.0f} s; total {res['wall_seconds'] / 60:.1f} min)", flush=True)
    print(means_table(res))
    return 0


def _directions(dirs: dict, pairs: list[tuple[str, str]] | None) -> dict:
    """The directions of ``dirs`` ("a->b") whose two domains form one of ``pairs`` (all if None)."""
    if pairs is None:
        return dirs
    keep = {frozenset(p) for p in pairs}
    return {d: v for d, v in dirs.items() if frozenset(d.split("->")) in keep}


def means_table(res: dict, pairs: list[tuple[str, str]] | None = None) -> str:
    """Markdown: mean over directions (of ``pairs`` only, if given) of P@1, P@5, P@15, mAP for
    each split and method."""
    lines = []
    for split, methods in res["results"].items():
        methods = {m: _directions(d, pairs) for m, d in methods.items()}
        if not any(methods.values()):
            raise ValueError(f"no direction of {pairs} in the results")
        n_dirs = max(len(d) for d in methods.values())
        which = "" if pairs is None else " of " + ", ".join("-".join(p) for p in pairs)
        lines += [f"**split {split}** (mean over {n_dirs} directions{which}; last epoch; seed {res['seed']})", "",
                  "| method | P@1 | P@5 | P@15 | mAP |", "|---|---:|---:|---:|---:|"]
        for method in sorted(methods, key=lambda m: METHODS.index(m) if m in METHODS else len(METHODS)):
            dirs = methods[method]
            m = {k: np.mean([v[k] for v in dirs.values()]) for k in ("P@1", "P@5", "P@15", "mAP")}
            extra = ""
            for seed, other in res.get("seeds", {}).items():
                if method in other.get(split, {}):
                    o = _directions(other[split][method], pairs)
                    extra += f" (seed {seed}: P@1 {np.mean([v['P@1'] for v in o.values()]):.1f}, " \
                             f"mAP {np.mean([v['mAP'] for v in o.values()]):.1f})"
            lines.append(f"| {method}{extra} | {m['P@1']:.1f} | {m['P@5']:.1f} | {m['P@15']:.1f} | {m['mAP']:.1f} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
