"""Every entry point fails in one line and leaves nothing half-done (docs/guarantees.md; issue 26):
the notebook runner, class names that look equal but are not, a DataLoader worker's file error, and
file names that could break a printed line. Each case stands for its kind: the exit status, the one
line and what is on disk afterwards."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import unicodedata
from pathlib import Path

import nbformat
import pytest

from conftest import write_folder
from test_robustness import args, folder, one_error_line
from ucdir_core.base.errors import DataError
from ucdir_core.base.text import distinguishable, error_line, escape_controls, printable, worker_message
from ucdir_core.cli import main
from ucdir_core.companion import notebooks as N
from ucdir_core.training import runs
from ucdir_core.training.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
NFC, NFD = unicodedata.normalize("NFC", "café"), unicodedata.normalize("NFD", "café")


# ----------------------------------------------------------------------------- 1. the notebook runner
def project_with(tmp_path, monkeypatch, notebooks: dict[str, nbformat.NotebookNode] | None = None) -> Path:
    """A project root for the runner: the committed notebooks (or ``notebooks``) in ``notebooks/``."""
    project = tmp_path / "project"
    (project / "notebooks").mkdir(parents=True)
    if notebooks is None:
        for nb in sorted((ROOT / "notebooks").glob("0*.ipynb")):
            shutil.copy(nb, project / "notebooks" / nb.name)
    else:
        for name, nb in notebooks.items():
            nbformat.write(nb, str(project / "notebooks" / name))
    monkeypatch.setattr(N, "project_root", lambda *a, **k: project)
    return project


def fake_notebook() -> nbformat.NotebookNode:
    """A notebook that runs in a second: it pauses ``pause`` seconds, then raises if ``fail``, then
    writes to stderr (a warning a report must not show) if ``warn``."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell('data = "digits"  # data\nsmoke = False  # smoke\nfail = False  # raise\n'
                                       'warn = False  # warn\npause = 0  # seconds to wait first')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell("import time\ntime.sleep(pause)"),
                nbformat.v4.new_code_cell("if fail:\n    raise ValueError('boom\\nsecond line')"),
                nbformat.v4.new_code_cell("import sys\nif warn:\n    print('careful', file=sys.stderr)")]
    return nb


def runner_line(capsys, argv, status=2) -> str:
    """Run the notebook runner: its exit status must be ``status`` and stderr one line, no traceback."""
    code = N.main(argv)
    out, err = capsys.readouterr()
    assert code == status, out + err
    assert "Traceback" not in out + err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("notebooks: error: "), err
    return lines[0]


REFUSALS = {
    "misspelt root": ([], ["--data", "pcas", "--smoke", "--only", "00"],
                      ["--data pcas: no such folder", "did you mean pacs?"]),
    "a string for an integer": (['epochs: "2"'], ["--smoke", "--only", "00"],
                                ["parameter epochs", "must be an integer or null, got '2' (a string)",
                                 "epochs = None"]),
    "a string for a boolean": (['smoke: "false"'], [],
                               ["parameter smoke", "must be true or false, got 'false' (a string)"]),
    "one domain": (["domains: [A]"], [], ["parameter domains", "a list of two strings or null", "['A']"]),
    "a misspelt name": (["result_file: results/pacs.json"], [],
                        ["no notebook takes the parameter(s) result_file (did you mean results_file?)"]),
    "not YAML": (["epochs: ["], [], ["not valid YAML"]),
    "not a mapping": (["- 1"], [], ["must map parameter names to values", "got a list"]),
    "nothing selected": ([], ["--only", "9"], ["no notebooks found for --only 9", "00_data"]),
    "a file as root": ([], ["--data", "notes.txt"], ["--data notes.txt: notes.txt is a file, not a dataset root"]),
}


@pytest.mark.parametrize("case", REFUSALS, ids=list(REFUSALS))
def test_the_runner_checks_everything_before_it_runs_anything(tmp_path, monkeypatch, capsys, case):
    lines, argv, expected = REFUSALS[case]
    project = project_with(tmp_path, monkeypatch)
    (project / "pacs").mkdir()
    (project / "notes.txt").write_text("x")
    if lines:
        (project / "p.yaml").write_text("\n".join(lines) + "\n")
        argv = [*argv, "--parameters", str(project / "p.yaml")]
    line = runner_line(capsys, ["run", *argv])
    assert all(text in line for text in expected), line
    assert not (project / "reports").exists() and not (project / "runs").exists()


def test_a_missing_parameters_file_is_one_line(tmp_path, monkeypatch, capsys):
    project = project_with(tmp_path, monkeypatch)
    line = runner_line(capsys, ["run", "--parameters", str(project / "nope.yaml")])
    assert "nope.yaml: no such file" in line


def test_every_notebook_parameter_has_a_type_the_runner_checks():
    for nb in sorted((ROOT / "notebooks").glob("0*.ipynb")):
        for p in N.declared_parameters(nb).values():
            assert p.kind is not None, f"{nb.name}: add {p.name}'s kind to KINDS_OF_NONE_DEFAULTS"


def test_the_parameters_file_decides_what_runs_and_where_it_goes(tmp_path, monkeypatch, capsys):
    """``smoke: true`` in the file is what the notebooks get, what the runner prints and where the
    reports go (it used to print ``smoke=False`` and file a smoke run as a full one)."""
    project = project_with(tmp_path, monkeypatch)
    (project / "p.yaml").write_text("smoke: true\nepochs: 2\n")
    ran = []
    monkeypatch.setattr(N, "execute", lambda nb, output, params, root, scratch=None: ran.append((output, params)))
    assert N.main(["run", "--parameters", str(project / "p.yaml"), "--only", "00", "01"]) == 0
    out = capsys.readouterr().out
    assert "[1/2] 00_data.ipynb (data=digits, smoke=True)" in out
    reports = project / "reports" / "digits-smoke"
    assert [o for o, _ in ran] == [reports / "00_data.ipynb", reports / "01_train.ipynb"]
    assert all(p["smoke"] is True and p["epochs"] == 2 for _, p in ran)


@pytest.mark.slow
def test_an_error_inside_a_notebook_is_one_line_and_leaves_no_report(tmp_path, monkeypatch, capsys):
    project = project_with(tmp_path, monkeypatch)
    (project / "empty").mkdir()  # a folder, so the runner starts; the notebook finds no domain in it
    line = runner_line(capsys, ["run", "--data", "empty", "--smoke", "--only", "00"], status=1)
    failed = Path("runs") / "folder-smoke" / "notebooks" / "00_data.failed.ipynb"
    assert re.search(r"00_data\.ipynb, cell \d+/\d+: DataError: domain folder not found", line), line
    assert f"(traceback in {failed})" in line
    assert not (project / "reports").exists()
    assert [p.name for p in (project / failed).parent.iterdir()] == ["00_data.failed.ipynb"]  # no copy running
    kept = json.loads((project / failed).read_text())
    assert any(o["output_type"] == "error" for c in kept["cells"] for o in c.get("outputs", []))
    assert kept["metadata"]["papermill"]["output_path"] == str(failed)


@pytest.mark.slow
def test_a_report_appears_only_complete_and_a_failure_is_kept_apart(tmp_path, monkeypatch, capsys):
    project = project_with(tmp_path, monkeypatch, {"00_x.ipynb": fake_notebook()})
    (project / "fail.yaml").write_text("fail: true\n")
    report = project / "reports" / "digits" / "00_x.ipynb"
    failed = project / "runs" / "digits" / "notebooks" / "00_x.failed.ipynb"
    line = runner_line(capsys, ["run", "--parameters", str(project / "fail.yaml")], status=1)
    assert line == ("notebooks: error: 00_x.ipynb, cell 4/5: ValueError: boom (traceback in "
                    "runs/digits/notebooks/00_x.failed.ipynb)")
    assert failed.exists() and not report.exists()
    (project / "warn.yaml").write_text("warn: true\n")
    line = runner_line(capsys, ["run", "--parameters", str(project / "warn.yaml")], status=1)
    assert "00_x.ipynb ran, but shows what a report should not: cell 4: stderr: careful" in line, line
    assert line.endswith("(kept as runs/digits/notebooks/00_x.failed.ipynb)") and not report.exists()
    assert N.main(["run"]) == 0
    assert "done in" in capsys.readouterr().out
    assert report.exists() and not failed.exists()
    assert [p.name for p in failed.parent.iterdir()] == []
    assert json.loads(report.read_text())["metadata"]["papermill"]["output_path"] == "reports/digits/00_x.ipynb"


@pytest.mark.slow
def test_a_closed_pipe_ends_the_runner_quietly(tmp_path, monkeypatch):
    project = project_with(tmp_path, monkeypatch, {"00_x.ipynb": fake_notebook()})
    (project / "slow.yaml").write_text("pause: 3\n")
    code = ("import sys; from pathlib import Path; from ucdir_core.companion import notebooks as N; "
            "N.project_root = lambda *a: Path(sys.argv[1]); sys.exit(N.main(sys.argv[2:]))")
    proc = subprocess.Popen([sys.executable, "-c", code, str(project), "run", "--parameters",
                             str(project / "slow.yaml")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=project)
    first = proc.stdout.readline()
    proc.stdout.close()  # as `| head -1` does
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141
    assert first.decode().startswith("[1/1] 00_x.ipynb")
    assert "Traceback" not in err and "Error" not in err, err
    assert not (project / "reports").exists()  # the stopped notebook is no report
    assert [p.name for p in (project / "runs" / "digits" / "notebooks").iterdir()] == ["00_x.failed.ipynb"]


# ----------------------------------------------------------------------------- 2. names that look equal
def test_a_class_spelt_nfc_in_one_domain_and_nfd_in_the_other_is_one_class(tmp_path, capsys):
    from ucdir_core.data.folders import load_domains, shared_class_count

    assert NFC != NFD
    root = write_folder(tmp_path / "data", {"A": {"cat": 6, NFC: 6}, "B": {"cat": 6, NFD: 6}}, size=32)
    assert main(["data", "check", str(root), "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "missing" not in out
    assert f"A: 12 images, 2 classes: {NFC} 6, cat 6" in out and f"B: 12 images, 2 classes: {NFD} 6, cat 6" in out
    assert shared_class_count(root, ("A", "B")) == 2
    images = load_domains(root, ("A", "B"))
    assert images.a.classes == images.b.classes == [NFC, "cat"]
    assert set(images.a.labels.tolist()) == set(images.b.labels.tolist()) == {0, 1}  # every query has its class
    assert sum(NFD in p for p in images.b.paths) == 6  # paths keep the names as stored
    run = tmp_path / "run"
    assert main(["train", "--root", str(root), "--domains", "A", "B", "--run-dir", str(run), "--quiet", "--device",
                 "cpu", "--epochs", "2", "--backbone", "small_cnn", "--set", "trunk_blocks=None", "--set",
                 "image_size=32", "--set", "resize_size=32", "--set", "workers=0"]) == 0
    assert json.loads((run / runs.CONFIG).read_text())["num_clusters"] == [2]


def test_two_folders_of_one_class_in_a_domain_are_one_class_and_shown_apart(tmp_path, capsys):
    from ucdir_core.data.folders import load_domains

    root = write_folder(tmp_path / "data", {"A": {NFC: 2, NFD: 2, "dog": 2}, "B": {NFC: 2, "dog": 2}}, size=16)
    assert main(["data", "check", str(root), "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "A: 6 images, 3 classes: 'cafe\\u0301' 2, 'caf\\xe9' 2, dog 2" in out and "missing" not in out
    images = load_domains(root, ("A", "B"))
    assert images.a.classes == [NFC, "dog"] and (images.a.labels == 0).sum() == 4


def test_a_benchmark_class_folder_stored_decomposed_is_laid_out(tmp_path):
    from ucdir_core.data.datasets import Benchmark, lay_out

    tree = write_folder(tmp_path / "tree", {"A": {NFD: 2, "dog": 1}}, size=8)
    counts = lay_out(Benchmark("x", ("A",), (NFC, "dog")), tree, tmp_path / "root")
    assert counts == {"A": 3} and len(list((tmp_path / "root" / "A" / NFC).iterdir())) == 2


def test_names_that_differ_only_invisibly_are_shown_so_that_they_differ(tmp_path, capsys):
    from ucdir_core.data.folders import load_domains

    root = write_folder(tmp_path / "data", {"A": {"cat": 3, "dog": 3}, "B": {"cat\u200b": 3, "dog": 3}}, size=16)
    code = main(["data", "check", str(root), "--workers", "1"])
    out, err = capsys.readouterr()
    assert code == 2 and "ucdir: error: classes are missing" in err
    assert "classes missing from A: 'cat\\u200b'" in out and "classes missing from B: 'cat'" in out
    with pytest.raises(DataError, match=re.escape("classes only in A: 'cat'; classes only in B: 'cat\\u200b'")):
        load_domains(root, ("A", "B"))


def test_text_helpers():
    assert printable("A/cat/001.png") == "A/cat/001.png" and printable(f"A/{NFD}/x y.png") == f"A/{NFD}/x y.png"
    assert printable("a\nb.png") == "'a\\nb.png'" and printable("a\x1b[2Jb") == "'a\\x1b[2Jb'"
    assert escape_controls("resumed run\nx at epoch 2") == "resumed run\\nx at epoch 2"
    assert distinguishable([NFC, NFD, "dog"]) == {NFC: "'caf\\xe9'", NFD: "'cafe\\u0301'", "dog": "dog"}
    assert distinguishable(["cat ", "cat", "café"]) == {"cat ": "'cat '", "cat": "'cat'", "café": "café"}
    wrapped = ("Caught ImageMissingError in DataLoader worker process 1.\nOriginal Traceback (most recent call "
               "last):\n  File \"x.py\", line 1, in f\nucdir_core.data.images.ImageMissingError: a.png: image file "
               "not found\n")
    assert worker_message(wrapped) == "a.png: image file not found" and worker_message("plain") == "plain"
    assert error_line(DataError("root not found: a\nb")) == "root not found: a\\nb"
    assert error_line(FileNotFoundError("no run at a\nb")) == "no run at a\\nb"
    assert printable("bad\udcff.png") == "'bad\\udcff.png'"  # a name that is not UTF-8 prints too
    assert error_line(RuntimeError("first\nsecond")) == "first" and error_line(ValueError()) == "ValueError"


# ----------------------------------------------------------------------------- 3. a worker's error
@pytest.mark.parametrize("workers", [0, 2])
def test_an_image_removed_during_training_is_named_whatever_the_workers(tmp_path, capsys, monkeypatch, workers):
    root = folder(tmp_path)
    run = tmp_path / "run"
    gone = root / "A" / "dog" / "002.png"
    original = Trainer.train_epoch

    def removing(self, epoch):
        if epoch == 1:
            gone.unlink(missing_ok=True)
        return original(self, epoch)

    monkeypatch.setattr(Trainer, "train_epoch", removing)
    line = one_error_line(capsys, main(args(root, run, "--set", f"workers={workers}")))
    assert line.startswith(f"ucdir: error: {gone}: image file not found") and "--resume" in line, line
    assert "DataLoader" not in line
    assert not (run / runs.LOCK).exists()
    monkeypatch.setattr(Trainer, "train_epoch", original)
    assert "1 removed (A/dog/002.png)" in one_error_line(capsys, main(args(root, run, "--resume")))


def test_a_file_error_in_a_worker_keeps_its_type_and_its_line(tmp_path):
    """torch re-raises a worker's error as ``type(error)(message)``: both image errors survive it
    with their one line (an error of three arguments used to become a RuntimeError)."""
    from torch.utils.data import DataLoader

    from ucdir_core.data.images import ImageDecodeError, ImageMissingError
    from ucdir_core.data.views import EvalImages

    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    for path, error in ((tmp_path / "gone.png", ImageMissingError), (broken, ImageDecodeError)):
        loader = DataLoader(EvalImages([str(path)], lambda img: img), num_workers=1, collate_fn=lambda b: b)
        with pytest.raises(error) as caught:
            next(iter(loader))
        assert str(caught.value).startswith(f"{path}: ") and "\n" not in str(caught.value)
    assert isinstance(ImageMissingError(path="x"), FileNotFoundError)


# ----------------------------------------------------------------------------- 4. names that break lines
def test_a_newline_in_a_file_name_cannot_split_a_printed_line(tmp_path, capsys):
    root = folder(tmp_path)
    odd = root / "B" / "cat" / "a\nb.png"
    shutil.copy(root / "B" / "cat" / "000.png", odd)
    bad = root / "A" / "cat" / "bad\rname.png"
    bad.write_bytes(b"not an image")
    run = tmp_path / "run\nx"
    assert main(args(root, run)) == 0
    capsys.readouterr()

    assert main(["retrieve", str(run), str(root / "A" / "cat" / "000.png"), "--top-k", "19"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"query {root / 'A' / 'cat' / '000.png'} (from A); searching B" and len(lines) == 2 + 19 + 1
    assert all(re.fullmatch(r"\s*\d+\s+-?\d\.\d{4}\s+\S.*", row) for row in lines[2:-1]), lines
    assert any(row.endswith(repr(str(odd))) for row in lines[2:-1]) and lines[-1].startswith("(score: cosine")
    assert main(["retrieve", str(run), str(root / "A" / "cat" / "000.png"), "--top-k", "19", "--json"]) == 0
    assert str(odd) in [r["path"] for r in json.loads(capsys.readouterr().out)["results"]]  # JSON: as stored

    assert main(["data", "check", str(root), "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert f"unreadable: 1 files, e.g. {repr(str(bad))}" in out and "\r" not in out

    assert main(args(root, run, "--resume")) == 0
    assert f"resumed {escape_controls(run)} at epoch" in capsys.readouterr().out

    missing, no_root = str(tmp_path / "no\nsuch.png"), str(tmp_path / "x\ny")
    line = one_error_line(capsys, main(["retrieve", str(run), missing]))
    assert line == f"ucdir: error: query image not found: {missing!r}"
    line = one_error_line(capsys, main(["data", "check", no_root]))
    assert line == f"ucdir: error: dataset root not found: {no_root!r}"


# ----------------------------------------------------------------------------- 5. a failed start leaves nothing
@pytest.mark.parametrize("case", ["backbone", "config", "schedule", "device", "data"])
def test_every_refusal_at_start_names_the_fix_and_leaves_no_run_folder(tmp_path, capsys, case):
    root = folder(tmp_path)
    run = tmp_path / "run"
    base = ["train", "--root", str(root), "--domains", "A", "B", "--run-dir", str(run), "--quiet"]
    extra, expected = {
        # the folder preset freezes a trunk that a small CNN does not have
        "backbone": (["--backbone", "small_cnn"], "pass --set trunk_blocks=None to train it end to end"),
        "config": (["--set", "momentum=2"], "momentum must be in [0, 1), got 2.0"),
        "schedule": (["--backbone", "small_cnn", "--set", "trunk_blocks=None", "--epochs", "1"],
                     "cluster_contrastive is weighted 1 but never switches on in 1 epoch(s)"),
        "device": (["--device", "cuda:7"], "cuda"),
        "data": (["--domains", "A", "C"], "C"),
    }[case]
    if case == "data":
        base = base[:3] + ["--domains", "A", "C"] + base[6:]
        extra = []
    line = one_error_line(capsys, main(base + extra))
    assert expected in line, line
    assert not run.exists()  # no manifest, split, lock or folder left: the same command may run again


def test_a_schedule_refusal_comes_before_any_data_is_read(tmp_path, capsys, monkeypatch):
    """`ucdir train --root DIR --domains A B --epochs 1` is refused at once, not after the view cache
    of every image is built (it took 29 s on 240 images)."""
    import ucdir_core.training.build as build

    def no_data(*args, **kwargs):
        raise AssertionError("the data was read before the refusal")

    monkeypatch.setattr(build, "load_split_images", no_data)
    root = folder(tmp_path)
    run = tmp_path / "run"
    line = one_error_line(capsys, main(["train", "--root", str(root), "--domains", "A", "B", "--run-dir", str(run),
                                        "--epochs", "1", "--quiet"]))
    assert "cluster_contrastive is weighted 1 but never switches on in 1 epoch(s)" in line
    assert not run.exists()
