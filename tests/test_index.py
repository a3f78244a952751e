"""Gallery indexes (``RUN/index/<name>/``) and retrieval as people use it: written at the end of
training and by ``ucdir index``, in the field's formats, searched exactly as brute force does,
never used when stale, read from a read-only run, exported for use without this package."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import faiss
import numpy as np
import pytest
import torch

from conftest import write_folder
from test_robustness import one_error_line
from ucdir_core.base.io import file_digest
from ucdir_core.cli import main
from ucdir_core.data.images import load_image
from ucdir_core.evaluation import index as gi
from ucdir_core.inference.query import load_query_model
from ucdir_core.training import runs

ROOT = Path(__file__).resolve().parents[1]
AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def train_args(root: Path, run: Path, *domains: str) -> list[str]:
    args = ["train", "--preset", "digits_scratch", "--root", str(root), "--run-dir", str(run), "--epochs", "1",
            "--row", "instance", "--quiet", "--device", "cpu"]
    for kv in ("max_images_per_domain=96", "image_size=16", "resize_size=16", "batch_size=16", "workers=0",
               "eval_ks=1,5"):
        args += ["--set", kv]
    if domains:  # the small folder of :func:`own`
        args += ["--domains", *domains, "--set", "num_clusters=2", "--set", "batch_size=4"]
    return args


@pytest.fixture(scope="module")
def trained(digits_root, tmp_path_factory):
    """A finished one-epoch run on the tiny digits (never modified: tests copy it)."""
    run = tmp_path_factory.mktemp("index") / "run"
    assert main(train_args(digits_root, run)) == 0
    return run


@pytest.fixture
def run_copy(trained, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(trained, dst)
    return dst


@pytest.fixture
def own(tmp_path):
    """A small dataset of this test's own (free to change) and a finished one-epoch run on it."""
    root = write_folder(tmp_path / "data", {"A": {"cat": 6, "dog": 6}, "B": {"cat": 6, "dog": 6}}, size=16)
    run = tmp_path / "own"
    assert main(train_args(root, run, "A", "B")) == 0
    return root, run


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def query_of(root: Path, domain: str, cls: str) -> Path:
    return sorted((Path(root) / domain / cls).glob("*.png"))[0]


def retrieve_json(capsys, *argv) -> tuple[dict | list, str]:
    capsys.readouterr()
    assert main(["retrieve", *map(str, argv), "--json"]) == 0
    captured = capsys.readouterr()
    return json.loads(captured.out), captured.err


def brute_force(gallery: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k rows by cosine, the slow obvious way: numpy's argsort of every score."""
    g = gallery / np.linalg.norm(gallery, axis=1, keepdims=True)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    scores = q @ g.T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(scores, order, axis=1)


def no_dataset_pipeline(monkeypatch):
    """Make building the run's data pipeline, and hashing any file, fail: what a query must not need."""
    import ucdir_core.training.build as build

    def refuse(*a, **k):
        raise AssertionError("the data pipeline was built for a query")

    monkeypatch.setattr(build, "build_parts", refuse)
    monkeypatch.setattr(gi, "file_digest", refuse)


# ----------------------------------------------------------------------------- formats
def test_training_writes_one_index_per_domain_in_the_fields_formats(trained):
    from ucdir_core.inference.loading import load_trained

    cfg = runs.RunFolder(trained).config()
    identity = json.loads((trained / runs.DATASET).read_text())
    emb = load_trained(trained).embedder.test_embeddings()
    for side, domain in enumerate(cfg.domains):
        folder = trained / "index" / domain
        assert sorted(p.name for p in folder.iterdir()) == ["embeddings.npy", "index.faiss", "meta.json"]
        rows = np.load(folder / "embeddings.npy", allow_pickle=False)
        assert rows.dtype == np.float32 and rows.shape == (len(identity[domain]["train"]), cfg.feature_dim)
        np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-5)
        np.testing.assert_allclose(rows, emb[side].numpy(), atol=1e-5)  # the key encoder's, as evaluated
        index = faiss.read_index(str(folder / "index.faiss"))
        assert isinstance(index, faiss.IndexFlatIP) and index.ntotal == rows.shape[0] and index.d == rows.shape[1]
        meta = json.loads((folder / "meta.json").read_text())
        assert meta["checkpoint"] == {"file": "last.pt", "epoch": 0, "digest": file_digest(trained / "last.pt")}
        assert meta["files"] == identity[domain]["train"]  # relative path, bytes, mtime, digest, in row order
        assert meta["domains"] == [domain] * len(rows) and meta["kind"] == "domain" and meta["source"] == domain
        assert meta["dim"] == cfg.feature_dim and meta["count"] == len(rows) and meta["alignment"] is None
        assert meta["faiss"] == "IndexFlatIP" and meta["format"] == gi.FORMAT
        assert "index" not in torch.load(trained / "last.pt", weights_only=True)  # never inside the checkpoint
    assert [p.name for p in (trained / "index").iterdir() if p.name.startswith(".")] == []  # no temporary folders


def test_exact_search_through_the_index_equals_brute_force(trained):
    g = gi.read_index(trained / "index" / "printed", embeddings=True)
    rng = np.random.default_rng(0)
    queries = np.concatenate([rng.normal(size=(5, g.index.d)), g.embeddings[:3] + 0.01]).astype(np.float32)
    found = g.search(gi.unit_rows(queries), 7)
    order, scores = brute_force(g.embeddings, queries, 7)
    assert [[row for row, _ in hits] for hits in found] == order.tolist()
    np.testing.assert_allclose([[s for _, s in hits] for hits in found], scores, atol=1e-5)
    assert len(g.search(gi.unit_rows(queries[:1]), 10_000)[0]) == g.index.ntotal  # k past the gallery: all rows


def test_large_galleries_get_an_hnsw_index_close_to_exact(monkeypatch, tmp_path):
    monkeypatch.setattr(gi, "HNSW_FROM", 200)
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(10, 32))
    emb = gi.unit_rows(centres[rng.integers(10, size=300)] + 0.3 * rng.normal(size=(300, 32)))
    files = []
    for i in range(300):
        (tmp_path / "g").mkdir(exist_ok=True)
        (tmp_path / "g" / f"{i}.png").write_bytes(b"x")
        files.append(str(tmp_path / "g" / f"{i}.png"))
    ck = {"file": "last.pt", "epoch": 0, "digest": "d"}
    meta = gi.gallery_meta("g", "folder", str(tmp_path / "g"), tmp_path / "g", files, ["g"] * 300, 32, ck)
    gi.write_index(tmp_path / "index" / "g", meta, emb)
    g = gi.read_index(tmp_path / "index" / "g")
    assert isinstance(g.index, faiss.IndexHNSWFlat) and g.meta["faiss"].startswith("IndexHNSWFlat(M=32")
    assert g.index.hnsw.efSearch == gi.HNSW_EF_SEARCH  # kept in faiss's file
    order, _ = brute_force(emb, emb[:50], 10)
    found = g.search(emb[:50], 10)
    recall = np.mean([len({r for r, _ in hits} & set(exact)) / 10 for hits, exact in zip(found, order)])
    assert recall >= 0.95


def test_a_failed_write_leaves_the_old_index_and_no_temporary_folder(run_copy, monkeypatch):
    folder = run_copy / "index" / "printed"
    before = snapshot(folder)
    g = gi.read_index(folder, embeddings=True)

    def broken(*a):
        raise OSError("disk full")

    monkeypatch.setattr(gi.faiss, "write_index", broken)
    with pytest.raises(OSError, match="disk full"):
        gi.write_index(folder, g.meta, g.embeddings)
    assert snapshot(folder) == before
    assert sorted(p.name for p in (run_copy / "index").iterdir()) == ["handwritten", "printed"]


# ----------------------------------------------------------------------------- retrieval through the index
def test_retrieve_uses_the_index_without_the_data_pipeline(trained, run_copy, digits_root, capsys, monkeypatch):
    query = query_of(digits_root, "handwritten", "3")
    shutil.rmtree(run_copy / "index")  # a run trained before indexes: the gallery embedded in memory
    slow, note = retrieve_json(capsys, run_copy, query, "--top-k", "5")
    assert "ucdir: note: index printed" in note and "there is none" in note and f"ucdir index {run_copy}" in note
    assert not (run_copy / "index").exists()  # retrieval writes nothing
    no_dataset_pipeline(monkeypatch)
    fast, note = retrieve_json(capsys, trained, query, "--top-k", "5")
    assert note == ""
    assert [h["path"] for h in fast["results"]] == [h["path"] for h in slow["results"]]
    assert [h["score"] for h in fast["results"]] == pytest.approx([h["score"] for h in slow["results"]], abs=1e-5)
    assert fast["gallery_domain"] == "printed" and fast["query_domain"] == "handwritten"
    rows = gi.read_index(trained / "index" / "printed", embeddings=True)
    q = load_query_model(trained).embed_images([load_image(query)])
    order, scores = brute_force(rows.embeddings, q, 5)
    assert [h["path"] for h in fast["results"]] == [rows.paths[i] for i in order[0]]


def test_retrieve_text_output_keeps_its_shape(trained, digits_root, capsys):
    query = query_of(digits_root, "printed", "7")
    capsys.readouterr()
    assert main(["retrieve", str(trained), str(query), "--top-k", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"query {query} (from printed); searching handwritten"
    assert lines[1].split() == ["rank", "score", "path"]
    assert [line.split()[0] for line in lines[2:5]] == ["1", "2", "3"]
    assert all(len(line.split()) == 3 and "/handwritten/" in line for line in lines[2:5])
    assert lines[5:] == ["(score: cosine similarity of the embeddings, from -1 to 1; higher is closer)"]


def test_a_folder_of_queries_is_one_call(trained, digits_root, capsys, tmp_path):
    queries = tmp_path / "q"
    queries.mkdir()
    for cls in "0123":
        shutil.copy(query_of(digits_root, "handwritten", cls), queries / f"{cls}.png")
    out, err = retrieve_json(capsys, trained, queries, "--top-k", "2", "--gallery-domain", "printed")
    assert len(out) == 4 and err == "" and all(len(r["results"]) == 2 for r in out)
    assert all(r["query_domain"] is None and r["gallery_domain"] == "printed" for r in out)


# ----------------------------------------------------------------------------- freshness
def test_a_new_checkpoint_makes_the_index_stale_until_rebuilt(run_copy, digits_root, capsys):
    state = torch.load(run_copy / "last.pt", weights_only=True)
    for k, v in state["model"].items():
        if k.startswith("encoder_k.head") and v.is_floating_point():
            v.mul_(-1.5)  # another key encoder
    torch.save(state, run_copy / "last.pt")
    query = query_of(digits_root, "handwritten", "5")
    stale, note = retrieve_json(capsys, run_copy, query, "--top-k", "4")
    assert "index printed" in note and "made from another last.pt (epoch 0)" in note
    capsys.readouterr()
    assert main(["index", str(run_copy)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and all(": written (" in line for line in out)
    fresh, note = retrieve_json(capsys, run_copy, query, "--top-k", "4")
    assert note == "" and fresh == stale
    meta = json.loads((run_copy / "index" / "printed" / "meta.json").read_text())
    assert meta["checkpoint"]["digest"] == file_digest(run_copy / "last.pt")
    capsys.readouterr()
    assert main(["index", str(run_copy)]) == 0  # fresh: left alone
    assert all(": up to date (" in line for line in capsys.readouterr().out.splitlines())


def test_a_changed_or_removed_gallery_file_makes_the_index_stale_and_changed_data_is_refused(own, capsys):
    root, run = own
    query = query_of(root, "A", "cat")
    target = sorted((root / "B" / "dog").glob("*.png"))[2]
    original = target.read_bytes()
    assert json.loads((run / "index" / "B" / "meta.json").read_text())["root"] == str(root)
    os.utime(target, ns=(1, 1))  # new time, same bytes: still fresh (the digest decides)
    fresh, note = retrieve_json(capsys, run, query, "--top-k", "3")
    assert note == ""
    for change, reason in ((lambda: target.write_bytes(query_of(root, "B", "cat").read_bytes()), "changed"),
                           (target.unlink, "is gone")):
        change()
        code = main(["retrieve", str(run), str(query), "--top-k", "3"])
        err = capsys.readouterr().err
        assert code == 2 and "Traceback" not in err
        assert f"ucdir: note: index B of {run} not used (B/dog/002.png {reason})" in err
        errors = [line for line in err.splitlines() if line.startswith("ucdir: error:")]
        assert len(errors) == 1 and "dataset changed" in errors[0] and "B/dog/002.png" in errors[0]
        target.write_bytes(original)
    again, note = retrieve_json(capsys, run, query, "--top-k", "3")  # put back: the index answers again
    assert note == "" and again == fresh


# ----------------------------------------------------------------------------- read-only runs
def test_a_read_only_run_answers_from_its_index_and_writes_nothing(run_copy, digits_root, capsys, monkeypatch,
                                                                   tmp_path):
    before = snapshot(run_copy)
    if not AS_ROOT:  # root writes through any permission bits: there the snapshot check stands alone
        for p in [run_copy, *run_copy.rglob("*")]:
            p.chmod(p.stat().st_mode & ~0o222)
    try:
        no_dataset_pipeline(monkeypatch)
        out, note = retrieve_json(capsys, run_copy, query_of(digits_root, "printed", "1"), "--top-k", "3")
        assert note == "" and out["gallery_domain"] == "handwritten" and len(out["results"]) == 3
        monkeypatch.undo()
        capsys.readouterr()
        assert main(["index", str(run_copy), "--export", str(tmp_path / "export")]) == 0
        assert all(": up to date (" in line for line in capsys.readouterr().out.splitlines()[:2])
    finally:
        for p in [run_copy, *run_copy.rglob("*")]:
            p.chmod(p.stat().st_mode | 0o200)
    assert snapshot(run_copy) == before
    assert (tmp_path / "export" / "embeddings.npy").exists()


def test_a_read_only_run_without_an_index_still_answers(run_copy, digits_root, capsys):
    shutil.rmtree(run_copy / "index")
    before = snapshot(run_copy)
    if not AS_ROOT:
        for p in [run_copy, *run_copy.rglob("*")]:
            p.chmod(p.stat().st_mode & ~0o222)
    try:
        out, note = retrieve_json(capsys, run_copy, query_of(digits_root, "printed", "1"), "--top-k", "3")
        assert "there is none" in note and len(out["results"]) == 3
        if not AS_ROOT:
            line = one_error_line(capsys, main(["index", str(run_copy)]))
            assert "Permission denied" in line
    finally:
        for p in [run_copy, *run_copy.rglob("*")]:
            p.chmod(p.stat().st_mode | 0o200)
    assert snapshot(run_copy) == before


# ----------------------------------------------------------------------------- export and other galleries
def test_export_is_numpy_and_json_only(trained, tmp_path, capsys):
    capsys.readouterr()
    assert main(["index", str(trained), "--export", str(tmp_path / "out")]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("exported ")
    emb = np.load(tmp_path / "out" / "embeddings.npy", allow_pickle=False)
    items = json.loads((tmp_path / "out" / "items.json").read_text())
    assert emb.dtype == np.float32 and emb.ndim == 2 and len(items) == emb.shape[0]
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert all(set(e) == {"path", "domain"} and Path(e["path"]).is_absolute() and Path(e["path"]).is_file()
               for e in items)
    a = np.load(trained / "index" / "handwritten" / "embeddings.npy")
    assert [e["domain"] for e in items] == ["handwritten"] * len(a) + ["printed"] * (len(items) - len(a))
    np.testing.assert_array_equal(emb[:len(a)], a)


def test_index_of_a_third_folder_is_searched_by_name(run_copy, digits_root, tmp_path, capsys):
    gallery = write_folder(tmp_path / "third", {"shop": {"x": 4, "y": 4}}, size=16) / "shop"
    (gallery / "y" / "broken.png").write_text("not an image")
    capsys.readouterr()
    assert main(["index", str(run_copy), "--gallery", str(gallery)]) == 0
    out = capsys.readouterr()
    assert f"{run_copy / 'index' / 'shop'}: written (8 images of {gallery}" in out.out
    assert "1 unreadable files skipped" in out.out and "broken.png" in out.err
    meta = json.loads((run_copy / "index" / "shop" / "meta.json").read_text())
    assert meta["kind"] == "folder" and meta["root"] == str(gallery) and meta["skipped"] == ["y/broken.png"]
    assert [e[0] for e in meta["files"]][:2] == ["x/000.png", "x/001.png"] and meta["domains"] == ["shop"] * 8
    res, note = retrieve_json(capsys, run_copy, query_of(digits_root, "printed", "2"), "--index", "shop",
                              "--top-k", "20")
    assert note == "" and res["gallery_domain"] == "shop" and len(res["results"]) == 8
    assert all(h["path"].startswith(str(gallery)) for h in res["results"])
    capsys.readouterr()
    assert main(["index", str(run_copy), "--gallery", str(gallery)]) == 0
    assert ": up to date (" in capsys.readouterr().out
    shutil.copy(gallery / "x" / "000.png", gallery / "x" / "new.png")  # a new image: `ucdir index` sees it
    res2, note = retrieve_json(capsys, run_copy, query_of(digits_root, "printed", "2"), "--index", "shop",
                               "--top-k", "20")
    assert note == "" and len(res2["results"]) == 8  # retrieve reads the index's own list
    assert main(["index", str(run_copy), "--gallery", str(gallery)]) == 0
    assert "written (9 images" in capsys.readouterr().out
    (gallery / "x" / "001.png").write_bytes((gallery / "y" / "000.png").read_bytes())  # changed: rebuilt in memory
    res3, note = retrieve_json(capsys, run_copy, query_of(digits_root, "printed", "2"), "--index", "shop",
                               "--top-k", "20")
    assert "index shop" in note and "x/001.png changed" in note and len(res3["results"]) == 9
    assert f"`ucdir index {run_copy} --gallery {gallery} --name shop` writes a fresh index" in note


@pytest.mark.parametrize("argv, words", [
    (["retrieve", "{run}", "{query}", "--index", "nope"], "ucdir index"),
    (["index", "{run}", "--name", "x"], "--gallery"),
    (["index", "{run}", "--gallery", "{run}/missing"], "gallery folder not found"),
    (["index", "{run}", "--gallery", "{empty}"], "holds no image files"),
    (["index", "{run}", "--gallery", "{empty}", "--name", "printed"], "domain printed's index"),
    (["index", "{run}", "--gallery", "{empty}", "--name", ".hidden"], "index name"),
    (["index", "{run}", "--export", "{file}"], "not a folder"),
])
def test_index_and_retrieve_errors_are_one_line(argv, words, trained, digits_root, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "file").write_text("x")
    subs = {"run": str(trained), "query": str(query_of(digits_root, "printed", "1")), "empty": str(tmp_path / "empty"),
            "file": str(tmp_path / "file")}
    before = snapshot(trained)
    line = one_error_line(capsys, main([a.format(**subs) for a in argv]))
    assert words in line
    assert snapshot(trained) == before


def test_best_checkpoint_has_its_own_index(run_copy, digits_root, capsys):
    assert main(["index", str(run_copy), "--which", "best"]) == 0
    meta = json.loads((run_copy / "index" / "printed@best" / "meta.json").read_text())
    assert meta["checkpoint"]["file"] == "best.pt" and meta["checkpoint"]["digest"] == file_digest(run_copy / "best.pt")
    out, note = retrieve_json(capsys, run_copy, query_of(digits_root, "handwritten", "4"), "--which", "best")
    assert note == "" and out["gallery_domain"] == "printed"


def test_overwrite_and_a_killed_writers_temporary_folders_are_cleared(run_copy, capsys):
    (run_copy / "index" / ".printed.0000abcd.tmp").mkdir()
    (run_copy / "last.pt").touch()  # same bytes: the index is still fresh, nothing to write
    assert main(["index", str(run_copy)]) == 0
    assert (run_copy / "index" / ".printed.0000abcd.tmp").exists()
    runs.RunFolder(run_copy).remove_temp_files()  # what a writer does under the lock
    assert not (run_copy / "index" / ".printed.0000abcd.tmp").exists()
    runs.RunFolder(run_copy).clear()
    assert not (run_copy / "index").exists()


# ----------------------------------------------------------------------------- a fast command line
def test_help_and_argument_errors_import_no_torch():
    code = ("import sys\nfrom ucdir_core.cli import main\n"
            "for argv in (['--help'], ['retrieve', '--top-k'], ['index', '--help'], ['train', '--help']):\n"
            "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
            "heavy = [m for m in ('torch', 'torchvision', 'faiss', 'scipy', 'timm', 'PIL') if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    assert "epochs" in done.stdout  # train --help still lists the preset's keys
