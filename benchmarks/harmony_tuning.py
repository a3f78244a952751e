"""Harmony's settings for the alignment stage, chosen on the two tuning pairs only.

    python -m benchmarks.harmony_tuning --root ../shared/data/pacs --out results/harmony_tuning.json
    python -m benchmarks.harmony_tuning --table results/harmony_tuning.json   # the table of docs/results.md

Every setting of a small grid (diversity penalty ``harmony_theta``, number of clusters
``harmony_clusters``, principal components ``harmony_pcs``; the other ``harmony_*`` keys at their
defaults) is fitted on the training embeddings of photo<->sketch and art_painting<->sketch (full
split, seed 0, last epoch) with the domain as the batch variable, and scored on the same images,
as the benchmark's full split is. Embeddings: the untrained backbone (``baseline``), UCDIR ``full``
and ProtoOT ``protoot`` of the PACS benchmark's regime (their run folders in ``runs/pacs``, trained
here if missing). Labels choose nothing except through these numbers: the setting with the highest
mean P@1 over the two trained methods' four tuning directions is chosen (mAP breaks ties); the
other 8 directions are the benchmark's (``benchmarks.pacs``), untouched by the choice.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from itertools import product
from pathlib import Path

import numpy as np

from benchmarks.pacs import base_config, git_commit, run_row
from ucdir_core import companion as C
from ucdir_core.base.io import write_json
from ucdir_core.base.pair import DomainPair

TUNING_PAIRS = (("photo", "sketch"), ("art_painting", "sketch"))
ROWS = ("baseline", "full", "protoot")
#: the rows whose mean P@1 chooses the setting: the trained methods the stage is for
CHOOSING = ("full", "protoot")
GRID = {"harmony_theta": (1.0, 2.0, 4.0), "harmony_clusters": (10, 30, 60), "harmony_pcs": (20, 50)}


def settings() -> list[dict]:
    """Every setting of the grid, as ``harmony_*`` overrides."""
    return [dict(zip(GRID, values)) for values in product(*GRID.values())]


def setting_name(setting: dict) -> str:
    return f"theta {setting['harmony_theta']:g}, K {setting['harmony_clusters']}, {setting['harmony_pcs']} PCs"


def embeddings(cfg, row: str, runs: Path) -> tuple[DomainPair, DomainPair, DomainPair]:
    """Training embeddings, evaluated embeddings and their labels of one row on one pair."""
    if row == "baseline":
        f = C.untrained_features(cfg)
        return f["train"], f["test"], f["test_labels"]
    run_row(cfg, row, runs)
    test, labels, trained = C.run_embeddings(runs / C.run_name(cfg, row))
    return trained.embedder.train_embeddings().map(lambda t: t.cpu().numpy()), test, labels


def measures(m: dict) -> dict:
    mean = C.mean_over_directions(m["eval"])
    return {"P@1": mean["P@1"], "mAP": mean["mAP"], **{k: m[k] for k in
            ("domain_mixing", "class_agreement", "adjusted_rand", "balance")}}


def chosen(doc: dict) -> str:
    """The chosen setting's name: the highest mean P@1 of the :data:`CHOOSING` rows over the tuning
    directions, mAP breaking ties."""
    def score(name: str) -> tuple[float, float]:
        cells = [doc["settings"][name][pair][row] for pair in doc["settings"][name] for row in CHOOSING]
        return float(np.mean([c["P@1"] for c in cells])), float(np.mean([c["mAP"] for c in cells]))

    return max(doc["settings"], key=score)


def tuning_table(doc: dict) -> str:
    """Markdown: one line per setting (and the embeddings as they are): P@1 / mAP / domain mixing,
    mean over the four tuning directions, for each row; the chosen setting in bold."""
    best = chosen(doc)
    lines = ["| Harmony setting | " + " | ".join(f"{r} P@1 / mAP / mixing" for r in ROWS) + " |",
             "|---|" + "---:|" * len(ROWS)]

    def cells(per_pair: dict) -> str:
        out = []
        for row in ROWS:
            c = [per_pair[p][row] for p in per_pair]
            out.append(f"{np.mean([x['P@1'] for x in c]):.1f} / {np.mean([x['mAP'] for x in c]):.1f} / "
                       f"{np.mean([x['domain_mixing'] for x in c]):.3f}")
        return " | ".join(out)

    lines.append(f"| none (as they are) | {cells(doc['none'])} |")
    for name, per_pair in doc["settings"].items():
        label = f"**{name} (chosen)**" if name == best else name
        lines.append(f"| {label} | {cells(per_pair)} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default="../shared/data/pacs", help="PACS root (default ../shared/data/pacs)")
    p.add_argument("--out", default="results/harmony_tuning.json", help="results file")
    p.add_argument("--runs", default="runs/pacs", help="run folders (default runs/pacs, the benchmark's)")
    p.add_argument("--table", help="print the table of docs/results.md from this results file and exit")
    args = p.parse_args(argv)
    if args.table:
        doc = json.loads(Path(args.table).read_text())
        print(tuning_table(doc))
        print(f"chosen: {chosen(doc)}")
        return 0
    t0 = time.time()
    base = base_config(args.root)
    doc: dict = {"dataset": "pacs", "split": "full", "seed": base.seed, "pairs": ["-".join(p) for p in TUNING_PAIRS],
                 "rows": list(ROWS), "choosing": list(CHOOSING), "grid": {k: list(v) for k, v in GRID.items()},
                 "commit": git_commit(), "argv": list(sys.argv[1:] if argv is None else argv),
                 "none": {}, "settings": {setting_name(s): {} for s in settings()}}
    for pair in TUNING_PAIRS:
        cfg = base.replace(domains=pair, split="full")
        key = "-".join(pair)
        for row in ROWS:
            train, test, labels = embeddings(cfg, row, Path(args.runs))
            for s in settings():
                params = cfg.alignment_params.replace(alignment="harmony", **s)
                cmp = C.compare_alignment(train, test, labels, cfg, params)
                doc["none"].setdefault(key, {})[row] = measures(cmp["before"])
                doc["settings"][setting_name(s)].setdefault(key, {})[row] = measures(cmp["after"])
            print(f"{key} {row}: {len(settings())} settings ({(time.time() - t0) / 60:.1f} min)", flush=True)
    doc["chosen"] = chosen(doc)
    doc["chosen_params"] = next(s for s in settings() if setting_name(s) == doc["chosen"])
    doc["wall_seconds"] = time.time() - t0
    write_json(Path(args.out), doc)
    print(tuning_table(doc))
    print(f"chosen: {doc['chosen']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
