"""ProtoOT trials on the two tuning pairs: every setting tried for the CPU preset ``protoot_pacs``
and for bringing the domains together, rerun from this file.

    python -m benchmarks.protoot_trials --root ../shared/data/pacs --out results/protoot_trials.json
    python -m benchmarks.protoot_trials --table results/protoot_trials.json   # the table of docs/results.md

Labels choose nothing here except through these numbers, and only on photo<->sketch and
art_painting<->sketch (the tuning pairs, as for UCDIR's weights); the other 8 directions are
the PACS benchmark's (``benchmarks.pacs``). Regime: the ``pacs`` preset's data and backbone,
ProtoOT (the ``protoot_pacs`` preset) with each trial's changes;
full split, seed 0, last epoch (no epoch selection). Every epoch is evaluated, so P@1 and domain
mixing per epoch are kept. Results are written after every run and a rerun skips finished runs
(run folders in ``runs/protoot_trials``).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

from benchmarks.pacs import base_config, git_commit, regime_text
from ucdir_core import companion as C
from ucdir_core.base.io import write_json
from ucdir_core.config.presets import get_preset

PHOTO_SKETCH = ("photo", "sketch")
ART_SKETCH = ("art_painting", "sketch")
RELEASED = {"cross_domain_weight": 0.01}
CORRECTED = {"transport_similarity": "cosine", "cross_domain_negatives": "cosine", "marginal_order": "matched"}
SGD = {"optimizer": "sgd", "lr": 0.02, "lr_schedule": "cosine", "weight_decay": 1e-4}

#: name -> (what it changes, in words; the config changes; the pairs it ran on)
TRIALS: dict[str, tuple[str, dict, tuple[tuple[str, str], ...]]] = {
    "released": ("the released values: Adam (AMSGrad) lr 2.5e-4 constant, wd 5e-4, cross-domain 0.01 from "
                 "epoch 2 of 5", RELEASED, (PHOTO_SKETCH, ART_SKETCH)),
    "adam_lr_1e-3": ("Adam lr 1e-3", {**RELEASED, "lr": 1e-3}, (PHOTO_SKETCH,)),
    "sgd": ("SGD lr 0.02 cosine, momentum 0.9, wd 1e-4 (the UCDIR CPU regime's)", {**RELEASED, **SGD},
            (PHOTO_SKETCH, ART_SKETCH)),
    "cross_0.1": ("cross-domain weight 0.1", {"cross_domain_weight": 0.1}, (PHOTO_SKETCH, ART_SKETCH)),
    "cross_1.0": ("**cross-domain weight 1.0 (the CPU preset `protoot_pacs`)**", {}, (PHOTO_SKETCH, ART_SKETCH)),
    "cross_1.0_from_1": ("cross-domain weight 1.0 from epoch 1", {"cross_domain_start": 1}, (PHOTO_SKETCH,)),
    "cross_5.0": ("cross-domain weight 5.0", {"cross_domain_weight": 5.0}, (PHOTO_SKETCH,)),
    "corrected": ("the three corrections (`transport_similarity=cosine`, `cross_domain_negatives=cosine`, "
                  "`marginal_order=matched`), cross-domain 0.01", {**RELEASED, **CORRECTED}, (PHOTO_SKETCH,)),
    "corrected_1.0": ("the three corrections, cross-domain 1.0", CORRECTED, (PHOTO_SKETCH,)),
    "cosine_1.0": ("`cross_domain_negatives=cosine` alone (the form that no domain offset can change), "
                   "cross-domain 1.0", {"cross_domain_negatives": "cosine"}, (PHOTO_SKETCH,)),
    "epochs_10": ("10 epochs, cross-domain from epoch 5", {"epochs": 10, "cross_domain_start": 5}, (PHOTO_SKETCH,)),
    "trunk_5": ("stages 5 and 6 trained (`trunk_blocks=5`)", {"trunk_blocks": 5}, (PHOTO_SKETCH,)),
    "joint_1.0": ("`cross_domain_negatives=joint`: the own domain's prototypes among the cross-domain "
                  "negatives, cross-domain 1.0", {"cross_domain_negatives": "joint"}, (PHOTO_SKETCH, ART_SKETCH)),
    "joint_0.1": ("`cross_domain_negatives=joint`, cross-domain 0.1",
                  {"cross_domain_negatives": "joint", "cross_domain_weight": 0.1}, (PHOTO_SKETCH,)),
    "neighbour_0.1": ("`cross_domain_neighbour_weight=0.1`: each query pulled to its nearest slot of the other "
                      "domain's bank, against both domains' prototypes", {"cross_domain_neighbour_weight": 0.1},
                      (PHOTO_SKETCH, ART_SKETCH)),
    "neighbour_0.3": ("`cross_domain_neighbour_weight=0.3`", {"cross_domain_neighbour_weight": 0.3}, (PHOTO_SKETCH,)),
    "neighbour_1.0": ("`cross_domain_neighbour_weight=1.0`", {"cross_domain_neighbour_weight": 1.0}, (PHOTO_SKETCH,)),
}


def trial_config(root: str, pair: tuple[str, str], changes: dict):
    """ProtoOT's CPU preset on one PACS pair with a trial's changes."""
    return get_preset("protoot_pacs").replace(root=base_config(root).root, dataset="pacs", domains=pair).replace(**changes)


def run_trial(cfg, run_dir: Path) -> dict:
    """Last-epoch metrics of one trial run, its alignment, P@1 / domain mixing per epoch, and, for a
    run with an alignment stage, the last epoch after it (``aligned``)."""
    t = time.time()
    history = C.train_or_load(cfg, run_dir, progress=False)
    evaluated = [r for r in history if "eval" in r]
    last = evaluated[-1]
    out = {"eval": last["eval"], "mean": C.mean_over_directions(last["eval"]),
           "alignment": {k: last["alignment"][k] for k in ("domain_mixing", "class_agreement")},
           "per_epoch": {"P@1": [C.mean_over_directions(r["eval"])["P@1"] for r in evaluated],
                         "domain_mixing": [r["alignment"]["domain_mixing"] for r in evaluated]},
           "train_seconds": float(sum(r.get("wall_seconds", 0.0) for r in history)),
           "seconds": time.time() - t}
    if "aligned" in last:
        out["aligned"] = {"mean": C.mean_over_directions(last["aligned"]["eval"]),
                          **{k: last["aligned"][k] for k in ("domain_mixing", "class_agreement")}}
    return out


def _rows(doc: dict) -> list[tuple[dict, list[dict | None]]]:
    """Each recorded trial, in the order of :data:`TRIALS` (others after, by name), with its result
    on each tuning pair (None where it did not run)."""
    names = [n for n in TRIALS if n in doc["trials"]] + sorted(n for n in doc["trials"] if n not in TRIALS)
    return [(doc["trials"][n], [doc["trials"][n]["pairs"].get("-".join(p)) for p in (PHOTO_SKETCH, ART_SKETCH)])
            for n in names]


def trials_table(doc: dict) -> str:
    """Markdown: one line per trial; P@1 / mAP (mean of the two directions) and domain mixing /
    class agreement (%) at the last epoch, for each tuning pair it ran on."""
    lines = ["| trial (changes to `protoot_pacs`) | photo<->sketch P@1 / mAP | mixing / agreement "
             "| art_painting<->sketch P@1 / mAP | mixing / agreement |", "|---|---:|---:|---:|---:|"]
    for trial, results in _rows(doc):
        cells = []
        for r in results:
            cells += ([f"{r['mean']['P@1']:.1f} / {r['mean']['mAP']:.1f}",
                       f"{r['alignment']['domain_mixing']:.3f} / {r['alignment']['class_agreement']:.1f}"]
                      if r else ["", ""])
        lines.append(f"| {trial['description']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def compact_table(doc: dict) -> str:
    """Markdown for the README: one line per trial named by its config changes to ``protoot_pacs``;
    P@1 / mAP / domain mixing at the last epoch for each tuning pair it ran on."""
    lines = ["| changes to `protoot_pacs` | photo<->sketch | art_painting<->sketch |", "|---|---:|---:|"]
    for trial, results in _rows(doc):
        name = ", ".join(f"`{k}={v}`" for k, v in trial["changes"].items()) or "none: the CPU preset `protoot_pacs`"
        cells = [f"{r['mean']['P@1']:.1f} / {r['mean']['mAP']:.1f} / {r['alignment']['domain_mixing']:.3f}" if r else ""
                 for r in results]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default="../shared/data/pacs", help="PACS root (default ../shared/data/pacs)")
    p.add_argument("--out", default="results/protoot_trials.json", help="results file")
    p.add_argument("--runs", default="runs/protoot_trials", help="run folders (default runs/protoot_trials)")
    p.add_argument("--trials", nargs="+", choices=list(TRIALS), default=list(TRIALS))
    p.add_argument("--table", help="print the trials table from this results file and exit")
    p.add_argument("--compact", action="store_true", help="with --table: the README's shorter table")
    args = p.parse_args(argv)
    if args.table:
        doc = json.loads(Path(args.table).read_text())
        print((compact_table if args.compact else trials_table)(doc), end="")
        return 0
    if not Path(args.root).is_dir():
        print(f"error: no PACS folder at {args.root}", file=sys.stderr)
        return 2
    out = Path(args.out)
    doc = json.loads(out.read_text()) if out.exists() else {"trials": {}}
    doc.update(regime=regime_text(trial_config(args.root, PHOTO_SKETCH, {})), commit=git_commit(),
               machine={"platform": platform.platform(), "cores": torch.get_num_threads(), "device": "cpu"},
               split="full", seed=0, epoch="last")
    start = time.time()
    for name in args.trials:
        description, changes, pairs = TRIALS[name]
        entry = doc["trials"].setdefault(name, {"pairs": {}})
        entry.update(description=description, changes=changes)
        for pair in pairs:
            cfg = trial_config(args.root, pair, changes)
            result = run_trial(cfg, Path(args.runs) / f"{'-'.join(pair)}-{name}")
            entry["pairs"]["-".join(pair)] = result
            write_json(out, doc)
            print(f"{name} {'-'.join(pair)}: P@1 {result['mean']['P@1']:.1f} mAP {result['mean']['mAP']:.1f} "
                  f"mixing {result['alignment']['domain_mixing']:.3f} agreement "
                  f"{result['alignment']['class_agreement']:.1f} ({result['seconds']:.0f} s)", flush=True)
    doc["wall_seconds"] = doc.get("wall_seconds", 0.0) + time.time() - start
    write_json(out, doc)
    print(trials_table(doc), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
