"""Build the companion notebooks from their sources and run them all with papermill.

``python -m ucdir_core.companion.notebooks build``: ``notebooks/src/NN_*.py`` (jupytext percent format) ->
``notebooks/NN_*.ipynb`` without outputs. ``python -m ucdir_core.companion.notebooks run --data DATA
[--smoke]``: execute every notebook in order, executed copies going to ``reports/<tag>/``.

The kernel runs with CurveZMQ transport encryption where pyzmq and the kernelspec support it,
and is not sent an interrupt when it is shut down after its last cell, so its log (which shares
this process's terminal) stays quiet; anything else it writes still shows. Executed copies record
the notebook's paths relative to the project.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from ucdir_core.companion.paths import dataset_name, display_path, project_root
from ucdir_core.companion.report_checks import output_problems, relative_papermill_paths

PARAMS_MARK = "#PARAMS#"


def source_text(src: Path) -> str:
    """The source with the shared parameters cell spliced in at ``#PARAMS#``."""
    params = (src.parent / "_params.txt").read_text().rstrip("\n")
    return src.read_text().replace(PARAMS_MARK, params)


def build_notebook(src: Path):
    import jupytext

    nb = jupytext.reads(source_text(src), fmt="py:percent")
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata.pop("jupytext", None)
    return nb


def build(root: Path) -> list[Path]:
    import nbformat

    written = []
    for src in sorted((root / "notebooks" / "src").glob("0*.py")):
        out = root / "notebooks" / (src.stem + ".ipynb")
        nbformat.write(build_notebook(src), str(out))
        written.append(out)
    return written


def run(root: Path, data: str, smoke: bool, parameters: Path | None = None, only: list[str] | None = None) -> Path:
    """Execute every notebook in order; returns the reports folder."""
    import papermill as pm
    import yaml

    params = {"data": data, "smoke": smoke}
    if parameters is not None:
        params.update(yaml.safe_load(Path(parameters).read_text()) or {})
    tag = dataset_name(data) + ("-smoke" if smoke else "")
    reports = root / "reports" / tag
    reports.mkdir(parents=True, exist_ok=True)
    notebooks = sorted((root / "notebooks").glob("0*.ipynb"))
    declared = {nb: set(pm.inspect_notebook(str(nb))) for nb in notebooks}
    unknown = set(params) - set().union(*declared.values())
    if unknown:
        raise SystemExit(f"no notebook takes the parameter(s) {', '.join(sorted(unknown))}")
    if only:
        notebooks = [nb for nb in notebooks if any(nb.name.startswith(o) for o in only)]
    if not notebooks:
        raise SystemExit("no notebooks found in notebooks/ (run `make notebooks`)")
    for i, nb in enumerate(notebooks, 1):
        t0 = time.time()
        print(f"[{i}/{len(notebooks)}] {nb.name} (data={data}, smoke={smoke})", flush=True)
        own = {k: v for k, v in params.items() if k in declared[nb]}  # each notebook gets only its own
        execute(nb, reports / nb.name, own, root)
        print(f"    done in {time.time() - t0:.0f} s -> {display_path(reports / nb.name, root)}", flush=True)
    return reports


def quiet_kernel_manager():
    """The kernel manager papermill runs notebooks with, and its config.

    - Transport encryption: on, where pyzmq has CurveZMQ and the kernelspec declares it, so that
      the kernel does not warn that it "is running over TCP without encryption".
    - No interrupt at shutdown: jupyter_client sends the kernel SIGINT before every shutdown
      request, and a kernel that receives it while handling a message logs "KeyboardInterrupt
      caught in kernel". Papermill shuts the kernel down once no cell runs, so there is nothing to
      interrupt; an interrupt at any other time (a timeout, a user's) still goes through.
    """
    import zmq
    from jupyter_client.manager import AsyncKernelManager
    from traitlets.config import Config

    class QuietKernelManager(AsyncKernelManager):
        async def _async_interrupt_kernel(self) -> None:
            if self.shutting_down:
                return
            await super()._async_interrupt_kernel()

    config = Config()
    if "transport_encryption" in AsyncKernelManager.class_trait_names() and zmq.has("curve"):
        config.KernelManager.transport_encryption = "auto"
    return QuietKernelManager, config


class TerminalProgress(logging.Handler):
    """Plain progress lines in the terminal while a notebook runs: each cell as it starts, and each
    training epoch's log line (``epoch N | ...``) as the kernel prints it, with the seconds since
    the notebook started. Used as papermill's logger handler (cell starts) and as its
    ``stdout_file`` (the kernel's printed lines); nothing of it goes into the notebook."""

    def __init__(self, n_cells: int, out=None):
        super().__init__(logging.INFO)
        self.n_cells, self.out, self.t0 = n_cells, out or sys.stdout, time.time()

    def line(self, text: str) -> None:
        print(f"    {time.time() - self.t0:5.0f} s  {text}", file=self.out, flush=True)

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if msg.startswith("Executing Cell"):
            self.line(f"cell {msg.split()[2].strip('-')}/{self.n_cells}")

    def write(self, text: str) -> int:
        for line in text.splitlines():
            if line.startswith(("epoch ", "resumed ")):
                self.line(" | ".join(line.split(" | ")[:3]))  # epoch, lr, loss
        return len(text)

    def flush(self) -> None:
        pass


def execute(notebook: Path, output: Path, parameters: dict, root: Path) -> None:
    """Execute ``notebook`` with ``parameters`` (the kernel's working folder: ``root``) into
    ``output``, whose metadata then records paths relative to ``root``. The terminal shows each
    cell and each training epoch as they run (:class:`TerminalProgress`).

    Raises:
        SystemExit: the executed notebook shows a reader what it should not (a warning, an error,
            a progress bar, a figure made but not shown; :func:`~ucdir_core.companion.report_checks.output_problems`).
    """
    import nbformat
    import papermill as pm

    manager, config = quiet_kernel_manager()
    progress = TerminalProgress(len(nbformat.read(str(notebook), as_version=4).cells) + 1)  # + the parameters cell
    log = logging.getLogger("papermill")
    level, propagate = log.level, log.propagate
    log.addHandler(progress)
    log.setLevel(logging.INFO)
    log.propagate = False
    try:
        pm.execute_notebook(str(notebook), str(output), parameters=parameters, cwd=str(root), kernel_name="python3",
                            progress_bar=False, log_output=True, stdout_file=progress, kernel_manager_class=manager,
                            config=config)
    finally:
        log.removeHandler(progress)
        log.setLevel(level)
        log.propagate = propagate
    nb = nbformat.read(str(output), as_version=4)
    relative_papermill_paths(nb, root)
    nbformat.write(nb, str(output))
    problems = output_problems(nb)
    if problems:
        raise SystemExit(f"{display_path(output, root)}: " + "; ".join(problems))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ucdir_core.companion.notebooks", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("build", help="regenerate notebooks/*.ipynb from notebooks/src/*.py")
    p = sub.add_parser("run", help="run every notebook with papermill")
    p.add_argument("--data", default="digits", help="digits or a dataset root (default digits)")
    p.add_argument("--smoke", action="store_true", help="shrink every notebook to run in seconds")
    p.add_argument("--parameters", type=Path, help="YAML file of extra notebook parameters")
    p.add_argument("--only", nargs="+", help="run only notebooks whose names start with these prefixes")
    args = parser.parse_args(argv)
    root = project_root(Path(__file__).parent)
    if args.command == "build":
        for path in build(root):
            print(path)
        return 0
    run(root, args.data, args.smoke, args.parameters, args.only)
    return 0


if __name__ == "__main__":
    sys.exit(main())
