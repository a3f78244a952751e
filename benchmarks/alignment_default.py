"""Whether ``ucdir train --root DIR --domains A B`` aligns by default: decided on data no setting was
chosen on.

    python -m benchmarks.alignment_default --out results/alignment_default.json
    python -m benchmarks.alignment_default --show results/alignment_default.json   # the README's sentence

The rule (issue "aligned by what?"): the default for new data (preset ``folder``, UCDIR) fits the
alignment stage (Harmony with the chosen settings, ``benchmarks.harmony_tuning``) only if it does not
lower mean P@1 on any of: the 8 PACS directions untouched by any tuning, full split and held out
(``full`` against ``full+harmony`` of ``results/pacs.json``), and the embedded digits (UCDIR's
``digits`` preset trained once with ``--set alignment=harmony``: the same run's last epoch evaluated
without and with its alignment stage; one thread, full split, seed 0). Labels are read for these
measures only.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.pacs import _mean as mean
from benchmarks.pacs import _untouched as untouched
from benchmarks.pacs import git_commit
from ucdir_core.companion.results import read_results
from ucdir_core.config.presets import get_preset


def pacs_checks(res: dict) -> dict[str, dict[str, float]]:
    """P@1 and mAP of ``full`` and ``full+harmony`` over the 8 untouched directions, per split."""
    out = {}
    for split in ("full", "heldout"):
        rows = res["results"][split]
        out[f"pacs untouched, {split}"] = {
            "P@1": mean(untouched(rows["full"]), "P@1"), "mAP": mean(untouched(rows["full"]), "mAP"),
            "aligned P@1": mean(untouched(rows["full+harmony"]), "P@1"),
            "aligned mAP": mean(untouched(rows["full+harmony"]), "mAP"), "directions": len(untouched(rows["full"]))}
    return out


def digits_check(run_dir: Path, harmony: dict) -> dict[str, float]:
    """UCDIR ``digits`` trained with the alignment stage (``harmony``: its ``harmony_*`` settings):
    the last epoch's mean P@1 and mAP without and with it."""
    from ucdir_core.companion import train_or_load

    cfg = get_preset("digits").replace(alignment="harmony", **harmony)
    last = [r for r in train_or_load(cfg, run_dir, progress=False) if "eval" in r][-1]
    return {"P@1": mean(last["eval"], "P@1"), "mAP": mean(last["eval"], "mAP"),
            "aligned P@1": mean(last["aligned"]["eval"], "P@1"), "aligned mAP": mean(last["aligned"]["eval"], "mAP"),
            "domain_mixing": last["alignment"]["domain_mixing"],
            "aligned domain_mixing": last["aligned"]["domain_mixing"]}


def decide(checks: dict[str, dict[str, float]]) -> bool:
    """Align by default only if no check's mean P@1 falls with the alignment stage."""
    return all(c["aligned P@1"] >= c["P@1"] for c in checks.values())


def sentence(doc: dict) -> str:
    """The README's sentence on the default, every number from ``doc``."""
    checks = doc["checks"]
    parts = "; ".join(f"{name}: P@1 {c['P@1']:.1f} -> {c['aligned P@1']:.1f}, mAP {c['mAP']:.1f} -> "
                      f"{c['aligned mAP']:.1f}" for name, c in checks.items())
    verdict = ("aligns by default (`alignment=harmony` in the `folder` preset): P@1 does not fall on any of them"
               if doc["align_by_default"] else
               "does not align by default (`--set alignment=harmony` turns it on): P@1 falls with it "
               f"({', '.join(n for n, c in checks.items() if c['aligned P@1'] < c['P@1'])})")
    return (f"**Aligned by default?** Decided on data no setting was chosen on (UCDIR `full` without and with "
            f"Harmony, {doc['harmony_setting']}; `python -m benchmarks.alignment_default`): {parts}. So "
            f"`ucdir train --root DIR --domains A B` {verdict}.")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pacs", default="results/pacs.json", help="the PACS benchmark's results (with full+harmony)")
    p.add_argument("--tuning", default="results/harmony_tuning.json", help="the chosen Harmony setting")
    p.add_argument("--out", default="results/alignment_default.json")
    p.add_argument("--run-dir", help="the digits run folder (default: a temporary one)")
    p.add_argument("--show", help="print the README sentence from this file and exit")
    args = p.parse_args(argv)
    if args.show:
        print(sentence(json.loads(Path(args.show).read_text())))
        return 0
    if os.environ.get("OMP_NUM_THREADS") != "1":
        print("error: run with OMP_NUM_THREADS=1 (the digits numbers are one thread's)", file=sys.stderr)
        return 2
    t0 = time.time()
    tuning = json.loads(Path(args.tuning).read_text())
    harmony = tuning["chosen_params"]
    checks = pacs_checks(read_results(args.pacs))
    with tempfile.TemporaryDirectory() as tmp:
        checks["digits"] = digits_check(Path(args.run_dir or Path(tmp) / "digits"), harmony)
    doc = {"checks": checks, "align_by_default": decide(checks), "harmony": harmony,
           "harmony_setting": tuning["chosen"], "commit": git_commit(), "wall_seconds": time.time() - t0}
    Path(args.out).write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    print(sentence(doc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
