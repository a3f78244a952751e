"""Loading two domains, image modes, splits and the paired epoch stream."""

import numpy as np
import pytest
import torch
from PIL import Image

from ucdir_core.base.errors import DataError

from ucdir_core.data.views import PairedViews, TwoViews, epoch_pairs

from ucdir_core.data.splits import heldout_split

from ucdir_core.data.folders import load_domains
from ucdir_core.data.images import load_image, to_rgb
from ucdir_core.base.pair import DomainPair
from conftest import write_folder


def test_load_domains_matches_classes(tiny_root):
    pair = load_domains(tiny_root, ["a", "b"])
    assert (len(pair.a), len(pair.b)) == (18, 18)
    assert pair.a.classes == pair.b.classes == ["x", "y", "z"]
    assert np.bincount(pair.b.labels).tolist() == [5, 7, 6]


def test_unmatched_class_is_an_error_unless_allowed(tmp_path):
    root = write_folder(tmp_path / "r", {"a": {"x": 2, "y": 2}, "b": {"x": 2}})
    with pytest.raises(DataError, match="classes only in a: y"):
        load_domains(root, ["a", "b"])
    with pytest.warns(UserWarning, match="only in a"):
        pair = load_domains(root, ["a", "b"], allow_unmatched_classes=True)
    assert pair.b.classes == ["x", "y"]


def test_same_folder_twice_and_missing_folders(tiny_root):
    with pytest.raises(DataError, match="same folder"):
        load_domains(tiny_root, ["a", "a"])
    with pytest.raises(DataError, match="domain folder not found"):
        load_domains(tiny_root, ["a", "nope"])
    with pytest.raises(DataError, match="root not found"):
        load_domains(tiny_root / "missing", ["a", "b"])


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "CMYK", "I;16", "LA", "1"])
def test_image_modes_become_rgb(tmp_path, mode):
    arr = (np.arange(64 * 48).reshape(48, 64) % 251).astype(np.uint8)
    img = Image.fromarray(arr).convert(mode) if mode != "I;16" else Image.fromarray(arr.astype(np.uint16) * 257)
    ext = "tif" if mode in ("CMYK", "I;16") else "png"
    path = tmp_path / f"img.{ext}"
    img.save(path)
    out = load_image(path)
    assert out.mode == "RGB" and out.size == (64, 48)
    if mode == "I;16":
        assert np.asarray(out)[0, 10, 0] == 10  # 16-bit scaled back to 8-bit


def test_exif_orientation_applied(tmp_path):
    img = Image.new("RGB", (40, 20), "red")
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    path = tmp_path / "rot.jpg"
    img.save(path, exif=exif.tobytes())
    assert load_image(path).size == (20, 40)


def test_rgba_composited_on_white():
    img = Image.new("RGBA", (2, 2), (0, 0, 0, 0))
    assert to_rgb(img).getpixel((0, 0)) == (255, 255, 255)


def test_heldout_split_is_seeded_stratified_and_disjoint():
    labels = np.repeat(np.arange(4), [10, 5, 2, 1])
    tr, te = heldout_split(labels, 0.2, seed=3)
    tr2, te2 = heldout_split(labels, 0.2, seed=3)
    assert np.array_equal(tr, tr2) and np.array_equal(te, te2)
    assert set(tr).isdisjoint(te) and len(tr) + len(te) == len(labels)
    assert np.bincount(labels[te], minlength=4).tolist() == [2, 1, 1, 0]
    assert not np.array_equal(te, heldout_split(labels, 0.2, seed=4)[1])


def test_epoch_pairs_cover_the_larger_domain_and_sample_the_smaller():
    g = torch.Generator().manual_seed(0)
    a, b = epoch_pairs(7, 3, g)
    assert len(a) == len(b) == 7
    assert sorted(a.tolist()) == list(range(7))
    assert set(range(3)) <= set(b.tolist()) and max(b.tolist()) < 3


def test_training_items_carry_no_labels(tiny_root):
    pair = load_domains(tiny_root, ["a", "b"])
    from torchvision import transforms as T

    tf = T.Compose([T.ToTensor()])
    views = DomainPair(TwoViews(pair.a.paths, tf), TwoViews(pair.b.paths, tf))
    item = PairedViews(views, torch.tensor([3]), torch.tensor([4]))[0]
    assert len(item) == 6
    qa, ka, ia, qb, kb, ib = item
    assert (ia, ib) == (3, 4) and qa.shape == (3, 24, 24)
