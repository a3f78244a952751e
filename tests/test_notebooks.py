"""The committed notebooks match their sources, carry no outputs, and have a parameters cell."""

import json
import os
from pathlib import Path

import pytest

from ucdir_core.companion.notebooks import build_notebook

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted((ROOT / "notebooks" / "src").glob("0*.py"))


def test_six_numbered_notebooks():
    assert [p.stem[:2] for p in SOURCES] == ["00", "01", "02", "03", "04", "05"]


@pytest.mark.parametrize("src", SOURCES, ids=lambda p: p.stem)
def test_notebook_in_sync_clean_and_parameterised(src):
    committed = json.loads((ROOT / "notebooks" / f"{src.stem}.ipynb").read_text())
    built = build_notebook(src)
    assert ["".join(c["source"]) for c in committed["cells"]] == [c.source for c in built.cells], "run `make notebooks`"
    code = [c for c in committed["cells"] if c["cell_type"] == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code)
    tagged = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1 and "smoke = False" in "".join(tagged[0]["source"])
    first = "".join(committed["cells"][0]["source"])
    assert first.startswith("# 0") and "ECCV 2022" in first
    last = "".join(committed["cells"][-1]["source"])
    assert "assert" in last  # the check cell


@pytest.mark.parametrize("src", SOURCES, ids=lambda p: p.stem)
def test_papermill_reads_every_parameter(src, caplog):
    import papermill as pm

    with caplog.at_level("WARNING"):
        found = pm.inspect_notebook(str(ROOT / "notebooks" / f"{src.stem}.ipynb"))
    assert {"data", "preset", "domains", "epochs", "seed", "device", "smoke"} <= set(found)
    assert "Unable to parse" not in caplog.text


def test_unknown_notebook_parameter_is_refused(tmp_path):
    from ucdir_core.companion.notebooks import run

    params = tmp_path / "p.yaml"
    params.write_text("results_fil: results/pacs.json\n")  # misspelt
    with pytest.raises(SystemExit, match="results_fil"):
        run(ROOT, "digits", True, parameters=params)
    params.write_text("results_file: results/pacs.json\n")  # 04's parameter, fine with --only 02
    with pytest.raises(SystemExit, match="no notebooks found"):
        run(ROOT, "digits", True, parameters=params, only=["99"])


@pytest.mark.parametrize("src", SOURCES, ids=lambda p: p.stem)
def test_every_figure_is_shown_where_it_is_made(src):
    """A cell that makes a figure displays it (and saves it) through ``companion.show_figure``; none
    only saves it to a file."""
    from ucdir_core.companion.report_checks import FIGURE_CALLS

    for cell in build_notebook(src).cells:
        if cell.cell_type != "code":
            continue
        assert "save_figure(" not in cell.source, "use C.show_figure: it saves and displays"
        if any(call in cell.source for call in FIGURE_CALLS):
            assert "C.show_figure(" in cell.source, f"a figure made here is not shown:\n{cell.source}"


def test_relative_data_root_is_read_from_the_project_root(monkeypatch):
    """JupyterLab runs a notebook's kernel in notebooks/, papermill in the project root: both read
    the same folder."""
    from ucdir_core.companion import notebook_config

    expected = os.path.abspath(ROOT / ".." / "shared" / "data" / "pacs")  # a symlinked ../shared kept as laid out
    for cwd in (ROOT, ROOT / "notebooks"):
        monkeypatch.chdir(cwd)
        assert notebook_config("../shared/data/pacs").root == expected
