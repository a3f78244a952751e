"""`ucdir data check` and the CLI's answers to bad input: one line, nonzero exit, no traceback."""

import json

import pytest


from conftest import write_folder
from ucdir_core.cli import main


def run_cli(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    return code, out.out, out.err


def error_line(err):
    """The one error line (progress bars may precede it on stderr)."""
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.startswith("ucdir: error:")]
    assert len(lines) == 1, err
    return lines[0]


def test_check_counts_and_manifest(tiny_root, tmp_path, capsys):
    code, out, err = run_cli(capsys, "data", "check", str(tiny_root), "--json", str(tmp_path / "m.json"), "--workers", "1")
    assert code == 0
    assert "total: 36 images" in out
    manifest = json.loads((tmp_path / "m.json").read_text())
    assert manifest["counts"]["b"] == {"x": 5, "y": 7, "z": 6} and manifest["usable"]


def test_check_lists_broken_files(tiny_root, tmp_path, capsys):
    good = (tiny_root / "a" / "x" / "000.png").read_bytes()
    (tiny_root / "a" / "x" / "trunc.png").write_bytes(good[: len(good) // 2])
    (tiny_root / "a" / "y" / "zero.jpg").write_bytes(b"")
    (tiny_root / "b" / "z" / "notes.txt").write_text("hello")
    (tiny_root / "b" / "z" / "fake.jpg").write_text("not an image")
    code, out, _ = run_cli(capsys, "data", "check", str(tiny_root), "--json", str(tmp_path / "m.json"))
    assert code == 0 and "total: 36 images" in out
    m = json.loads((tmp_path / "m.json").read_text())
    assert [p.rsplit("/", 1)[1] for p in m["problems"]["truncated"]] == ["trunc.png"]
    assert [p.rsplit("/", 1)[1] for p in m["problems"]["empty"]] == ["zero.jpg"]
    assert [p.rsplit("/", 1)[1] for p in m["problems"]["non_image"]] == ["notes.txt"]
    assert [p.rsplit("/", 1)[1] for p in m["problems"]["unreadable"]] == ["fake.jpg"]


def test_missing_root(capsys, tmp_path):
    code, out, err = run_cli(capsys, "data", "check", str(tmp_path / "nope"))
    assert code == 2 and error_line(err).startswith("ucdir: error: dataset root not found")


def test_domain_without_images(capsys, tmp_path):
    root = write_folder(tmp_path / "r", {"a": {"x": 2}})
    (root / "b" / "x").mkdir(parents=True)
    code, _, err = run_cli(capsys, "data", "check", str(root))
    assert code == 2 and "without usable images: b" in err and "Traceback" not in err


def test_class_in_one_domain_only(capsys, tmp_path):
    root = write_folder(tmp_path / "r", {"a": {"x": 2, "y": 2}, "b": {"x": 2}})
    code, out, err = run_cli(capsys, "data", "check", str(root))
    assert code == 2 and "classes missing from b: y" in out and "accepts this" in error_line(err)
    code, _, _ = run_cli(capsys, "data", "check", str(root), "--allow-unmatched-classes")
    assert code == 0
    code, _, err = run_cli(capsys, "train", "--root", str(root), "--domains", "a", "b", "--run-dir",
                           str(tmp_path / "run"), "--quiet")
    assert code == 2 and "classes only in a: y" in err


def test_same_folder_as_both_domains(capsys, tiny_root, tmp_path):
    code, _, err = run_cli(capsys, "train", "--root", str(tiny_root), "--domains", "a", "a", "--run-dir",
                           str(tmp_path / "run"), "--quiet")
    assert code == 2 and "domains must be two different names" in err
    (tiny_root / "c").symlink_to(tiny_root / "a")
    code, _, err = run_cli(capsys, "train", "--root", str(tiny_root), "--domains", "a", "c", "--run-dir",
                           str(tmp_path / "run"), "--quiet")
    assert code == 2 and "same folder" in err


def test_train_with_missing_root_and_bad_override(capsys, tmp_path):
    code, _, err = run_cli(capsys, "train", "--root", str(tmp_path / "nope"), "--domains", "a", "b",
                           "--run-dir", str(tmp_path / "run"), "--quiet")
    assert code == 2 and "root not found" in err
    code, _, err = run_cli(capsys, "train", "--set", "epochz=3", "--run-dir", str(tmp_path / "run"))
    assert code == 2 and "unknown config key 'epochz'" in err


def test_train_skips_broken_files_with_count(capsys, tiny_root, tmp_path):
    (tiny_root / "a" / "x" / "zero.png").write_bytes(b"")
    code, out, err = run_cli(capsys, "train", "--preset", "digits_scratch", "--root", str(tiny_root), "--domains", "a", "b", "--run-dir",
                             str(tmp_path / "run"), "--quiet", "--backbone", "small_cnn", "--epochs", "1", "--row", "instance",
                             "--set", "batch_size=8", "--set", "image_size=16", "--set", "resize_size=16",
                             "--set", "num_clusters=3", "--set", "workers=0")
    assert code == 0, err
    assert "skipping 1 broken files" in out
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["problems"]["empty"][0].endswith("zero.png")


def test_a_root_without_preset_gets_the_folder_preset_with_k_from_the_shared_class_folders(tiny_root, tmp_path):
    from ucdir_core.cli import build_parser, config_from_args

    (tiny_root / "b" / "only_b").mkdir()
    (tiny_root / "b" / "only_b" / "0.png").write_bytes((tiny_root / "b" / "x" / "000.png").read_bytes())
    args = build_parser().parse_args(["train", "--root", str(tiny_root), "--domains", "a", "b", "--run-dir", "r"])
    cfg = config_from_args(args)
    assert cfg.dataset == "folder" and cfg.num_clusters == (3,) and cfg.image_size == 128
    assert cfg.trunk_blocks is not None  # the CPU regime
    args = build_parser().parse_args(["train", "--root", str(tiny_root), "--domains", "a", "b", "--run-dir", "r",
                                      "--set", "num_clusters=5"])
    assert config_from_args(args).num_clusters == (5,)
    args = build_parser().parse_args(["train", "--run-dir", "r"])
    assert config_from_args(args).dataset == "digits"
    with pytest.raises(ValueError, match="--domains"):
        config_from_args(build_parser().parse_args(["train", "--root", str(tiny_root), "--run-dir", "r"]))
    with pytest.raises(ValueError, match="--root"):
        config_from_args(build_parser().parse_args(["train", "--preset", "folder", "--run-dir", "r"]))
    two = write_folder(tmp_path / "two", {"p": {"x": 1, "y": 1}, "q": {"x": 1, "y": 1}})
    args = build_parser().parse_args(["train", "--root", str(tiny_root), "--domains", "a", "b", "--run-dir", "r",
                                      "--set", f"root={two}", "--set", "domains=p,q"])
    assert config_from_args(args).num_clusters == (2,)  # K from the folders the overrides name
    args = build_parser().parse_args(["train", "--root", str(tiny_root), "--domains", "a", "b", "--run-dir", "r",
                                      "--set", "num-clusters=4"])
    assert config_from_args(args).num_clusters == (4,)
