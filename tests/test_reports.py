"""What the notebooks show and what their executed copies hold: figures displayed with their
captions, no machine paths, no kernel noise, no raw dumps, executed reports in step with their
sources, queries chosen by quantile and retrievals labelled with their classes."""

import copy
import json
import os
import re
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest

from ucdir_core import companion as R
from ucdir_core.companion import display as Disp
from ucdir_core.companion import report_checks as RC
from ucdir_core.companion.notebooks import build_notebook
from ucdir_core.evaluation.metrics import retrieval_metrics

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted((ROOT / "notebooks" / "src").glob("0*.py"))


# --- paths -------------------------------------------------------------------------------------

def test_display_path_relative_to_the_project_or_beside_it(tmp_path):
    root = tmp_path / "work" / "ucdir"
    root.mkdir(parents=True)
    assert R.display_path(root / "figures" / "pacs", root) == "figures/pacs"
    assert R.display_path(tmp_path / "work" / "shared" / "data" / "pacs", root) == "../shared/data/pacs"
    assert R.display_path(str(root / "runs" / ".." / "results"), root) == "results"
    assert R.display_path("../shared/data/pacs", root) == "../shared/data/pacs"  # as the user gave it
    assert R.display_path("/elsewhere/pacs", root) == "/elsewhere/pacs"
    assert R.display_path(Path.home() / "data" / "pacs", root) == "~/data/pacs"


MACHINE_PATH = re.compile(r"(?<![\w.~])/(work|home|root|tmp|Users)/")


def _committed_text_files():
    files = [ROOT / "README.md"]
    for folder in ("figures", "results", "reports"):
        files += sorted(p for p in (ROOT / folder).rglob("*") if p.suffix in (".txt", ".md", ".tex", ".json", ".ipynb"))
    return files


def _text_without_images(path: Path) -> str:
    if path.suffix != ".ipynb":
        return path.read_text()
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        for o in cell.get("outputs", []):
            for mime in [m for m in o.get("data", {}) if m.startswith("image/")]:
                del o["data"][mime]  # base64 may spell anything
    return json.dumps(nb)


@pytest.mark.parametrize("path", _committed_text_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_machine_paths_in_outputs(path):
    found = MACHINE_PATH.findall(_text_without_images(path))
    assert not found, f"{path.relative_to(ROOT)} holds an absolute machine path (/{found[0]}/...)"


def test_config_text_shows_the_root_relative(tmp_path):
    from ucdir_core.config.presets import get_preset

    cfg = get_preset("pacs").replace(root=os.path.abspath(ROOT.parent / "shared" / "data" / "pacs"))
    assert json.loads(R.config_text(cfg))["root"] == "../shared/data/pacs"


def test_a_symlinked_data_folder_is_shown_as_laid_out(tmp_path, monkeypatch):
    project = tmp_path / "work" / "ucdir"
    (project / "ucdir_core").mkdir(parents=True)
    (project / "pyproject.toml").write_text("")
    (tmp_path / "elsewhere" / "data" / "pacs").mkdir(parents=True)
    (tmp_path / "work" / "shared").symlink_to(tmp_path / "elsewhere")  # ../shared is a link
    monkeypatch.chdir(project)
    cfg = R.notebook_config("../shared/data/pacs", preset="pacs")
    assert json.loads(R.config_text(cfg))["root"] == "../shared/data/pacs"
    assert R.dataset_location(cfg) == "../shared/data/pacs"


def test_relative_papermill_paths():
    nb = {"metadata": {"papermill": {"input_path": str(ROOT / "notebooks" / "00_data.ipynb"),
                                     "output_path": str(ROOT / "reports" / "pacs" / "00_data.ipynb")}}}
    RC.relative_papermill_paths(nb, ROOT)
    assert nb["metadata"]["papermill"] == {"input_path": "notebooks/00_data.ipynb",
                                           "output_path": "reports/pacs/00_data.ipynb"}


# --- figures shown where they are made ---------------------------------------------------------

def test_show_figure_saves_with_caption_displays_one_png_and_closes(tmp_path, monkeypatch):
    import base64

    import IPython.display

    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    shown = []
    monkeypatch.setattr(Disp, "in_ipython", lambda: True)
    monkeypatch.setattr(IPython.display, "display", lambda obj: shown.append(obj))
    caption = 'A line, a->b "P@1" <50 %.'
    assert R.show_figure(fig, "x", tmp_path, caption=caption, pdf=True) is None
    assert (tmp_path / "x.png").exists() and (tmp_path / "x.pdf").exists()
    assert (tmp_path / "x.txt").read_text() == caption + "\n"
    assert len(shown) == 1 and shown[0].png[:8] == b"\x89PNG\r\n\x1a\n"
    assert not plt.fignum_exists(fig.number)  # the inline backend will not show it a second time
    bundle = shown[0]._repr_mimebundle_()
    page = bundle["text/html"]
    assert page.count("<img") == 1 and base64.b64encode(shown[0].png).decode() in page  # the PNG, stored once
    assert 'alt="A line, a-&gt;b &quot;P@1&quot; &lt;50 %."' in page
    assert "<figcaption>A line, a-&gt;b &quot;P@1&quot; &lt;50 %.</figcaption>" in page
    assert caption in bundle["text/plain"]
    # as an executed notebook stores it, the report check finds the figure and its caption
    import nbformat

    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("fig = training_curves(history)\nC.show_figure(fig, 'x', out, caption='A line.')")
    cell.outputs = [nbformat.v4.new_output("display_data", data=bundle)]
    nb.cells = [cell]
    assert RC.output_problems(nb) == []


def test_show_figure_outside_ipython_only_saves(tmp_path):
    fig = plt.figure()
    R.show_figure(fig, "y", tmp_path)
    assert (tmp_path / "y.png").exists() and not plt.fignum_exists(fig.number)


# --- executed reports --------------------------------------------------------------------------

def _executed(src: Path):
    """A synthetic executed copy of ``src``: papermill's injected cell, outputs, execution counts."""
    import nbformat

    nb = build_notebook(src)
    report = copy.deepcopy(nb)
    at = next(i for i, c in enumerate(report.cells) if "parameters" in c.metadata.get("tags", []))
    injected = nbformat.v4.new_code_cell('data = "../shared/data/pacs"\nsmoke = False\n')
    injected.metadata["tags"] = ["injected-parameters"]
    report.cells.insert(at + 1, injected)
    for n, cell in enumerate(c for c in report.cells if c.cell_type == "code"):
        cell.execution_count = n + 1
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="ok\n")]
    return report, nb


def test_report_drift_ignores_injected_parameters_and_outputs():
    report, source = _executed(SOURCES[1])
    assert RC.report_drift(report, source) == []
    edited = copy.deepcopy(report)
    code = [c for c in edited.cells if c.cell_type == "code"]
    code[-1].source += "\nassert True"
    drift = RC.report_drift(edited, source)
    assert len(drift) == 1 and drift[0].startswith(f"code cell {len(RC.code_cells(source)) - 1}:")
    shorter = copy.deepcopy(report)
    shorter.cells = [c for c in shorter.cells if c.cell_type != "code" or "assert" not in c.source]
    assert any("code cells" in p for p in RC.report_drift(shorter, source))


COMMITTED_REPORTS = sorted((ROOT / "reports" / "pacs").glob("0*.ipynb"))


@pytest.mark.skipif(not COMMITTED_REPORTS, reason="no executed PACS reports (make reports-pacs)")
@pytest.mark.parametrize("report", COMMITTED_REPORTS, ids=lambda p: p.stem)
def test_committed_report_has_the_code_of_its_source(report):
    source = ROOT / "notebooks" / report.name
    assert source.exists(), f"{report.name} has no source notebook"
    problems = RC.report_drift(json.loads(report.read_text()), json.loads(source.read_text()))
    assert not problems, f"{report.relative_to(ROOT)}: " + "; ".join(problems) + " (rerun `make reports-pacs`)"


@pytest.mark.skipif(not COMMITTED_REPORTS, reason="no executed PACS reports (make reports-pacs)")
def test_committed_reports_are_small():
    big = [p.name for p in COMMITTED_REPORTS if p.stat().st_size > 2_000_000]
    assert not big, f"executed reports over 2 MB: {big}"


def test_output_problems_finds_warnings_errors_and_hidden_figures():
    import nbformat

    nb = nbformat.v4.new_notebook()
    fig_cell = nbformat.v4.new_code_cell("fig = training_curves(history)\nR.show_figure(fig, 'x', out)")
    warn_cell = nbformat.v4.new_code_cell("import warnings")
    warn_cell.outputs = [nbformat.v4.new_output("stream", name="stderr", text="UserWarning: careful\n")]
    err_cell = nbformat.v4.new_code_cell("1/0")
    err_cell.outputs = [nbformat.v4.new_output("error", ename="ZeroDivisionError", evalue="division by zero",
                                               traceback=[])]
    nb.cells = [fig_cell, warn_cell, err_cell]
    problems = RC.output_problems(nb)
    assert len(problems) == 3 and "shows no image" in problems[0] and "stderr" in problems[1]
    shown = R.CaptionedFigure(b"\x89PNG\r\n\x1a\n", "A line.", "x")._repr_mimebundle_()
    fig_cell.outputs = [nbformat.v4.new_output("display_data", data=shown)]
    assert len(RC.output_problems(nb)) == 2


def _one_cell(*outputs):
    import nbformat

    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("C.train_or_load(cfg, run_dir)")
    cell.outputs = [nbformat.from_dict(o) for o in outputs]
    nb.cells = [cell]
    return nb


def _result(text, **data):
    return {"output_type": "execute_result", "execution_count": 1, "metadata": {},
            "data": {"text/plain": text, **data}}


def _stdout(text):
    return {"output_type": "stream", "name": "stdout", "text": text}


HISTORY = "[" + ",\n ".join(f"{{'epoch': {e}, 'lr': 0.02}}" for e in range(130)) + "]"
CONFIG = "{\n" + "".join(f'  "key_{i}": {i},\n' for i in range(78)) + "}\n"


def test_output_problems_finds_raw_dumps():
    """A whole history list as a cell's result, or a config printed as JSON: over MAX_TEXT_LINES
    lines of plain text, flagged; a table (HTML or Markdown beside the text), a figure or a few lines
    are not."""
    problems = RC.output_problems(_one_cell(_result(HISTORY)))
    assert problems == ["cell 0: a raw execute_result of 130 lines (end the cell with ';', assign the result, or "
                        "show a table)"]
    assert "a raw display_data of 130 lines" in RC.output_problems(
        _one_cell({"output_type": "display_data", "metadata": {}, "data": {"text/plain": HISTORY}}))[0]
    assert RC.output_problems(_one_cell(_stdout(CONFIG))) == [
        "cell 0: 80 printed lines (show a table, a figure or a summary line)"]
    half = CONFIG.splitlines(keepends=True)
    assert len(RC.output_problems(_one_cell(_stdout("".join(half[:40])), _stdout("".join(half[40:]))))) == 1
    assert RC.output_problems(_one_cell(_result(HISTORY, **{"text/html": "<table></table>"}))) == []
    assert RC.output_problems(_one_cell(_result(HISTORY, **{"text/markdown": "| a |\n|---|"}))) == []
    short = "\n".join(f"line {i}" for i in range(RC.MAX_TEXT_LINES)) + "\n"
    assert RC.output_problems(_one_cell(_result(short), _stdout(short))) == []


def _png(**more):
    return {"output_type": "display_data", "metadata": {}, "data": {"image/png": "iVBOR", "text/plain": "<Figure>",
                                                                   **more}}


def _markdown(text):
    return {"output_type": "display_data", "metadata": {}, "data": {"text/markdown": text, "text/plain": text}}


def test_output_problems_finds_images_without_caption_or_alt_text():
    assert RC.output_problems(_one_cell(_png())) == ["cell 0: an image without a caption or alt text"]
    assert RC.output_problems(_one_cell(_png(), _markdown("A line."))) == ["cell 0: an image without alt text"]
    img = '<img src="data:image/png;base64,iVBOR"{}>'
    figure = "<figure>{}<figcaption>{}</figcaption></figure>"
    no_alt = {"text/html": figure.format(img.format(""), "A line.")}
    assert RC.output_problems(_one_cell(_result("x", **no_alt))) == ["cell 0: an image without alt text"]
    empty_alt = {"text/html": figure.format(img.format(' alt=""'), "A line.")}
    assert RC.output_problems(_one_cell(_result("x", **empty_alt))) == ["cell 0: an image without alt text"]
    no_caption = {"text/html": img.format(' alt="A line."')}
    assert RC.output_problems(_one_cell(_result("x", **no_caption))) == ["cell 0: an image without a caption"]
    empty_caption = {"text/html": figure.format(img.format(" alt='A line.'"), " ")}
    assert RC.output_problems(_one_cell(_result("x", **empty_caption))) == ["cell 0: an image without a caption"]
    both = {"text/html": figure.format(img.format(' alt="A line."'), "A line.")}
    assert RC.output_problems(_one_cell(_result("x", **both))) == []
    assert RC.output_problems(_one_cell(_result("x", **{"text/html": "<table></table>"}))) == []
    uncaptioned = R.CaptionedFigure(b"\x89PNG", None, "x")._repr_mimebundle_()
    assert RC.output_problems(_one_cell(_result("x", **uncaptioned))) == ["cell 0: an image without a caption"]


def test_config_table_shows_the_settings_that_matter(tmp_path):
    from ucdir_core.config.presets import get_preset

    cfg = get_preset("pacs").replace(root=os.path.abspath(ROOT.parent / "shared" / "data" / "pacs"))
    table = R.config_table(cfg, full_at=ROOT / "runs" / "x" / "config.json")
    lines = table.splitlines()
    assert len(lines) <= RC.MAX_TEXT_LINES + 2 and lines[:2] == ["| setting | value |", "|---|---|"]
    assert "| root | ../shared/data/pacs |" in lines and "| domains | photo, sketch |" in lines
    assert {line.split(" | ")[0][2:] for line in lines[2:2 + len(R.CONFIG_KEYS)]} == set(R.CONFIG_KEYS)
    assert lines[-1].startswith("Every setting (") and lines[-1].endswith("`runs/x/config.json`.")
    assert "| root | embedded |" in R.config_table(get_preset("digits"), keys=("root",))
    with pytest.raises(KeyError, match="no_such_setting"):
        R.config_table(cfg, keys=("seed", "no_such_setting"))


def test_transient_log_clears_the_cell_only_after_a_quiet_block(monkeypatch, capsys):
    import sys

    import IPython.display

    cleared = []
    monkeypatch.setattr(Disp, "in_ipython", lambda: True)
    monkeypatch.setattr(IPython.display, "clear_output", lambda wait=False: cleared.append(wait))
    stderr = sys.stderr
    with R.transient_log():
        print("epoch 0 | lr 0.02 | loss 3.0")
    assert cleared == [False] and sys.stderr is stderr
    with R.transient_log():
        print("warning: careful", file=sys.stderr)  # a warning stays for the report check
    assert cleared == [False] and sys.stderr is stderr
    with pytest.raises(RuntimeError):
        with R.transient_log():
            raise RuntimeError("diverged")  # the log stays beside the error
    assert cleared == [False] and sys.stderr is stderr
    monkeypatch.setattr(Disp, "in_ipython", lambda: False)
    with R.transient_log():
        print("epoch 1")
    assert cleared == [False]
    assert "epoch 0" in capsys.readouterr().out


@pytest.mark.parametrize("output", [
    {"output_type": "stream", "name": "stdout", "text": "cache views:  12%|#2        | 3/25 [00:01<00:09]\n"},
    {"output_type": "stream", "name": "stdout", "text": "epoch 0\repoch 1"},
    {"output_type": "display_data", "data": {"application/vnd.jupyter.widget-view+json": {"model_id": "x"},
                                             "text/plain": "  0%|          | 0/180"}, "metadata": {}},
])
def test_output_problems_finds_progress_bars(output):
    import nbformat

    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("train()")
    cell.outputs = [nbformat.from_dict(output)]
    nb.cells = [cell]
    assert RC.output_problems(nb) == ["cell 0: a progress bar is left in the output"]
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="epoch 0 | lr 2.00e-02 | loss 3.0 | 100%\n")]
    assert RC.output_problems(nb) == []


def test_running_a_notebook_prints_cells_and_epochs_in_the_terminal():
    import io

    from ucdir_core.companion.notebooks import TerminalProgress

    out = io.StringIO()
    progress = TerminalProgress(5, out)
    import logging

    progress.emit(logging.LogRecord("papermill", logging.INFO, "", 0, "Executing Cell 2-------", None, None))
    progress.write("some output\nepoch 3 | lr 1.0e-02 | loss 2.5 | a->b P@1 50.0 | 3.0s\n")
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and lines[0].endswith("cell 2/5") and lines[1].endswith("epoch 3 | lr 1.0e-02 | loss 2.5")


EXECUTED = sorted((ROOT / "reports").glob("*/0*.ipynb"))


@pytest.mark.skipif(not EXECUTED, reason="no executed notebooks in reports/ (make smoke or make reports-pacs)")
@pytest.mark.parametrize("report", EXECUTED, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_executed_notebook_shows_its_figures_and_no_warnings(report):
    problems = RC.output_problems(json.loads(report.read_text()))
    assert not problems, "; ".join(problems)


@pytest.mark.slow
def test_papermill_run_has_no_kernel_noise_and_relative_paths(tmp_path, capfd):
    import nbformat

    from ucdir_core.companion.notebooks import execute

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell("x = 1")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell("print(x + 1)")]
    (tmp_path / "nb").mkdir()
    nbformat.write(nb, str(tmp_path / "nb" / "a.ipynb"))
    execute(tmp_path / "nb" / "a.ipynb", tmp_path / "out.ipynb", {"x": 2}, tmp_path)
    err = capfd.readouterr().err
    assert "without encryption" not in err and "KeyboardInterrupt" not in err, err
    done = json.loads((tmp_path / "out.ipynb").read_text())
    assert done["metadata"]["papermill"]["input_path"] == "nb/a.ipynb"
    assert done["metadata"]["papermill"]["output_path"] == "out.ipynb"
    assert "".join(done["cells"][-1]["outputs"][0]["text"]) == "3\n"


# --- queries at quantiles of per-query precision -----------------------------------------------

def test_per_query_precision_hand_worked():
    gallery = np.array([[1, 0], [1, 0.1], [0.9, -0.1], [0, 1], [0.1, 1], [-0.1, 0.9], [-1, 0]], dtype=np.float32)
    g_lab = np.array([0, 0, 0, 1, 1, 1, 2])
    query = np.array([[1, 0], [0, 1], [1, 0.95], [-1, 0], [1, 0]], dtype=np.float32)
    q_lab = np.array([0, 0, 0, 2, 3])
    p = R.per_query_precision(query, q_lab, gallery, g_lab, k=2)
    # q0: two class-0 items on top; q1: two class-1 items; q2: (1, 0.1) then (0.1, 1), one hit of two;
    # q3: class 2 has one gallery item, so k is capped at 1, and it is found; q4: class absent
    np.testing.assert_allclose(p[:4], [100, 0, 50, 100])
    assert np.isnan(p[4])


def test_per_query_precision_pools_to_the_reference_p_at_k():
    rng = np.random.default_rng(0)
    q, g = rng.normal(size=(60, 8)), rng.normal(size=(50, 8))
    ql, gl = rng.integers(0, 5, 60), np.r_[rng.integers(0, 5, 47), [0, 0, 0]]
    gl[gl == 4] = 3  # class 4 absent from the gallery: its queries count nowhere
    k = 10
    p = R.per_query_precision(q, ql, g, gl, k=k, block_size=7)
    k_i = np.array([min(k, (gl == y).sum()) for y in ql])
    ok = ~np.isnan(p)
    pooled = (p[ok] * k_i[ok]).sum() / k_i[ok].sum()
    assert pooled == pytest.approx(retrieval_metrics(q, ql, g, gl, ks=(k,), with_map=False)[f"P@{k}"], abs=1e-4)


def test_quantile_queries_picks_by_rank_ties_by_seed():
    precision = np.array([0, 50, 100, np.nan, 50, 20])
    picks = R.quantile_queries(precision, (0.0, 0.5, 1.0), seed=0)
    assert [q for q, _ in picks] == [0.0, 0.5, 1.0]
    assert [precision[i] for _, i in picks] == [0, 50, 100]
    assert picks[0][1] == 0 and picks[2][1] == 2 and picks[1][1] in (1, 4)
    assert R.quantile_queries(precision, (0.5,), seed=0) == R.quantile_queries(precision, (0.5,), seed=0)
    assert {R.quantile_queries(precision, (0.5,), seed=s)[0][1] for s in range(20)} == {1, 4}
    with pytest.raises(ValueError):
        R.quantile_queries(np.array([np.nan]))


def test_retrieval_grid_names_the_class_of_every_image(tmp_path):
    from PIL import Image

    labels = [np.array([0, 1]), np.array([1, 0, 1])]
    paths = []
    for side, labs in enumerate(labels):
        paths.append([])
        for i, _ in enumerate(labs):
            paths[side].append(str(tmp_path / f"{side}_{i}.png"))
            Image.new("RGB", (4, 4), (40 * i, 0, 0)).save(paths[side][-1])
    emb = [np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([[0.0, 1.0], [1.0, 0.1], [0.9, 0.3]])]
    precision = np.array([50.0, 50.0])
    grid = R.retrieval_grid(emb, labels, paths, 0, 1, [(0.5, 0)], precision, top_k=3, class_names=["cat", "dog"])
    # query 0 (cat) retrieves gallery 1 (cat), 2 (dog), 0 (dog)
    assert grid["classes"] == [["cat", "cat", "dog", "dog"]]
    assert grid["borders"] == [[None, "green", "red", "red"]]
    assert grid["row_labels"] == ["50th percentile\nP@3 50 %\n(top 1 = class size)"]  # one cat in the gallery
    assert R.retrieval_grid(emb, labels, paths, 0, 1, [(0.5, 0)], precision, top_k=1)["classes"] == [["0", "0"]]


def test_ablation_histories_reads_existing_runs(tmp_path):
    from ucdir_core.training import runs
    from ucdir_core.companion import run_name
    from ucdir_core.config.presets import get_preset

    cfg = get_preset("digits")
    folder = runs.RunFolder(tmp_path / run_name(cfg, "full"))
    folder.start(cfg, ["test"])
    folder.append_history({"epoch": 0, "alignment": {"domain_mixing": 0.1, "class_agreement": 50.0}})
    histories = R.ablation_histories(tmp_path, cfg)
    assert list(histories) == ["full"] and R.has_alignment(histories)
    assert not R.has_alignment({"full": [{"epoch": 0}]})


def test_ablation_over_directions_from_a_results_file():
    dirs = [f"{a}->{b}" for a in "pqrs" for b in "pqrs" if a != b]
    rows = {m: {d: {"P@1": 50.0, "P@5": 48.0, "mAP": 40.0} for d in dirs}
            for m in ("baseline", "instance", "+cluster", "+self_entropy", "+distance_of_distance", "full", "oracle")}
    res = {"dataset": "pacs", "seed": 0, "regime": "5 epochs; last epoch", "results": {"full": rows, "heldout": rows},
           "seeds": {"1": {"full": {"full": rows["full"]}}}}
    fig, caption = R.ablation_over_directions(res)
    assert len(fig.axes) == 4
    assert "all 12 retrieval directions" in caption and "seed 1" in caption and "oracle" in caption
    assert "centred" not in caption  # only the anchors the file has
    plt.close(fig)


def test_a_results_file_written_before_the_anchor_was_renamed_reads_under_the_new_name(tmp_path):
    from ucdir_core.companion.results import read_results

    row = {"a->b": {"P@1": 1.0}}
    old = {"results": {"full": {"centered": row}}, "alignment": {"full": {"centered": {}}},
           "seeds": {"1": {"full": {"centered": row}}}}
    (tmp_path / "r.json").write_text(json.dumps(old))
    res = read_results(tmp_path / "r.json")
    assert res["results"]["full"] == {"centred": row} and "centred" in res["alignment"]["full"]
    assert res["seeds"]["1"]["full"] == {"centred": row}
