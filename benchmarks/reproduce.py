"""How long ``make reproduce`` takes from a fresh clone, on this machine.

    python -m benchmarks.reproduce [--keep]

Clones the repository's committed HEAD into a temporary folder and runs, timed, ``make install``
(a new virtual environment; PyTorch from the registry or the machine's wheel cache) and then
``make reproduce`` (the six notebooks on the embedded digits) with an empty data home
(``UCDIR_DATA``: the digits are built and the view cache is computed, as on a new machine). Prints
one line per notebook as it finishes and a table of the figures; nothing of the clone is kept
unless ``--keep``.

Then two checks a newcomer makes: whether the digits numbers the README quotes (UCDIR ``full``
and ProtoOT, mean P@1 and mAP, last epoch) are the ones ``make reproduce`` gave (it pins one thread,
which makes them bit-identical), and how soon ``ucdir train --root DIR --domains A B`` on a small
folder of one's own (40 images per class, 3 classes, 2 domains, copied from the digits; the view
cache empty for it) prints its first lines, and how it ends.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed(cmd: list[str], cwd: Path, env: dict[str, str], echo: bool) -> tuple[float, list[str]]:
    """Run ``cmd``; its seconds and its output lines (echoed when ``echo``)."""
    t0 = time.time()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:
        lines.append(line.rstrip("\n"))
        if echo:
            print(f"  {time.time() - t0:6.0f} s | {line.rstrip()}", flush=True)
    if proc.wait() != 0:
        raise SystemExit(f"{' '.join(cmd)} failed with exit status {proc.returncode}")
    return time.time() - t0, lines


#: the README sentence quoting the digits numbers: UCDIR P@1, ProtoOT P@1, UCDIR mAP, ProtoOT mAP
README_DIGITS = re.compile(r"on digits \((\d+\.\d) vs (\d+\.\d), mAP (\d+\.\d) vs (\d+\.\d)\)")


def digits_check(clone: Path) -> list[str]:
    """Lines comparing the README's digits numbers with the runs ``make reproduce`` made."""
    quoted = README_DIGITS.search(" ".join((clone / "README.md").read_text().split()))
    if quoted is None:
        return ["README: no digits numbers found"]
    readme = {"full": (quoted[1], quoted[3]), "protoot": (quoted[2], quoted[4])}
    lines = []
    for row, (p1, ap) in readme.items():
        found = sorted((clone / "runs" / "digits").glob(f"digits-*-{row}-full-s0/summary.json"))
        if not found:
            lines.append(f"digits {row}: no run found")
            continue
        last = json.loads(found[0].read_text())["last"]["eval"]
        got = (f"{sum(m['P@1'] for m in last.values()) / len(last):.1f}",
               f"{sum(m['mAP'] for m in last.values()) / len(last):.1f}")
        same = "the same" if got == (p1, ap) else "DIFFERENT"
        lines.append(f"digits {row}, P@1 / mAP: make reproduce {got[0]} / {got[1]}, README {p1} / {ap}: {same}")
    return lines


def small_folder(digits: Path, out: Path, classes=("0", "1", "2"), per_class: int = 40) -> Path:
    """A folder of one's own: ``per_class`` images of each of ``classes`` of both digits domains."""
    for domain in ("handwritten", "printed"):
        for cls in classes:
            dst = out / domain / cls
            dst.mkdir(parents=True)
            for f in sorted((digits / domain / cls).iterdir())[:per_class]:
                shutil.copy(f, dst / f.name)
    return out


def first_lines(clone: Path, env: dict[str, str], folder: Path, run_dir: Path) -> list[str]:
    """Seconds to each of the first lines and the last lines of ``ucdir train --root FOLDER
    --domains handwritten printed`` (the default command, as a new user runs it), and to its end."""
    cmd = [str(clone / ".venv" / "bin" / "ucdir"), "train", "--root", str(folder), "--domains", "handwritten",
           "printed", "--run-dir", str(run_dir)]  # the default command: preset folder, 5 epochs
    t0 = time.time()
    proc = subprocess.Popen(cmd, cwd=clone, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    stamped = [(time.time() - t0, line.rstrip("\n")) for line in proc.stdout]
    proc.wait()
    total = time.time() - t0
    out = [f"ucdir train on a small folder (240 images), exit status {proc.returncode}, {total:.0f} s; its first "
           "lines (seconds after the start):"]
    out += [f"  {t:6.1f} s | {line[:110]}" for t, line in stamped[:5]]
    out.append("its last lines:")
    out += [f"  {t:6.1f} s | {line[:110]}" for t, line in stamped[-6:]]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--keep", action="store_true", help="keep the clone (its path is printed)")
    p.add_argument("--folder-only", action="store_true",
                   help="only the small-folder check, with this checkout's .venv and a new data home")
    args = p.parse_args(argv)
    repo = Path(__file__).resolve().parents[1]
    if args.folder_only:
        with tempfile.TemporaryDirectory(prefix="ucdir-folder-") as tmp:
            env = {**os.environ, "UCDIR_DATA": str(Path(tmp) / "data-home")}
            subprocess.run([str(repo / ".venv" / "bin" / "ucdir"), "data", "digits", str(Path(tmp) / "digits")],
                           env=env, check=True, capture_output=True)
            folder = small_folder(Path(tmp) / "digits", Path(tmp) / "own")
            print("\n".join(first_lines(repo, env, folder, Path(tmp) / "own-run")), flush=True)
        return 0
    work = Path(tempfile.mkdtemp(prefix="ucdir-reproduce-"))
    try:
        clone = work / "ucdir"
        subprocess.run(["git", "clone", "--quiet", str(repo), str(clone)], check=True)
        env = {**os.environ, "UCDIR_DATA": str(work / "data-home")}
        install, _ = timed(["make", "install"], clone, env, echo=False)
        print(f"make install: {install:.0f} s", flush=True)
        total, lines = timed(["make", "reproduce"], clone, env, echo=True)
        per: dict[str, float] = {}
        for line in lines:
            done = re.match(r"\s+done in (\d+) s -> \S*/(\S+)\.ipynb", line)
            if done:
                per[done.group(2)] = float(done.group(1))
        print("\n| step | seconds |\n|---|---:|")
        print(f"| make install (fresh virtual environment) | {install:.0f} |")
        for name, seconds in per.items():
            print(f"| {name} | {seconds:.0f} |")
        print(f"| make reproduce (the six notebooks, empty data home) | {total:.0f} |")
        print(f"| both | {install + total:.0f} |")
        print(f"\n{os.cpu_count()} cores; {sys.platform}")
        print("\n".join(["", *digits_check(clone)]), flush=True)
        folder = small_folder(Path(env["UCDIR_DATA"]) / "digits-seed0", work / "own")
        print("\n".join(["", *first_lines(clone, env, folder, work / "own-run")]), flush=True)
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
