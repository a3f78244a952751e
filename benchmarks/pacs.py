"""PACS benchmark: every pair, the anchors, every loss ablation row of UCDIR, the rows of its
successor ProtoOT (``protoot``, and ``protoot_in_domain``: its in-domain loss only) and the aligned
rows, both splits, seed 0, on 2 CPU cores (the grid: 101 min from scratch, view caches included;
docs/results.md, "PACS benchmark"). Two parts run by their own invocations into the same file:
the second seed (``--rows instance full protoot --seeds 0 1``) and one run of the paper's
end-to-end code path (``--end-to-end-only``).

    python -m benchmarks.pacs --root ../shared/data/pacs --out results/pacs.json     # the grid
    python -m benchmarks.pacs --rows instance full protoot --seeds 0 1                # second seeds
    python -m benchmarks.pacs --end-to-end-only                                       # end-to-end part
    python -m benchmarks.pacs --table results/pacs.json      # the README's table of means

Regime: the ``pacs`` preset (``ucdir_core/config/presets.py``; docs/results.md, "PACS benchmark"). Every row of
a pair and split gets the same budget. Numbers are the last epoch's (no epoch selection). Rows
``baseline``, ``centred`` and ``oracle`` are the anchors (:mod:`ucdir_core.evaluation.anchors`), computed from
the same untrained features of the same evaluated images. ``alignment[split][row]["a-b"]``
holds domain mixing and class agreement of every row. Second seeds (``seeds``): ``instance``,
``full`` and ``protoot``, full split. ``end_to_end`` is the paper's code path
(:func:`end_to_end_config`). Results are written after every run, and a rerun skips finished
runs. Run folders go to ``runs/pacs``, where the notebooks find them.

Rows ``baseline+harmony``, ``full+harmony`` and ``protoot+harmony``: the alignment stage (Harmony,
with the regime's ``harmony_*`` settings, chosen on the tuning pairs by ``benchmarks.harmony_tuning``)
fitted on the training images' embeddings of that row with the domain as the batch variable (no
label) and applied to its evaluated images. ``class_discovery[split][row]["a-b"]``: adjusted Rand
index and balance of k-means with K = 7 on both domains' evaluated embeddings together, for those
rows and the rows they align (why P@1 moves or not).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from itertools import combinations
from pathlib import Path

import numpy as np
import torch

from ucdir_core import companion as C
from ucdir_core.companion.results import read_results
from ucdir_core.config.presets import get_preset, preset_for_method
from ucdir_core.config.rows import ROWS, row_config, row_method
from ucdir_core.config.run import RunConfig, config_differences
from ucdir_core.evaluation.anchors import ANCHORS

DOMAINS = ("art_painting", "cartoon", "photo", "sketch")
#: rows of the label-free alignment stage (Harmony, ``ucdir_core.align``) on another row's embeddings:
#: the untrained backbone, UCDIR ``full``, ProtoOT
ALIGNED_ROWS = {"baseline+harmony": "baseline", "full+harmony": "full", "protoot+harmony": "protoot"}
BENCH_ROWS = (*ANCHORS, *ROWS, *ALIGNED_ROWS)  # every row the benchmark can compute
#: rows of the tables: each aligned row after its own, the ceiling last
TABLE_ORDER = tuple(x for r in ("baseline", "centred", *ROWS) for x in (r, f"{r}+harmony")
                    if x == r or x in ALIGNED_ROWS) + ("oracle",)
SEEDED = ("instance", "full", "protoot")  # rows repeated with a second seed

def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def base_config(root: str):
    """The ``pacs`` preset (the regime) on the PACS folder at ``root``."""
    return get_preset("pacs").replace(root=os.path.abspath(root), dataset="pacs")


def regime_differences(saved: dict | None, cfg: RunConfig) -> list[str]:
    """Config keys in which a results file's regime (``saved``, its ``config``) differs from
    ``cfg``, the data root aside; empty when there is no saved regime."""
    return config_differences(saved, cfg, ignore=("root",)) if saved else []


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


#: what a row's run takes from the pair's config when the row's method is another (its data and seed)
DATA_KEYS = ("root", "dataset", "domains", "split", "seed")


def row_run_config(cfg: RunConfig, row: str) -> RunConfig:
    """``cfg`` (the ``pacs`` preset on one pair, split and seed) as table row ``row``: a row of
    another method starts from that method's counterpart of the preset (``protoot_pacs``) on the
    same data, split and seed."""
    method = row_method(row)
    if method != cfg.method:
        cfg = get_preset(preset_for_method("pacs", method)).replace(**{k: getattr(cfg, k) for k in DATA_KEYS})
    return row_config(cfg, row)


def run_row(cfg, row: str, runs: Path) -> tuple[dict, dict, float]:
    """Per-direction metrics of one trained table row on one pair (last epoch), its alignment
    (domain mixing, class agreement and prototype spread of the last evaluated epoch), and the
    run's training time (the sum of its epochs' wall times, also when it was read back)."""
    run_dir = runs / C.run_name(cfg, row)
    history = C.train_or_load(row_run_config(cfg, row), run_dir, progress=False)
    last = [r for r in history if "eval" in r][-1]
    return last["eval"], last.get("alignment", {}), float(sum(r.get("wall_seconds", 0.0) for r in history))


def alignment_params(cfg: RunConfig):
    """The alignment stage of the aligned rows: Harmony with ``cfg``'s ``harmony_*`` settings."""
    return cfg.alignment_params.replace(alignment="harmony")


def run_aligned_row(cfg: RunConfig, row: str, runs: Path, features: dict | None = None) -> dict:
    """:func:`ucdir_core.companion.compare_alignment` for aligned row ``row`` on one pair and split:
    the untrained ``features`` (:func:`ucdir_core.companion.untrained_features`) for
    ``baseline+harmony``, the trained run (trained now if it is not yet) for the others."""
    base = ALIGNED_ROWS[row]
    params = alignment_params(cfg)
    if base == "baseline":
        f = features if features is not None else C.untrained_features(cfg)
        return C.compare_alignment(f["train"], f["test"], f["test_labels"], cfg, params)
    run_row(cfg, base, runs)
    return C.run_alignment(runs / C.run_name(cfg, base), params)


def end_to_end_config(root: str, pair: tuple[str, str] = ("photo", "sketch"), epochs: int = 8,
                      image_size: int = 64, momentum: float = 0.99, lr: float = 2e-4,
                      freeze_bn: bool = True, head_init: str = "random") -> RunConfig:
    """The paper's code path on PACS, compressed: the ``domainnet`` preset (its 7 clusters, loss
    weights, temperatures and learning rate; the DomainNet subset also has 7 classes), end to end
    (no frozen trunk, no view cache), the reference's random MLP head; ``epochs`` instead of 200
    with the phases in the paper's proportions (clustering and the cluster-wise ramp from 10 %,
    saturating at 50 %, self-entropy and distance-of-distance from 50 %), at ``image_size`` px.
    The key momentum is compressed with the schedule (0.999 is a time constant of 1,000 of the
    paper's ~13,000 steps). Evaluated every epoch, P@1/5/15 as in the PACS tables.

    One deviation by default, ``freeze_bn``: the backbone's BatchNorm layers keep their pretrained
    running statistics. Trained in batch-statistics mode, as in the reference, one epoch replaces
    them with those of the augmented training batches, and the evaluated features fall from P@1
    28 to 17 on photo<->sketch at 64 px *with a learning rate of 1e-9* (no weight moved): a
    compressed schedule leaves the weights no time to adapt to the new statistics (docs/results.md,
    "The paper's code path").

    ``head_init="pca"`` replaces the reference's random MLP head with this project's identity + PCA
    initialisation (a diagnosis: with the random head, the compressed schedule ends below the
    untrained features' P@1; docs/results.md, "The paper's code path").
    """
    paper = get_preset("domainnet")
    p = paper.method_params
    frac = epochs / paper.epochs
    at = lambda e: max(1, round(e * frac))  # noqa: E731
    return paper.replace(
        dataset="pacs", root=os.path.abspath(root), domains=tuple(pair), image_size=image_size,
        resize_size=image_size, epochs=epochs, clustering_start=at(p.clustering_start),
        cluster_contrastive_ramp_after=at(p.cluster_contrastive_ramp_after),
        cluster_contrastive_ramp_end=at(p.cluster_contrastive_ramp_end), self_entropy_start=at(p.self_entropy_start),
        distance_of_distance_start=at(p.distance_of_distance_start), momentum=momentum,
        lr=lr, freeze_bn=freeze_bn, head_init=head_init, eval_ks=(1, 5, 15), eval_every=1, workers=0,
        kmeans_restarts=1)


def run_end_to_end(cfg: RunConfig, runs: Path, rows=("baseline", "instance", "full")) -> dict:
    """``{"pair", "config", "results": {row: {direction: metrics}}, "alignment", "wall_seconds"}``
    of the end-to-end runs (last epoch); ``wall_seconds``: the baseline's time plus the runs' own
    epoch times (so that reading finished runs back does not change it)."""
    out = {"pair": list(cfg.domains), "config": cfg.to_dict(), "results": {}, "alignment": {}, "wall_seconds": 0.0}
    for row in rows:
        if row == "baseline":
            t0 = time.time()
            reports, alignment = C.anchor_rows(cfg)
            out["results"]["baseline"], out["alignment"]["baseline"] = reports["baseline"], alignment["baseline"]
            out["wall_seconds"] += time.time() - t0
            continue
        report, alignment, seconds = run_row(cfg, row, runs / "end_to_end")
        out["wall_seconds"] += seconds
        out["results"][row] = report
        out["alignment"][row] = {k: alignment[k] for k in ("domain_mixing", "class_agreement") if k in alignment}
        print(f"end to end {'-'.join(cfg.domains)} {row}: {C.mean_over_directions(report)}", flush=True)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default="../shared/data/pacs", help="PACS root (default ../shared/data/pacs)")
    p.add_argument("--out", default="results/pacs.json", help="results file (default results/pacs.json)")
    p.add_argument("--runs", default="runs/pacs", help="run folders (default runs/pacs, shared with the notebooks)")
    p.add_argument("--pairs", nargs="+", help="pairs as A-B (default: all six)")
    p.add_argument("--splits", nargs="+", default=["full", "heldout"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0], help="first seed for every row, the others "
                   "for the instance, full and protoot rows on the full split (default 0)")
    p.add_argument("--rows", "--methods", dest="rows", nargs="+", choices=BENCH_ROWS, default=list(BENCH_ROWS),
                   help="rows to run (default: all)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override the regime")
    p.add_argument("--end-to-end", action=argparse.BooleanOptionalAction, default=False,
                   help="also run the paper's end-to-end code path on one pair (default: off; "
                   "--end-to-end-only runs it alone)")
    p.add_argument("--end-to-end-only", action="store_true", help="run only the end-to-end part")
    p.add_argument("--end-to-end-pair", nargs=2, default=["photo", "sketch"], metavar=("A", "B"))
    p.add_argument("--end-to-end-epochs", type=int, default=8)
    p.add_argument("--end-to-end-size", type=int, default=64, help="image size of the end-to-end run (px)")
    p.add_argument("--end-to-end-momentum", type=float, default=0.99)
    p.add_argument("--end-to-end-lr", type=float, default=2e-4)
    p.add_argument("--end-to-end-bn", choices=["frozen", "trained"], default="frozen",
                   help="BatchNorm statistics of the end-to-end run (default frozen; trained is the reference's)")
    p.add_argument("--end-to-end-head", choices=["random", "pca"], default="random",
                   help="MLP head of the end-to-end run (default random, the reference's; pca is this project's)")
    p.add_argument("--table", help="print the README table of means from this results file and exit")
    p.add_argument("--table-pairs", nargs="+", metavar="A-B", help="with --table: average over these pairs only")
    args = p.parse_args(argv)
    if args.table:
        res = read_results(args.table)
        print(means_table(res, parse_pairs(args.table_pairs)))
        if not args.table_pairs:
            print(alignment_table(res))
            print(discovery_table(res))
            print(end_to_end_table(res))
        return 0
    cfg0 = base_config(args.root).with_overrides(args.set)
    pairs = parse_pairs(args.pairs) or list(combinations(DOMAINS, 2))
    pairs.sort(key=lambda pair: pair != ("photo", "sketch"))  # the notebooks' pair first
    out = Path(args.out)
    res = read_results(out) if out.exists() else {}
    differs = regime_differences(res.get("config"), cfg0)
    if differs:
        print(f"error: {out} holds results of another regime (differs in {', '.join(differs[:6])}); "
              "write them to another --out", file=sys.stderr)
        return 2
    invocation = {"commit": git_commit(), "argv": list(sys.argv[1:] if argv is None else argv),
                  "machine": {"cores": os.cpu_count(), "device": "cpu" if not torch.cuda.is_available() else
                              torch.cuda.get_device_name(0), "platform": platform.platform()}}
    # a file filled by several invocations (a partial rerun, the end-to-end part alone) lists them
    # all; the top-level commit and machine are the latest one's
    res.setdefault("invocations", []).append(invocation)
    res.update({"dataset": "pacs", "config": {**cfg0.to_dict(), "root": args.root}, "regime": regime_text(cfg0),
                "commit": invocation["commit"], "machine": invocation["machine"]})
    res.setdefault("seed", args.seeds[0])
    for key in ("results", "seeds", "alignment"):
        res.setdefault(key, {})
    started = time.time()
    t0 = started - res.get("wall_seconds", 0.0)

    def save() -> None:
        # wall_seconds: every invocation's time together; an invocation's own: its "seconds"
        res["wall_seconds"] = time.time() - t0
        invocation["seconds"] = time.time() - started
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(res, indent=1, sort_keys=True) + "\n")

    for split in [] if args.end_to_end_only else args.splits:
        for a, b in pairs:
            cfg = cfg0.replace(domains=(a, b), split=split)
            pair_key = f"{a}-{b}"
            features = None  # the untrained features, computed once for the anchors and baseline+harmony
            if any(m in ANCHORS for m in args.rows) and args.seeds:
                t = time.time()
                features = C.untrained_features(cfg.replace(seed=args.seeds[0]))
                reports, alignment = C.anchor_rows(cfg.replace(seed=args.seeds[0]), features=features)
                for anchor in ANCHORS:
                    res["results"].setdefault(split, {}).setdefault(anchor, {}).update(reports[anchor])
                    res["alignment"].setdefault(split, {}).setdefault(anchor, {})[pair_key] = alignment[anchor]
                save()
                print(f"{split} {a}-{b} anchors: " + ", ".join(
                    f"{n} P@1 {C.mean_over_directions(r)['P@1']:.1f}" for n, r in reports.items())
                    + f" ({time.time() - t:.0f} s)", flush=True)
            for row in [r for r in args.rows if r in ALIGNED_ROWS]:
                t = time.time()
                rcfg = cfg.replace(seed=args.seeds[0])
                if ALIGNED_ROWS[row] == "baseline" and features is None:
                    features = C.untrained_features(rcfg)
                cmp = run_aligned_row(rcfg, row, Path(args.runs), features)
                res["results"].setdefault(split, {}).setdefault(row, {}).update(cmp["after"]["eval"])
                for name, m in ((row, cmp["after"]), (ALIGNED_ROWS[row], cmp["before"])):
                    if name == row:
                        res["alignment"].setdefault(split, {}).setdefault(row, {})[pair_key] = {
                            k: m[k] for k in ("domain_mixing", "class_agreement")}
                    res.setdefault("class_discovery", {}).setdefault(split, {}).setdefault(name, {})[pair_key] = {
                        k: m[k] for k in ("adjusted_rand", "balance")}
                save()
                mean = C.mean_over_directions(cmp["after"]["eval"])
                print(f"{split} {a}-{b} {row}: P@1 {mean['P@1']:.1f} mAP {mean['mAP']:.1f} mixing "
                      f"{cmp['after']['domain_mixing']:.3f} ARI {cmp['before']['adjusted_rand']:.2f} -> "
                      f"{cmp['after']['adjusted_rand']:.2f} ({time.time() - t:.0f} s; total "
                      f"{res['wall_seconds'] / 60:.1f} min)", flush=True)
            for seed in args.seeds:
                for row in args.rows:
                    if row in ANCHORS or row in ALIGNED_ROWS or (seed != args.seeds[0] and (row not in SEEDED or split != "full")):
                        continue  # second seeds: the SEEDED rows, full split
                    t = time.time()
                    report, alignment, _ = run_row(cfg.replace(seed=seed), row, Path(args.runs))
                    bucket = res["results"] if seed == args.seeds[0] else res["seeds"].setdefault(str(seed), {})
                    bucket.setdefault(split, {}).setdefault(row, {}).update(report)
                    if seed == args.seeds[0]:
                        res["alignment"].setdefault(split, {}).setdefault(row, {})[pair_key] = {
                            k: alignment[k] for k in ("domain_mixing", "class_agreement") if k in alignment}
                    save()
                    mean = C.mean_over_directions(report)
                    print(f"{split} {a}-{b} {row} seed {seed}: P@1 {mean['P@1']:.1f} mAP {mean['mAP']:.1f} "
                          f"({time.time() - t:.0f} s; total {res['wall_seconds'] / 60:.1f} min)", flush=True)
    if args.end_to_end or args.end_to_end_only:
        e2e = end_to_end_config(args.root, tuple(args.end_to_end_pair), args.end_to_end_epochs,
                                args.end_to_end_size, args.end_to_end_momentum, args.end_to_end_lr,
                                args.end_to_end_bn == "frozen", args.end_to_end_head)
        res["end_to_end"] = run_end_to_end(e2e, Path(args.runs))
        res["end_to_end"]["config"]["root"] = args.root  # as given: no machine path in the results file
        save()
    print(means_table(res))
    return 0


def _directions(dirs: dict, pairs: list[tuple[str, str]] | None) -> dict:
    """The directions of ``dirs`` ("a->b") whose two domains form one of ``pairs`` (all if None)."""
    if pairs is None:
        return dirs
    keep = {frozenset(p) for p in pairs}
    return {d: v for d, v in dirs.items() if frozenset(d.split("->")) in keep}


def _mean(dirs: dict, key: str) -> float:
    return float(np.mean([v[key] for v in dirs.values()]))


def means_table(res: dict, pairs: list[tuple[str, str]] | None = None) -> str:
    """Markdown: mean over directions (of ``pairs`` only, if given) of P@1, P@5, P@15, mAP for
    each split and method, and the share of the baseline -> oracle gap in P@1 and mAP that each
    row closes (when both anchors are in the results)."""
    lines = []
    for split, rows in res["results"].items():
        rows = {m: _directions(d, pairs) for m, d in rows.items()}
        if not any(rows.values()):
            raise ValueError(f"no direction of {pairs} in the results")
        n_dirs = max(len(d) for d in rows.values())
        which = "" if pairs is None else " of " + ", ".join("-".join(p) for p in pairs)
        gap = "baseline" in rows and "oracle" in rows
        lines += [f"**split {split}** (mean over {n_dirs} directions{which}; last epoch; seed {res['seed']})", "",
                  "| row | P@1 | P@5 | P@15 | mAP |" + (" gap closed, P@1 / mAP |" if gap else ""),
                  "|---|---:|---:|---:|---:|" + ("---:|" if gap else "")]
        for name in sorted(rows, key=lambda m: TABLE_ORDER.index(m) if m in TABLE_ORDER else len(TABLE_ORDER)):
            dirs = rows[name]
            m = {k: _mean(dirs, k) for k in ("P@1", "P@5", "P@15", "mAP")}
            extra = ""
            for seed, other in res.get("seeds", {}).items():
                if name in other.get(split, {}):
                    o = _directions(other[split][name], pairs)
                    extra += f" (seed {seed}: P@1 {_mean(o, 'P@1'):.1f}, mAP {_mean(o, 'mAP'):.1f})"
            row = f"| {name}{extra} | {m['P@1']:.1f} | {m['P@5']:.1f} | {m['P@15']:.1f} | {m['mAP']:.1f} |"
            if gap:
                share = [100 * (m[k] - _mean(rows["baseline"], k)) / (_mean(rows["oracle"], k)
                                                                    - _mean(rows["baseline"], k))
                         for k in ("P@1", "mAP")]
                row += f" {share[0]:.0f} % / {share[1]:.0f} % |"
            lines.append(row)
        lines.append("")
    return "\n".join(lines)


#: the pairs the CPU regime's and ProtoOT's weights were chosen on; the other 8 directions are untouched
TUNING_PAIRS = (("photo", "sketch"), ("art_painting", "sketch"))


def _untouched(dirs: dict) -> dict:
    tuned = _directions(dirs, list(TUNING_PAIRS))
    return {d: v for d, v in dirs.items() if d not in tuned}


def answer_paragraph(res: dict) -> str:
    """The README's answer to "aligned by what?", every number computed from a results file
    (``results/pacs.json``): domain mixing and class agreement over the 6 pairs (full split), the
    tuning pairs' P@1, and the 8 untouched directions' P@1 / mAP on both splits."""
    al = res["alignment"]["full"]

    def mix(m: str, key: str = "domain_mixing") -> float:
        return float(np.mean([r[key] for r in al[m].values() if r]))

    full, heldout = res["results"]["full"], res["results"]["heldout"]

    def pm(split: dict, m: str, dirs=_untouched) -> str:
        d = dirs(split[m])
        return f"{_mean(d, 'P@1'):.1f} / {_mean(d, 'mAP'):.1f}"

    def tuned_p1(m: str) -> str:
        return f"{_mean(_directions(full[m], list(TUNING_PAIRS)), 'P@1'):.1f}"

    return (
        "**Can these features be aligned without labels, and by what?** Not by either method here: photos and "
        f"sketches stay two clouds. Mean domain mixing over the 6 pairs is {mix('protoot'):.3f} for `protoot`, "
        f"{mix('full'):.3f} for UCDIR `full`, {mix('baseline'):.3f} untrained and {mix('oracle'):.2f} for the labelled "
        f"map; class agreement falls from {mix('full', 'class_agreement'):.1f} to "
        f"{mix('protoot', 'class_agreement'):.1f} %. Why: every loss of both methods is a softmax over one domain's "
        "bank or prototypes, which a shift of that whole domain leaves unchanged (tested). ProtoOT lifts retrieval, "
        "but not through alignment and not everywhere: most of its full-split P@1 gain comes from the two pairs its "
        f"cross-domain weight was tuned on ({tuned_p1('protoot')} vs {tuned_p1('full')}); on the 8 untouched "
        f"directions it scores {pm(full, 'protoot')} (P@1 / mAP) against {pm(full, 'full')} on the full split and "
        f"{pm(heldout, 'protoot')} against {pm(heldout, 'full')} held out.")


def headline(res: dict) -> str:
    """The README's headline: the full split's table of means and one sentence of the held-out
    split's P@1 / mAP for the trained methods, their aligned rows and the oracle."""
    table = means_table(res).split("**split heldout**")[0].strip()
    held = res["results"]["heldout"]
    rows = [r for r in ("full", "full+harmony", "protoot", "protoot+harmony", "oracle") if r in held]
    cells = ", ".join(f"`{r}` {_mean(held[r], 'P@1'):.1f} / {_mean(held[r], 'mAP'):.1f}" if r != "oracle" else
                      f"oracle {_mean(held[r], 'P@1'):.1f} / {_mean(held[r], 'mAP'):.1f}" for r in rows)
    return (f"{table}\n\nHeld out (the same 12 directions, a seeded per-class 20 % split evaluated): {cells} "
            "(P@1 / mAP); the table is in [docs/results.md](docs/results.md#protoot).")


def harmony_paragraph(res: dict) -> str:
    """The README's answer on the alignment stage, every number computed from a results file: for
    the untrained backbone, UCDIR ``full`` and ProtoOT, mean P@1 / mAP over the 12 directions
    (both splits), domain mixing and the class-discovery diagnostic over the 6 pairs (full split),
    without and with Harmony."""
    full, held = res["results"]["full"], res["results"]["heldout"]
    al, cd = res["alignment"]["full"], res["class_discovery"]["full"]

    def over(table: dict, row: str, key: str) -> float:
        return _mean(table[row], key)

    def change(row: str) -> str:
        aligned = f"{row}+harmony"
        return (f"`{row}` {over(full, row, 'P@1'):.1f} / {over(full, row, 'mAP'):.1f} / "
                f"{over(al, row, 'domain_mixing'):.3f} -> {over(full, aligned, 'P@1'):.1f} / "
                f"{over(full, aligned, 'mAP'):.1f} / {over(al, aligned, 'domain_mixing'):.3f} (held out P@1 "
                f"{over(held, row, 'P@1'):.1f} -> {over(held, aligned, 'P@1'):.1f}; adjusted Rand index "
                f"{over(cd, row, 'adjusted_rand'):.2f} -> {over(cd, aligned, 'adjusted_rand'):.2f})")

    harmony = res["config"].get("alignment_params", res["config"])
    setting = (f"theta {harmony['harmony_theta']:g}, K {harmony['harmony_clusters']}, "
               f"{harmony['harmony_pcs']} PCs")
    return ("**Aligned by what, then?** By a label-free stage after training: Harmony (Korsunsky et al., 2019; "
            f"`harmonypy`; {setting}, chosen on the tuning pairs), fitted on the training embeddings with the "
            "domain as the batch variable. Over the 12 directions, P@1 / mAP / mixing on the full split: "
            f"{change('full')}; {change('protoot')}; the adjusted Rand index scores k-means with K = 7 on both "
            f"domains together against the classes. {_harmony_reading(res)}")


def _harmony_reading(res: dict) -> str:
    """What the aligned rows say, worded from the numbers of ``res`` (full split)."""
    full, al, cd = res["results"]["full"], res["alignment"]["full"], res["class_discovery"]["full"]

    def gain(table: dict, row: str, key: str) -> float:
        return _mean(table[f"{row}+harmony"], key) - _mean(table[row], key)

    p1 = {row: gain(full, row, "P@1") for row in ("full", "protoot")}
    verbs = ["raises" if v > 0 else "lowers" for v in p1.values()]
    moves = (f"{verbs[0]} P@1 by {abs(p1['full']):.1f} for `full` and "
             f"{'' if verbs[1] == verbs[0] else verbs[1] + ' it '}by {abs(p1['protoot']):.1f} for `protoot`")
    oracle = _mean(al["oracle"], "domain_mixing")
    mixed = max(_mean(al[f"{r}+harmony"], "domain_mixing") for r in ("full", "protoot"))
    ari = max(abs(gain(cd, row, "adjusted_rand")) for row in ("full", "protoot"))
    found = ("leaves class discovery about where it was" if ari < 0.05 else
             "changes how well unsupervised clusters find the classes")
    return (f"The setting the tuning pairs chose is mild: it {moves} on the full split, brings the domains "
            f"only a little closer (mixing at most {mixed:.3f}, against the labelled map's {oracle:.2f}) and {found}. "
            "Stronger settings mix more and lose P@1 on the tuning pairs "
            "([docs/results.md](docs/results.md#the-alignment-stage-harmonys-settings-on-the-tuning-pairs)).")


def alignment_table(res: dict) -> str:
    """Markdown: per split and method, domain mixing and class agreement averaged over the pairs."""
    lines = []
    for split, methods in res.get("alignment", {}).items():
        pairs = max(len(v) for v in methods.values())
        lines += [f"**alignment, split {split}** (mean over {pairs} pairs; last epoch; seed {res['seed']})", "",
                  "| row | domain mixing | class agreement (%) |", "|---|---:|---:|"]
        for method in sorted(methods, key=lambda m: TABLE_ORDER.index(m) if m in TABLE_ORDER else len(TABLE_ORDER)):
            rows = [r for r in methods[method].values() if r]  # runs from before alignment was recorded: none
            if not rows:
                continue
            lines.append(f"| {method} | {np.mean([r['domain_mixing'] for r in rows]):.3f} | "
                         f"{np.mean([r['class_agreement'] for r in rows]):.1f} |")
        lines.append("")
    return "\n".join(lines)


def discovery_table(res: dict) -> str:
    """Markdown: per split, the class-discovery diagnostic of each row that has it (mean over pairs):
    adjusted Rand index of k-means with K = the number of classes on both domains' evaluated
    embeddings together, and how evenly its clusters hold both domains (balance)."""
    lines = []
    for split, rows in res.get("class_discovery", {}).items():
        pairs = max(len(v) for v in rows.values())
        lines += [f"**class discovery, split {split}** (k-means, K = number of classes, on both domains together; "
                  f"mean over {pairs} pairs; last epoch; seed {res['seed']})", "",
                  "| row | adjusted Rand index | balance |", "|---|---:|---:|"]
        for row in sorted(rows, key=lambda m: TABLE_ORDER.index(m) if m in TABLE_ORDER else len(TABLE_ORDER)):
            vals = list(rows[row].values())
            lines.append(f"| {row} | {np.mean([v['adjusted_rand'] for v in vals]):.2f} | "
                         f"{np.mean([v['balance'] for v in vals]):.2f} |")
        lines.append("")
    return "\n".join(lines)


def end_to_end_table(res: dict) -> str:
    """Markdown: the end-to-end run, mean over its two directions, per method."""
    e2e = res.get("end_to_end")
    if not e2e:
        return ""
    cfg = e2e["config"]
    lines = [f"**end to end, {'<->'.join(e2e['pair'])}** ({cfg['backbone']}, {cfg['image_size']} px, {cfg['epochs']} "
             f"epochs, lr {cfg['lr']}, key momentum {cfg['momentum']}, BatchNorm statistics "
             f"{'frozen' if cfg['freeze_bn'] else 'trained'}, {cfg.get('head_init', 'random')} head; full split; "
             f"last epoch; seed {cfg['seed']}; "
             f"{e2e['wall_seconds'] / 60:.0f} min)", "",
             "| row | P@1 | P@5 | P@15 | mAP | domain mixing |", "|---|---:|---:|---:|---:|---:|"]
    for method in sorted(e2e["results"], key=lambda m: TABLE_ORDER.index(m) if m in TABLE_ORDER else len(TABLE_ORDER)):
        dirs = e2e["results"][method]
        mix = e2e.get("alignment", {}).get(method, {}).get("domain_mixing", float("nan"))
        lines.append(f"| {method} | " + " | ".join(f"{_mean(dirs, k):.1f}" for k in ("P@1", "P@5", "P@15", "mAP"))
                     + f" | {mix:.3f} |")
    return "\n".join(lines) + "\n"


def end_to_end_trials_table(doc: dict) -> str:
    """Markdown: the end-to-end trials of ``results/pacs_end_to_end_gpu.json``, one line per (head,
    BatchNorm, lr, epochs), instance and full side by side: P@1 / mAP, mean of the two directions,
    at the last epoch each run reached (``epochs_run``)."""
    def mean(row: dict, key: str) -> float:
        return float(np.mean([v[key] for k, v in row.items() if "->" in k]))

    groups: dict[tuple, dict] = {}
    for run in doc["runs"]:
        groups.setdefault((run["head_init"], run["bn"], run["lr"], run["epochs"]), {})[run["method"]] = run
    head = {"random": "random (the reference)", "pca": "identity + PCA (this project's)"}
    bn = {"frozen": "frozen statistics", "trained": "trained (the reference)"}
    lines = ["| head | BatchNorm | lr | epochs | instance P@1 / mAP | full P@1 / mAP |",
             "|---|---|---:|---:|---:|---:|"]
    for (h, b, lr, epochs), runs in groups.items():
        done = {r["epochs_run"] for r in runs.values()}
        ran = str(epochs) if done == {epochs} else f"{max(done)} of {epochs}"
        cells = []
        for method in ("instance", "full"):
            last = runs[method]["history"][-1] if method in runs else None
            cells.append(f"{mean(last, 'P@1'):.1f} / {mean(last, 'mAP'):.1f}" if last else "")
        lines.append(f"| {head.get(h, h)} | {bn.get(b, b)} | {lr:g} | {ran} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
