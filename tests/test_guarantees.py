"""What holds under bad files, interruptions and misuse (docs/guarantees.md).

1. Nothing runs from a file: checkpoints and MoCo weights load with ``weights_only=True``.
   - test_checkpoints_hold_only_tensors_and_plain_values
   - test_crafted_checkpoint_runs_nothing_and_names_the_file
   - test_crafted_moco_checkpoint_runs_nothing
   - test_moco_release_format_still_loads
2. Nothing escapes an archive.
   - test_unsafe_archive_is_refused_and_writes_nothing (../, absolute, symlink, device; tar and zip)
   - test_prepare_refuses_an_unsafe_archive_in_one_line
   - test_tar_extraction_drops_setuid_bits
   - test_lay_out_never_follows_symlinks
   - test_cached_archive_that_does_not_extract_is_fetched_again
   - test_cached_archive_that_fails_its_hash_is_fetched_again
   - test_download_failures_are_one_line (unreachable mirror, 404, root that is a file)
3. A run folder is never lost, overwritten or shared.
   - test_train_refuses_a_folder_holding_a_run_unless_overwrite
   - test_resume_refuses_a_checkpoint_of_another_config
   - test_second_writer_is_refused_naming_the_holder
   - test_kill_between_checkpoint_and_history_row_loses_nothing
   - test_corrupt_last_checkpoint_is_one_line_and_resume_falls_back
   - test_checkpoint_rotation_survives_a_kill_between_renames
   - test_torn_history_line_is_one_line_and_resume_repairs_it
   - test_stale_temp_files_removed_and_umask_respected
   - test_changed_dataset_is_one_line
4. Reading commands write nothing.
   - test_evaluate_and_retrieve_leave_the_run_folder_untouched
5. One line, non-zero exit, no traceback.
   - test_bad_options_are_one_line (parametrized)
   - test_digits_with_zero_per_class_writes_nothing
   - test_paths_that_are_files_are_one_line
   - test_bad_query_images_are_one_line
   - test_decompression_bomb_in_a_dataset_is_listed_and_skipped
   - test_unreadable_paths_are_one_line
6. Caches and checks that cannot be fooled.
   - test_view_cache_follows_file_content
   - test_data_check_counts_a_symlinked_domain_once
   - test_history_header_records_threads_and_workers
"""

import http.server
import io
import json
import os
import shutil
import socket
import stat
import struct
import tarfile
import threading
import zipfile
import zlib
from functools import partial
from pathlib import Path

import pytest
import torch

from conftest import write_folder
from ucdir_core.base.errors import DataError
from ucdir_core.cli import main
from ucdir_core.config.presets import get_preset
from ucdir_core.config.rows import row_config
from ucdir_core.data import datasets
from ucdir_core.training import runs
from ucdir_core.training.build import train

AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


# ----------------------------------------------------------------------------- helpers and fixtures
def quiet(_msg):
    pass


def strip(history):
    return [{k: v for k, v in row.items() if k != "wall_seconds"} for row in history]


def one_error_line(capsys, code):
    """The command's exit status is 2 and stderr holds exactly one ``ucdir: error:`` line, no traceback."""
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.startswith("ucdir: error:")]
    assert len(lines) == 1, err
    return lines[0]


def snapshot(folder: Path) -> dict:
    """Every file under ``folder``: its bytes and its modification time."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


class Evil:
    """Unpickling this creates the folder ``marker``: a stand-in for running any command."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def bomb_png(path: Path, side: int = 60000) -> Path:
    """A few hundred bytes of PNG claiming ``side`` x ``side`` pixels (a decompression bomb)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="module")
def small_root(tmp_path_factory):
    return write_folder(tmp_path_factory.mktemp("data") / "root",
                        {"a": {"x": 8, "y": 8, "z": 8}, "b": {"x": 8, "y": 8, "z": 8}}, size=16)


def small_config(root):
    return get_preset("digits_scratch").replace(
        root=str(root), domains=("a", "b"), image_size=16, resize_size=16, batch_size=8, epochs=2, clustering_start=1,
        cluster_contrastive_ramp_after=0, cluster_contrastive_ramp_end=1, cluster_contrastive_weight_initial=0.5, self_entropy_start=1, distance_of_distance_start=1, num_clusters=(3,), kmeans_restarts=1,
        workers=0, eval_ks=(1,), device="cpu", eval_batch_size=64)


@pytest.fixture(scope="module")
def cfg(small_root):
    return small_config(small_root)


@pytest.fixture(scope="module")
def trained(cfg, tmp_path_factory):
    """A finished two-epoch run (never modified: tests copy it)."""
    run = tmp_path_factory.mktemp("trained") / "run"
    train(cfg, run, progress=False, log=quiet)
    return run


@pytest.fixture
def run_copy(trained, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(trained, dst)
    return dst


def train_args(cfg, run_dir, *extra):
    args = ["train", "--preset", "digits_scratch", "--root", cfg.root, "--domains", "a", "b", "--run-dir",
            str(run_dir), "--quiet", "--device", "cpu", "--epochs", str(cfg.epochs)]
    flat = cfg.flat()
    for key in ("image_size", "resize_size", "batch_size", "clustering_start", "cluster_contrastive_ramp_after",
                "cluster_contrastive_ramp_end", "cluster_contrastive_weight_initial", "cluster_contrastive_weight",
                "self_entropy_start", "self_entropy_weight", "distance_of_distance_start", "distance_of_distance_weight",
                "num_clusters", "kmeans_restarts", "workers", "eval_ks", "eval_batch_size"):
        value = flat[key]
        value = tuple(value) if isinstance(value, list) else value
        args += ["--set", f"{key}={','.join(map(str, value)) if isinstance(value, tuple) else value}"]
    return args + list(extra)


# ----------------------------------------------------------------------------- 1. nothing runs from a file
def test_checkpoints_hold_only_tensors_and_plain_values(trained):
    for name in (runs.LAST, runs.PREV, runs.BEST):
        state = torch.load(trained / name, weights_only=True)
        assert "model" in state and state["config"]["seed"] == 0
    last = torch.load(trained / runs.LAST, weights_only=True)
    assert [r["epoch"] for r in last["history"]] == [0, 1]
    assert isinstance(last["rng"]["python"]["state"], list) and last["rng"]["numpy"]["keys"].shape == (624,)


def test_crafted_checkpoint_runs_nothing_and_names_the_file(cfg, run_copy, tmp_path, capsys):
    marker = tmp_path / "ran"
    torch.save({"epoch": 1, "model": Evil(marker)}, run_copy / runs.LAST)
    torch.save({"epoch": 1, "model": Evil(marker)}, run_copy / runs.BEST)
    (run_copy / runs.PREV).unlink()  # no fallback: resume must stop too
    query = next((Path(cfg.root) / "a" / "x").glob("*.png"))
    for argv in (["evaluate", str(run_copy)], ["evaluate", str(run_copy), "--which", "best"],
                 ["retrieve", str(run_copy), str(query)]):
        line = one_error_line(capsys, main(argv))
        assert (runs.BEST if "best" in argv else runs.LAST) in line and "nothing in it was run" in line
    with pytest.raises(runs.RunError, match="last.pt"):
        train(cfg, run_copy, resume=True, progress=False, log=quiet)
    assert not marker.exists()


@pytest.fixture(scope="module")
def moco_net():
    import torchvision

    torch.manual_seed(0)
    return torchvision.models.resnet50(weights=None)


def test_crafted_moco_checkpoint_runs_nothing(moco_net, tmp_path):
    from ucdir_core.models.backbones import resnet50_moco

    marker = tmp_path / "ran"
    state = {f"module.encoder_q.{k}": v for k, v in list(moco_net.state_dict().items())[:3]}
    state["module.encoder_q.fc.0.weight"] = Evil(marker)
    torch.save({"epoch": 800, "arch": "resnet50", "state_dict": state}, tmp_path / "evil.pth.tar")
    with pytest.raises(runs.RunError, match="evil.pth.tar"):
        resnet50_moco(tmp_path / "evil.pth.tar")
    assert not marker.exists()


def test_moco_release_format_still_loads(moco_net, tmp_path):
    from ucdir_core.models.backbones import resnet50_moco

    state = {f"module.encoder_q.{k}": v for k, v in moco_net.state_dict().items() if not k.startswith("fc.")}
    state["module.encoder_q.fc.0.weight"] = torch.zeros(8, 8)  # MoCo v2's MLP head, dropped
    state["module.encoder_k.conv1.weight"] = torch.zeros(64, 3, 7, 7)
    w = torch.nn.Parameter(torch.zeros(3))
    opt = torch.optim.SGD([w], lr=0.03, momentum=0.9, weight_decay=1e-4)
    w.grad = torch.ones(3)
    opt.step()  # an optimizer state with a momentum buffer, as in MoCo's files
    torch.save({"epoch": 800, "arch": "resnet50", "state_dict": state, "optimizer": opt.state_dict()},
               tmp_path / "moco_v2_800ep_pretrain.pth.tar")
    bb = resnet50_moco(tmp_path / "moco_v2_800ep_pretrain.pth.tar")
    torch.testing.assert_close(bb.module.layer4[2].bn3.running_var, moco_net.layer4[2].bn3.running_var)


# ----------------------------------------------------------------------------- 2. nothing escapes an archive
def _tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes]]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for info, data in members:
            info.size = len(data) if info.isfile() else 0
            tf.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return path


def _tar_info(name, kind=tarfile.REGTYPE, link="", mode=0o644):
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, link, mode
    return info


def _zip(path: Path, members: list[tuple[zipfile.ZipInfo, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for info, data in members:
            zf.writestr(info, data)
    return path


def _zip_link(name, target):
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info, target.encode()


UNSAFE = {
    "tar-dotdot": lambda p: _tar(p / "a.tar.gz", [(_tar_info("d/../../evil.txt"), b"x")]),
    "tar-absolute": lambda p: _tar(p / "a.tar.gz", [(_tar_info(str(p / "abs-evil.txt")), b"x")]),
    "tar-symlink": lambda p: _tar(p / "a.tar.gz", [(_tar_info("d/c/1.png", tarfile.SYMTYPE, "/etc/passwd"), b"")]),
    "tar-device": lambda p: _tar(p / "a.tar.gz", [(_tar_info("d/c/null", tarfile.CHRTYPE), b"")]),
    "zip-dotdot": lambda p: _zip(p / "a.zip", [(zipfile.ZipInfo("d/../../evil.txt"), b"x")]),
    "zip-absolute": lambda p: _zip(p / "a.zip", [(zipfile.ZipInfo("/abs-evil.txt"), b"x")]),
    "zip-symlink": lambda p: _zip(p / "a.zip", [_zip_link("d/c/1.png", "/etc/passwd")]),
}


@pytest.mark.parametrize("case", sorted(UNSAFE))
def test_unsafe_archive_is_refused_and_writes_nothing(case, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    archive = UNSAFE[case](src)
    into = tmp_path / "deep" / "out" / "x.d"
    with pytest.raises(datasets.UnsafeArchive, match=archive.name):
        datasets.extract(archive, into)
    assert not into.exists() and not list(tmp_path.rglob("evil.txt")) and not (src / "abs-evil.txt").exists()


def test_tar_extraction_drops_setuid_bits(tmp_path):
    archive = _tar(tmp_path / "a.tar.gz", [(_tar_info("d/c/run.png", mode=0o4777), b"x")])
    out = datasets.extract(archive, tmp_path / "out")
    mode = (out / "d" / "c" / "run.png").stat().st_mode
    assert not mode & (stat.S_ISUID | stat.S_ISGID) and not mode & stat.S_IWOTH


def test_lay_out_never_follows_symlinks(tmp_path):
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"not yours")
    tree = write_folder(tmp_path / "tree", {"photo": {"dog": 2}})
    (tree / "photo" / "dog" / "link.png").symlink_to(secret)
    (tree / "photo" / "horse").symlink_to(tmp_path)  # a class folder that is a link
    bench = datasets.Benchmark("pacs", ("photo",), ("dog", "horse"))
    assert datasets.lay_out(bench, tree, tmp_path / "root") == {"photo": 2}
    assert not (tmp_path / "root" / "photo" / "dog" / "link.png").exists()
    assert not (tmp_path / "root" / "photo" / "horse").exists()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    import pooch

    # pooch's log handler keeps the stderr of the test that first used it, closed by now
    monkeypatch.setattr(pooch.get_logger(), "disabled", True)
    served = tmp_path / "served"
    served.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(QuietHandler, directory=str(served)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield served, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_prepare_refuses_an_unsafe_archive_in_one_line(mirror, tmp_path, capsys):
    served, url = mirror
    _tar(served / "domain_adaptation_images.tar.gz",
         [(_tar_info("amazon/images/bike/1.jpg"), b"x"), (_tar_info("../../../../evil.txt"), b"x")])
    code = main(["data", "prepare", "office31", "--root", str(tmp_path / "o31"), "--mirror", url])
    assert "refusing the archive" in one_error_line(capsys, code)
    assert not list(tmp_path.rglob("evil.txt"))


def _pacs_zip(tmp_path, path):
    src = write_folder(tmp_path / "pacs-src" / "kfold", {"photo": {"dog": 2}, "sketch": {"dog": 3}}, size=8)
    with zipfile.ZipFile(path, "w") as zf:
        for p in sorted(src.rglob("*.png")):
            zf.write(p, p.relative_to(src.parent))
    return path


def test_cached_archive_that_does_not_extract_is_fetched_again(mirror, tmp_path):
    served, url = mirror
    good = _pacs_zip(tmp_path, served / "PACS.zip")
    root = tmp_path / "out"
    (root / ".archives").mkdir(parents=True)
    (root / ".archives" / "PACS.zip").write_bytes(good.read_bytes()[:100])  # a broken cached copy
    bench = datasets.Benchmark("pacs", ("photo", "sketch"), ("dog",), (datasets.Archive("PACS.zip", "unused"),))
    logged = []
    report = datasets.prepare(bench, root, mirror=url, progress=False, log=logged.append)
    assert report["images"] == {"photo": 2, "sketch": 3}
    assert (root / ".archives" / "PACS.zip").read_bytes() == good.read_bytes()
    assert any("fetching it again" in m for m in logged)


def test_cached_archive_that_fails_its_hash_is_fetched_again(mirror, tmp_path):
    served, url = mirror
    good = _pacs_zip(tmp_path, served / "PACS.zip")
    digest = datasets.sha256_of(good)
    root = tmp_path / "out"
    (root / ".archives").mkdir(parents=True)
    (root / ".archives" / "PACS.zip").write_bytes(b"stale")
    bench = datasets.Benchmark("pacs", ("photo",), ("dog",), (datasets.Archive("PACS.zip", "unused", digest),))
    assert datasets.prepare(bench, root, mirror=url, progress=False, log=quiet)["images"] == {"photo": 2}


def test_download_failures_are_one_line(mirror, tmp_path, capsys):
    _, url = mirror
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    line = one_error_line(capsys, main(["data", "prepare", "pacs", "--root", str(tmp_path / "a"), "--mirror", closed]))
    assert "cannot download PACS.zip" in line and "reachable" in line
    line = one_error_line(capsys, main(["data", "prepare", "pacs", "--root", str(tmp_path / "b"), "--mirror", url]))
    assert "cannot download PACS.zip" in line and "HTTP 404" in line
    (tmp_path / "file").write_text("x")
    line = one_error_line(capsys, main(["data", "prepare", "pacs", "--root", str(tmp_path / "file"), "--mirror", url]))
    assert "not a folder" in line


# ----------------------------------------------------------------------------- 3. run folders
def test_train_refuses_a_folder_holding_a_run_unless_overwrite(cfg, run_copy, capsys):
    before = snapshot(run_copy)
    line = one_error_line(capsys, main(train_args(cfg, run_copy)))
    assert "already holds a run" in line and "--resume" in line and "--overwrite" in line
    after = snapshot(run_copy)
    assert runs.LOCK not in after and after == before  # the lock is gone with the writer that took it
    (run_copy / "split.json").write_text("{}")  # the old run's files go, whatever they hold
    assert main(train_args(row_config(cfg.replace(epochs=1), "instance"), run_copy, "--overwrite")) == 0
    assert [r["epoch"] for r in runs.RunFolder(run_copy).history()] == [0]
    assert not (run_copy / "split.json").exists() and not (run_copy / runs.PREV).exists()


def test_resume_refuses_a_checkpoint_of_another_config(cfg, run_copy):
    config = json.loads((run_copy / runs.CONFIG).read_text())
    config["seed"] = 1  # e.g. a restart under another seed, killed before its first checkpoint
    (run_copy / runs.CONFIG).write_text(json.dumps(config))
    with pytest.raises(runs.RunError, match="another config.*seed"):
        train(cfg.replace(seed=1), run_copy, resume=True, progress=False, log=quiet)


def test_second_writer_is_refused_naming_the_holder(cfg, tmp_path, capsys):
    run = runs.RunFolder(tmp_path / "run")
    with run.lock():  # a first writer holds the folder
        line = one_error_line(capsys, main(train_args(cfg, run.path)))
        assert f"pid {os.getpid()}" in line and "in use" in line
        with pytest.raises(runs.RunError, match="in use"):
            train(cfg, run.path, resume=True, progress=False, log=quiet)
    assert not run.file(runs.HISTORY).exists()


def test_kill_between_checkpoint_and_history_row_loses_nothing(cfg, trained, tmp_path, monkeypatch):
    original = runs.RunFolder.append_history

    def killed(self, row):
        if row["epoch"] == 1:  # last.pt of epoch 1 is written; its history row is not
            raise KeyboardInterrupt
        original(self, row)

    monkeypatch.setattr(runs.RunFolder, "append_history", killed)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "run", progress=False, log=quiet)
    monkeypatch.setattr(runs.RunFolder, "append_history", original)
    resumed = train(cfg, tmp_path / "run", resume=True, progress=False, log=quiet)
    assert strip(resumed) == strip(runs.RunFolder(trained).history())


def test_corrupt_last_checkpoint_is_one_line_and_resume_falls_back(cfg, trained, run_copy, capsys):
    data = (run_copy / runs.LAST).read_bytes()
    (run_copy / runs.LAST).write_bytes(data[: len(data) // 2])  # truncated
    line = one_error_line(capsys, main(["evaluate", str(run_copy)]))
    assert str(run_copy / runs.LAST) in line
    logged = []
    resumed = train(cfg, run_copy, resume=True, progress=False, log=logged.append)  # from prev.pt: epoch 1 again
    assert any("falling back to prev.pt" in m for m in logged)
    assert strip(resumed) == strip(runs.RunFolder(trained).history())
    assert (run_copy / "last.pt.corrupt").exists()
    assert torch.load(run_copy / runs.LAST, weights_only=True)["epoch"] == 1  # the last epoch done (0-based)


def test_checkpoint_rotation_survives_a_kill_between_renames(tmp_path):
    run = runs.RunFolder(tmp_path / "run")
    run.save_last({"epoch": 1})
    run.save_last({"epoch": 2})
    first = {"epoch": 1, "checkpoint_format": runs.CHECKPOINT_FORMAT}
    assert torch.load(run.file(runs.PREV), weights_only=True) == first
    run.file(runs.LAST).unlink()  # killed after last.pt became prev.pt, before the new last.pt
    state, path = run.load_last(quiet)
    assert state == first and path.name == runs.PREV


def test_torn_history_line_is_one_line_and_resume_repairs_it(cfg, run_copy):
    history = run_copy / runs.HISTORY
    good = history.read_text()
    history.write_text(good + '{"epoch": 2, "lr": 0.0')  # a line torn by a kill
    with pytest.raises(runs.RunError, match=r"history.jsonl: line 4"):
        runs.RunFolder(run_copy).history()
    assert len(train(cfg, run_copy, resume=True, progress=False, log=quiet)) == 2
    assert history.read_text() == good


def test_stale_temp_files_removed_and_umask_respected(cfg, run_copy):
    stale = run_copy / "last.pt.1a2b3c4d.tmp"
    stale.write_bytes(b"half a checkpoint")
    mine = run_copy / "notes.tmp"  # not a run file: left alone
    mine.write_text("mine")
    train(cfg, run_copy, resume=True, progress=False, log=quiet)
    assert not stale.exists() and mine.exists()
    old = os.umask(0o002)
    try:
        runs.atomic_write_bytes(run_copy / "x.json", b"{}")
        runs.atomic_torch_save({"a": 1}, run_copy / "x.pt")
    finally:
        os.umask(old)
    assert stat.S_IMODE((run_copy / "x.json").stat().st_mode) == 0o664
    assert stat.S_IMODE((run_copy / "x.pt").stat().st_mode) == 0o664


def test_changed_dataset_is_one_line(small_root, tmp_path, capsys):
    root = tmp_path / "root"
    shutil.copytree(small_root, root)
    cfg = row_config(small_config(root).replace(epochs=1), "instance")
    train(cfg, tmp_path / "run", progress=False, log=quiet)
    for i in range(2):
        shutil.copy(root / "a" / "x" / "000.png", root / "a" / "x" / f"new{i}.png")
    line = one_error_line(capsys, main(["evaluate", str(tmp_path / "run")]))
    assert "dataset changed" in line and "domain a had 24 training images, now 26" in line
    with pytest.raises(runs.RunError, match="dataset changed"):
        train(cfg, tmp_path / "run", resume=True, progress=False, log=quiet)


# ----------------------------------------------------------------------------- 4. reading commands write nothing
def test_evaluate_and_retrieve_leave_the_run_folder_untouched(cfg, run_copy, capsys):
    before = snapshot(run_copy)
    if not AS_ROOT:  # root writes through any permission bits: there the byte-and-mtime check stands alone
        for p in [run_copy, *run_copy.rglob("*")]:
            p.chmod(p.stat().st_mode & ~0o222)
    try:
        query = next((Path(cfg.root) / "a" / "y").glob("*.png"))
        assert main(["evaluate", str(run_copy)]) == 0
        assert main(["evaluate", str(run_copy), "--which", "best"]) == 0
        assert main(["retrieve", str(run_copy), str(query), "--top-k", "3", "--json"]) == 0
    finally:
        for p in [run_copy, *run_copy.rglob("*")]:
            p.chmod(p.stat().st_mode | 0o200)
    assert "Traceback" not in capsys.readouterr().err
    assert snapshot(run_copy) == before


# ----------------------------------------------------------------------------- 5. one line, no traceback
BAD_TRAIN_OPTIONS = {
    "eval_every=0": (["--set", "eval_every=0"], "eval_every"),
    "empty eval_ks": (["--set", "eval_ks="], "eval_ks"),
    "image_size=0": (["--set", "image_size=0"], "image_size"),
    "device tpu": (["--device", "tpu"], "device"),
    "epochs 0": (["--epochs", "0"], "epochs"),
    "epochs -3": (["--epochs", "-3"], "epochs"),
    "epochs=abc": (["--set", "epochs=abc"], "epochs"),
}


@pytest.mark.parametrize("case", sorted(BAD_TRAIN_OPTIONS))
def test_bad_options_are_one_line(case, small_root, tmp_path, capsys):
    extra, key = BAD_TRAIN_OPTIONS[case]
    argv = ["train", "--root", str(small_root), "--domains", "a", "b", "--run-dir", str(tmp_path / "run"), "--quiet",
            *extra]
    assert key in one_error_line(capsys, main(argv))
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("top_k", ["0", "-2"])
def test_bad_top_k_is_one_line(top_k, tmp_path, capsys):
    line = one_error_line(capsys, main(["retrieve", str(tmp_path), str(tmp_path / "q.png"), "--top-k", top_k]))
    assert "--top-k" in line


def test_digits_with_zero_per_class_writes_nothing(tmp_path, capsys):
    assert "per" in one_error_line(capsys, main(["data", "digits", str(tmp_path / "d"), "--per-class", "0"]))
    assert not (tmp_path / "d").exists()


def test_paths_that_are_files_are_one_line(cfg, tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    assert "not a folder" in one_error_line(capsys, main(train_args(cfg, f)))
    assert "not a folder" in one_error_line(capsys, main(["data", "digits", str(f), "--per-class", "1"]))
    assert "not a folder" in one_error_line(capsys, main(["evaluate", str(f)]))
    assert f.read_text() == "x"


def test_bad_query_images_are_one_line(trained, tmp_path, capsys):
    text = tmp_path / "q.png"
    text.write_text("not an image")
    line = one_error_line(capsys, main(["retrieve", str(trained), str(text)]))
    assert "q.png is not a readable image" in line
    line = one_error_line(capsys, main(["retrieve", str(trained), str(bomb_png(tmp_path / "bomb.png"))]))
    assert "bomb.png is not a readable image" in line


def test_decompression_bomb_in_a_dataset_is_listed_and_skipped(small_root, tmp_path, capsys):
    from ucdir_core.data.splits import load_split_images

    root = tmp_path / "root"
    shutil.copytree(small_root, root)
    bomb = bomb_png(root / "a" / "x" / "bomb.png")
    assert main(["data", "check", str(root), "--workers", "1", "--json", str(tmp_path / "m.json")]) == 0
    assert "too_large: 1 files" in capsys.readouterr().out
    assert json.loads((tmp_path / "m.json").read_text())["problems"]["too_large"] == [str(bomb)]
    images = load_split_images(small_config(root), tmp_path / "run", log=quiet)
    assert str(bomb) not in images.a.train.paths and len(images.a.train) == 24


def test_unreadable_paths_are_one_line(trained, tmp_path, capsys, monkeypatch):
    import ucdir_core.cli as E

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / "locked"))

    monkeypatch.setattr(E, "evaluate_run", denied)  # what any unreadable file ends in
    assert "Permission denied" in one_error_line(capsys, main(["evaluate", str(trained)]))
    monkeypatch.undo()
    if AS_ROOT:
        return  # root reads through permission bits
    locked = write_folder(tmp_path / "locked", {"a": {"x": 1}, "b": {"x": 1}})
    (locked / "a").chmod(0)
    try:
        assert "ermission denied" in one_error_line(capsys, main(["data", "check", str(locked)]))
    finally:
        (locked / "a").chmod(0o755)


# ----------------------------------------------------------------------------- 6. caches and checks
def test_view_cache_follows_file_content_not_its_place_or_times(small_root, tmp_path, monkeypatch):
    from ucdir_core.data.cache import file_fingerprints
    from ucdir_core.data.splits import load_split_images
    from ucdir_core.data.inputs import build_inputs

    monkeypatch.setenv("UCDIR_DATA", str(tmp_path / "home"))
    root = tmp_path / "root"
    shutil.copytree(small_root, root)
    cfg = small_config(root).replace(backbone="tv:resnet18", trunk_blocks=1, cached_views=2, max_images_per_domain=6)
    images = load_split_images(cfg, None, check=False, log=quiet)
    paths = images.a.train.paths
    before = file_fingerprints(paths)
    inputs = build_inputs(cfg, images, progress=False).domains
    first = inputs.a.train_eval[0][0]
    write_folder(tmp_path / "other", {"a": {"x": 8}}, size=16, seed=7)
    shutil.copy(tmp_path / "other" / "a" / "x" / "000.png", paths[0])  # same path, other image
    assert file_fingerprints(paths) != before
    inputs = build_inputs(cfg, images, progress=False).domains
    assert not torch.equal(inputs.a.train_eval[0][0], first)  # recomputed, not the stale cache
    assert len(list((tmp_path / "home" / "view-cache").glob("views-*.pt"))) == 6
    moved = tmp_path / "moved"  # the same files elsewhere, with new modification times
    shutil.copytree(root, moved)
    for f in moved.rglob("*.png"):
        os.utime(f, ns=(10**9, 10**9))
    images = load_split_images(cfg.replace(root=str(moved)), None, check=False, log=quiet)
    assert file_fingerprints(images.a.train.paths) == file_fingerprints(paths)
    build_inputs(cfg.replace(root=str(moved)), images, progress=False)
    assert len(list((tmp_path / "home" / "view-cache").glob("views-*.pt"))) == 6  # found, not computed


def test_data_check_counts_a_symlinked_domain_once(tiny_root, capsys):
    (tiny_root / "c").symlink_to(tiny_root / "a")
    assert main(["data", "check", str(tiny_root), "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "total: 36 images" in out and "c: the same folder as a" in out


def test_history_header_records_threads_and_workers(trained):
    header = json.loads((trained / runs.HISTORY).read_text().splitlines()[0])
    assert header["runtime"]["torch_threads"] >= 1 and header["runtime"]["dataloader_workers"] == 0
