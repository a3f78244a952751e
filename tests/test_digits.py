"""The embedded digits benchmark: layout, counts, byte-identical for a seed."""

import hashlib

from ucdir_core.cli import main
from ucdir_core.data.folders import load_domains


def tree_digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*.png")):
        h.update(str(p.relative_to(root)).encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def test_digits_layout_and_counts(digits_root):
    pair = load_domains(digits_root, ["handwritten", "printed"])
    assert len(pair.a) == 1797 and len(pair.b) == 120
    assert pair.a.classes == [str(d) for d in range(10)]


def test_digits_byte_identical_for_a_seed(tmp_path, digits_root):
    assert main(["data", "digits", str(tmp_path / "d0"), "--seed", "0", "--per-class", "12"]) == 0
    assert tree_digest(tmp_path / "d0") == tree_digest(digits_root)
    assert main(["data", "digits", str(tmp_path / "d1"), "--seed", "1", "--per-class", "12"]) == 0
    assert tree_digest(tmp_path / "d1" / "printed") != tree_digest(digits_root / "printed")
