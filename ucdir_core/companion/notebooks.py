"""Build the companion notebooks from their sources and run them all with papermill.

``python -m ucdir_core.companion.notebooks build``: ``notebooks/src/NN_*.py`` (jupytext percent format) ->
``notebooks/NN_*.ipynb`` without outputs. ``python -m ucdir_core.companion.notebooks run --data DATA
[--smoke]``: execute every notebook in order, executed copies going to ``reports/<tag>/``.

The runner fails in one line and leaves nothing half-done:

- Before anything runs, every parameter (``--data``, ``--smoke`` and those of ``--parameters``) is
  checked against the parameters cells of the notebooks: its name, and the type its default there
  has (:func:`declared_parameters`), the line naming the value it got; a dataset root that is no
  folder, a ``--only`` that selects nothing and an unreadable parameters file are refused too (exit
  status 2, nothing written).
- A notebook is executed into ``runs/<tag>/notebooks/NN_*.running.ipynb`` and moved to
  ``reports/<tag>/NN_*.ipynb`` only when it ran through and shows a reader nothing it should not;
  one that fails is kept as ``runs/<tag>/notebooks/NN_*.failed.ipynb`` (its full traceback there;
  outside ``reports/``, which holds complete reports only), and the error is one line naming the
  notebook, the cell and the error (exit status 1). An interrupt keeps the partial copy the same
  way (exit status 130).
- A closed standard output (piped into ``head``) ends the run quietly, with exit status 141 as a
  command killed by SIGPIPE.

The kernel runs with CurveZMQ transport encryption where pyzmq and the kernelspec support it,
and is not sent an interrupt when it is shut down after its last cell, so its log (which shares
this process's terminal) stays quiet; anything else it writes still shows. Executed copies record
the notebook's paths relative to the project.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import logging
import os
import reprlib
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ucdir_core.base.text import escape_controls, printable, worker_message
from ucdir_core.companion.paths import dataset_name, display_path, project_root
from ucdir_core.companion.report_checks import output_problems, relative_papermill_paths

PROG = "python -m ucdir_core.companion.notebooks"
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


class RunnerError(SystemExit):
    """The runner refuses to run, or a notebook failed: ``str()`` is one line for the user
    (control characters escaped), ``status`` the exit status (2: refused before anything ran; 1: a
    notebook failed; 130: interrupted). A :class:`SystemExit`, so that a caller that does not catch
    it still exits with its message."""

    def __init__(self, message: str, status: int = 2):
        super().__init__(escape_controls(message))
        self.status = status

    def __str__(self) -> str:
        return str(self.code)


@dataclass(frozen=True)
class Kind:
    """What a notebook parameter takes: ``what`` as a message says it, ``accepts`` the check."""

    what: str
    accepts: Callable[[Any], bool]


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


STRING = Kind("a string", lambda v: isinstance(v, str))
INTEGER = Kind("an integer", _is_int)
NUMBER = Kind("a number", _is_number)
BOOLEAN = Kind("true or false", lambda v: isinstance(v, bool))
MAPPING = Kind("a mapping", lambda v: isinstance(v, dict))
NUMBERS = Kind("a list of numbers", lambda v: isinstance(v, list) and all(_is_number(x) for x in v))
STRINGS = Kind("a list of strings", lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v))
ANY_LIST = Kind("a list", lambda v: isinstance(v, list))
TWO_STRINGS = Kind("a list of two strings", lambda v: isinstance(v, list) and len(v) == 2
                   and all(isinstance(x, str) for x in v))

#: what a parameter whose default is None takes besides None (its parameters cell shows no type);
#: a test checks that every parameter of every notebook has a kind, from here or from its default
KINDS_OF_NONE_DEFAULTS = {"preset": STRING, "domains": TWO_STRINGS, "epochs": INTEGER, "results_file": STRING}


def kind_of(default: Any) -> Kind | None:
    """The kind of value a parameter takes, from its default's type (None for a None default)."""
    if isinstance(default, bool):
        return BOOLEAN
    if isinstance(default, int):
        return INTEGER
    if isinstance(default, float):
        return NUMBER
    if isinstance(default, str):
        return STRING
    if isinstance(default, dict):
        return MAPPING
    if isinstance(default, (list, tuple)):
        return NUMBERS if default and NUMBERS.accepts(list(default)) else \
            STRINGS if default and STRINGS.accepts(list(default)) else ANY_LIST
    return None


@dataclass(frozen=True)
class Parameter:
    """A parameter as a notebook's parameters cell declares it: ``default`` and ``help`` as written
    there, ``kind`` what it takes (None: anything), ``nullable`` whether it takes None (its default
    is None)."""

    name: str
    default: str
    help: str
    kind: Kind | None
    nullable: bool

    def accepts(self, value: Any) -> bool:
        if value is None:
            return self.nullable
        return self.kind is None or self.kind.accepts(value)

    def takes(self) -> str:
        what = self.kind.what if self.kind is not None else "any value"
        return what + (" or null" if self.nullable and self.kind is not None else "")

    def cell_line(self) -> str:
        return f"{self.name} = {self.default}" + (f"  # {self.help}" if self.help else "")


def declared_parameters(notebook: Path) -> dict[str, Parameter]:
    """The parameters ``notebook``'s parameters cell declares (papermill reads it), each with the
    kind of value it takes: the type of its default, or for a default of None the kind
    :data:`KINDS_OF_NONE_DEFAULTS` gives (None: anything).

    Raises:
        RunnerError: the notebook cannot be read.
    """
    import papermill as pm

    try:
        found = pm.inspect_notebook(str(notebook))
    except Exception as exc:  # noqa: BLE001 - nbformat's and papermill's errors: one line naming the file
        raise RunnerError(f"{notebook.name}: cannot read its parameters ({type(exc).__name__}: "
                          f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''})") from None
    out = {}
    for name, p in found.items():
        try:
            default = ast.literal_eval(p["default"])
            kind = kind_of(default) if default is not None else KINDS_OF_NONE_DEFAULTS.get(name)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):  # an expression: any value
            default, kind = None, None
        out[name] = Parameter(name, p["default"], p.get("help") or "", kind, default is None)
    return out


def _type_word(value: Any) -> str:
    for types, word in ((bool, "true or false"), (int, "an integer"), (float, "a number"), (str, "a string"),
                        (list, "a list"), (dict, "a mapping"), (type(None), "null")):
        if isinstance(value, types):
            return word
    return type(value).__name__


def _shown(value: Any) -> str:
    """``value`` as a message shows it: its repr, long strings and lists shortened."""
    short = reprlib.Repr()
    short.maxstring = short.maxother = 60
    return short.repr(value)


def check_parameters(params: dict[str, Any], declared: dict[Path, dict[str, Parameter]],
                     source: dict[str, str]) -> None:
    """Refuse, in one line, a parameter no notebook declares (naming a close match) or a value of a
    kind its notebook's parameters cell does not take (naming the notebook, the cell's line and the
    value got). ``source``: where each parameter came from (an option, the parameters file).

    Raises:
        RunnerError: as above (status 2).
    """
    names = sorted(set().union(*declared.values())) if declared else []
    unknown = sorted(set(params) - set(names))
    if unknown:
        said = [u + (f" (did you mean {m[0]}?)" if (m := difflib.get_close_matches(u, names, 1)) else "")
                for u in unknown]
        raise RunnerError(f"no notebook takes the parameter(s) {', '.join(said)} (from {source[unknown[0]]}; the "
                          f"notebooks take {', '.join(names)})")
    for notebook, parameters in declared.items():
        for name, value in params.items():
            p = parameters.get(name)
            if p is not None and not p.accepts(value):
                raise RunnerError(f"parameter {name} (from {source[name]}) must be {p.takes()}, got {_shown(value)} "
                                  f"({_type_word(value)}); {notebook.name} declares `{p.cell_line()}`")


def read_parameters(path: Path) -> dict[str, Any]:
    """The parameters a YAML file sets (``name: value`` lines; an empty file sets none).

    Raises:
        RunnerError: no such file, unreadable, not YAML, or not a mapping of names to values (status 2).
    """
    import yaml

    shown = printable(path)
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise RunnerError(f"--parameters {shown}: no such file") from None
    except IsADirectoryError:
        raise RunnerError(f"--parameters {shown}: a folder, not a YAML file") from None
    except UnicodeDecodeError:
        raise RunnerError(f"--parameters {shown}: not a text file") from None
    except OSError as exc:
        raise RunnerError(f"--parameters {shown}: cannot be read ({exc.strerror or type(exc).__name__})") from None
    try:
        values = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RunnerError(f"--parameters {shown}: not valid YAML ({' '.join(str(exc).split())})") from None
    if values is None:
        return {}
    if not isinstance(values, dict) or not all(isinstance(k, str) for k in values):
        raise RunnerError(f"--parameters {shown}: must map parameter names to values (`epochs: 2`), got "
                          f"{_type_word(values)}")
    return values


def check_data(data: str, root: Path, source: str = "--data") -> None:
    """Refuse, in one line, a ``data`` that is neither ``digits`` nor a folder (a dataset root is
    read relative to the project root ``root``, as the notebooks read it), naming a folder with a
    close name when there is one.

    Raises:
        RunnerError: as above (status 2).
    """
    if data == "digits":
        return
    path = Path(os.path.abspath(root / data))
    shown = printable(display_path(path, root))
    if path.is_dir():
        if not os.access(path, os.R_OK | os.X_OK):
            raise RunnerError(f"{source} {printable(data)}: the folder {shown} cannot be read")
        return
    if path.exists():
        raise RunnerError(f"{source} {printable(data)}: {shown} is a file, not a dataset root (a folder of domain "
                          "folders)")
    hint = ""
    if path.parent.is_dir():
        near = difflib.get_close_matches(path.name, [c.name for c in path.parent.iterdir() if c.is_dir()], 1)
        hint = f"; did you mean {printable(display_path(path.parent / near[0], root))}?" if near else ""
    raise RunnerError(f"{source} {printable(data)}: no such folder ({shown}){hint} (give digits or a dataset root)")


def _say(text: str) -> None:
    print(text, flush=True)


def run(root: Path, data: str, smoke: bool, parameters: Path | None = None, only: list[str] | None = None) -> Path:
    """Execute every notebook (or those ``only`` selects) in order; returns the reports folder.

    Everything is checked before anything is written or executed (:func:`check_parameters`,
    :func:`check_data`); the values a parameters file sets win over ``data`` and ``smoke``, and
    decide the reports folder. Each notebook goes through :func:`execute`; the first that fails ends
    the run.

    Raises:
        RunnerError: refused (status 2: a parameter, the data root, ``only``, no notebooks), a
            notebook failed (status 1) or the run was interrupted (status 130); one line.
        BrokenPipeError: the standard output was closed.
    """
    params: dict[str, Any] = {"data": data, "smoke": smoke}
    source = {"data": "--data", "smoke": "--smoke"}
    if parameters is not None:
        from_file = read_parameters(Path(parameters))
        params.update(from_file)
        source.update({k: printable(parameters) for k in from_file})
    every = sorted((root / "notebooks").glob("0*.ipynb"))
    if not every:
        raise RunnerError("no notebooks found in notebooks/ (run `make notebooks`)")
    declared = {nb: declared_parameters(nb) for nb in every}
    check_parameters(params, declared, source)
    notebooks = every
    if only:
        for prefix in only:
            if not any(nb.name.startswith(prefix) for nb in every):
                raise RunnerError(f"no notebooks found for --only {printable(prefix)} (notebooks/ holds "
                                  f"{', '.join(nb.stem for nb in every)})")
        notebooks = [nb for nb in every if any(nb.name.startswith(o) for o in only)]
    data, smoke = params["data"], params["smoke"]
    check_data(data, root, source["data"])
    tag = dataset_name(data) + ("-smoke" if smoke else "")
    reports = root / "reports" / tag
    scratch = root / "runs" / tag / "notebooks"  # copies being executed, and those that failed
    for i, nb in enumerate(notebooks, 1):
        t0 = time.time()
        _say(f"[{i}/{len(notebooks)}] {nb.name} (data={printable(data)}, smoke={smoke})")
        own = {k: v for k, v in params.items() if k in declared[nb]}  # each notebook gets only its own
        try:
            execute(nb, reports / nb.name, own, root, scratch)
        except RunnerError as exc:
            later = len(notebooks) - i
            raise RunnerError(f"{exc}" + (f"; {later} later notebook(s) not run" if later else ""),
                              exc.status) from None
        except KeyboardInterrupt:
            kept = failed_copy(reports / nb.name, scratch)
            raise RunnerError(f"interrupted during {nb.name}" + (f"; its partial copy: {display_path(kept, root)}"
                                                                  if kept.exists() else ""), 130) from None
        _say(f"    done in {time.time() - t0:.0f} s -> {display_path(reports / nb.name, root)}")
    return reports


def failed_copy(output: Path, scratch: Path) -> Path:
    """Where the executed copy of a notebook meant for ``output`` is kept when it failed:
    ``scratch/<stem>.failed.ipynb``."""
    return Path(scratch) / f"{Path(output).stem}.failed.ipynb"


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
        self.closed = False  #: the terminal's pipe was closed (e.g. piped into ``head``)

    def line(self, text: str) -> None:
        """Print one progress line; a closed pipe is remembered (:attr:`closed`), not raised here."""
        if self.closed:
            return
        try:
            print(f"    {time.time() - self.t0:5.0f} s  {text}", file=self.out, flush=True)
        except BrokenPipeError:
            self.closed = True

    def emit(self, record: logging.LogRecord) -> None:
        """Show a cell as it starts.

        Raises:
            BrokenPipeError: the terminal's pipe is closed: raised as the next cell starts, so that
                papermill stops the notebook there (the kernel is shut down, the partial copy kept).
        """
        msg = record.getMessage()
        if msg.startswith("Executing Cell"):
            self.line(f"cell {msg.split()[2].strip('-')}/{self.n_cells}")
        if self.closed:
            raise BrokenPipeError("the standard output was closed")

    def write(self, text: str) -> int:
        for line in text.splitlines():
            if line.startswith(("epoch ", "resumed ")):
                self.line(" | ".join(line.split(" | ")[:3]))  # epoch, lr, loss
        return len(text)

    def flush(self) -> None:
        pass


def execute(notebook: Path, output: Path, parameters: dict, root: Path, scratch: Path | None = None) -> None:
    """Execute ``notebook`` with ``parameters`` (the kernel's working folder: ``root``) into
    ``output``, whose metadata then records paths relative to ``root``. The terminal shows each
    cell and each training epoch as they run (:class:`TerminalProgress`).

    ``output`` appears only when the notebook ran through and shows a reader nothing it should
    not: until then the copy is written to ``scratch/<stem>.running.ipynb`` (``scratch``: default
    ``output``'s folder); a copy that failed (or was stopped) is moved to
    ``scratch/<stem>.failed.ipynb`` (:func:`failed_copy`) with its traceback, and the failed copy
    of an earlier run goes when the notebook succeeds. An ``output`` of an earlier run is left as
    it was until then.

    Raises:
        RunnerError: (status 1, one line) a cell raised (naming the notebook, the cell as the
            terminal counted it, the error and where the full traceback is kept); the kernel could
            not run it; or the executed notebook shows a reader what it should not (a warning, an
            error, a progress bar, a figure made but not shown;
            :func:`~ucdir_core.companion.report_checks.output_problems`).
        BrokenPipeError, KeyboardInterrupt: the terminal's pipe closed, an interrupt (the partial
            copy is kept as the failed copy).
    """
    import nbformat
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    output = Path(output)
    scratch = Path(scratch) if scratch is not None else output.parent
    running = scratch / f"{output.stem}.running.ipynb"
    failed = failed_copy(output, scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    manager, config = quiet_kernel_manager()
    progress = TerminalProgress(len(nbformat.read(str(notebook), as_version=4).cells) + 1)  # + the parameters cell
    log = logging.getLogger("papermill")
    level, propagate = log.level, log.propagate
    log.addHandler(progress)
    log.setLevel(logging.INFO)
    log.propagate = False
    try:
        pm.execute_notebook(str(notebook), str(running), parameters=parameters, cwd=str(root), kernel_name="python3",
                            progress_bar=False, log_output=True, stdout_file=progress, kernel_manager_class=manager,
                            config=config)
    except PapermillExecutionError as exc:
        kept = _place(running, failed, root)
        message = worker_message(str(exc.evalue)).strip()
        error = exc.ename + (f": {message.splitlines()[0]}" if message else "")
        raise RunnerError(f"{notebook.name}, cell {exc.cell_index + 1}/{progress.n_cells}: {error}"
                          + (f" (traceback in {display_path(kept, root)})" if kept else ""), 1) from None
    except (BrokenPipeError, KeyboardInterrupt):
        _place(running, failed, root)
        raise
    except Exception as exc:  # noqa: BLE001 - the kernel died, would not start, timed out: one line
        kept = _place(running, failed, root)
        text = str(exc).strip()
        raise RunnerError(f"{notebook.name}: {type(exc).__name__}" + (f": {text.splitlines()[0]}" if text else "")
                          + (f" (partial copy: {display_path(kept, root)})" if kept else ""), 1) from None
    finally:
        log.removeHandler(progress)
        log.setLevel(level)
        log.propagate = propagate
    problems = output_problems(nbformat.read(str(running), as_version=4))
    if problems:
        kept = _place(running, failed, root)
        raise RunnerError(f"{notebook.name} ran, but shows what a report should not: " + "; ".join(problems)
                          + f" (kept as {display_path(kept, root)})", 1)
    _place(running, output, root)
    failed.unlink(missing_ok=True)


def _place(running: Path, target: Path, root: Path) -> Path | None:
    """Move the executed copy ``running`` to ``target`` (replacing it), its papermill metadata
    naming ``target`` and both paths relative to ``root``; returns ``target``, or None when there
    is no copy (the kernel never started). A copy that cannot be read back is moved as it is."""
    import nbformat

    if not running.exists():
        return None
    try:
        nb = nbformat.read(str(running), as_version=4)
        nb.metadata.setdefault("papermill", {})["output_path"] = str(target)
        relative_papermill_paths(nb, root)
        nbformat.write(nb, str(running))
    except Exception:  # noqa: BLE001 - a copy cut short (killed while written): kept as it is
        pass
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(running, target)
    except OSError:  # another file system
        shutil.move(str(running), str(target))
    return target


def _stdout_closed() -> None:
    """Point the standard output at the null device, so that flushing it at exit raises nothing."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no file descriptor (a test's captured output)
        pass


def main(argv: list[str] | None = None) -> int:
    """Build or run the notebooks; returns the exit status. Any refusal or failure is one line on
    stderr (``notebooks: error: ...``; status 2 refused before anything ran, 1 a notebook failed,
    130 interrupted); a closed standard output ends quietly with status 141."""
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("build", help="regenerate notebooks/*.ipynb from notebooks/src/*.py")
    p = sub.add_parser("run", help="run every notebook with papermill")
    p.add_argument("--data", default="digits", help="digits or a dataset root (default digits)")
    p.add_argument("--smoke", action="store_true", help="shrink every notebook to run in seconds")
    p.add_argument("--parameters", type=Path, help="YAML file of extra notebook parameters")
    p.add_argument("--only", nargs="+", help="run only notebooks whose names start with these prefixes")
    args = parser.parse_args(argv)
    root = project_root(Path(__file__).parent)
    try:
        if args.command == "build":
            try:
                written = build(root)
            except OSError as exc:
                raise RunnerError(f"cannot build the notebooks: {exc}") from None
            for path in written:
                _say(printable(path))
            return 0
        run(root, args.data, args.smoke, args.parameters, args.only)
        return 0
    except RunnerError as exc:
        try:
            print(f"notebooks: error: {exc}", file=sys.stderr, flush=True)
        except BrokenPipeError:
            pass
        return exc.status
    except BrokenPipeError:
        _stdout_closed()
        return 141
    except KeyboardInterrupt:
        print("notebooks: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
