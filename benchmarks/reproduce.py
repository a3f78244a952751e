"""How long ``make reproduce`` takes from a fresh clone, on this machine.

    python -m benchmarks.reproduce [--keep]

Clones the repository's committed HEAD into a temporary folder and runs, timed, ``make install``
(a new virtual environment; PyTorch from the registry or the machine's wheel cache) and then
``make reproduce`` (the six notebooks on the embedded digits) with an empty data home
(``UCDIR_DATA``: the digits are built and the view cache is computed, as on a new machine). Prints
one line per notebook as it finishes and a table of the figures; nothing of the clone is kept
unless ``--keep``.
"""

from __future__ import annotations

import argparse
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--keep", action="store_true", help="keep the clone (its path is printed)")
    args = p.parse_args(argv)
    repo = Path(__file__).resolve().parents[1]
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
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
