"""Shared fixtures: tiny image-folder datasets built on the fly."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def write_folder(root: Path, spec: dict, size: int = 24, seed: int = 0) -> Path:
    """``spec``: {domain: {class: count}}; images are coloured noise, one colour per class."""
    rng = np.random.default_rng(seed)
    for d, classes in spec.items():
        for ci, (c, n) in enumerate(sorted(classes.items())):
            (root / d / c).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                base = np.array([60 + 60 * (ci % 3), 40 * ci % 255, 200 - 50 * (ci % 4)])
                arr = np.clip(base + rng.normal(0, 25, (size, size, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(arr).save(root / d / c / f"{i:03d}.png")
    return root


@pytest.fixture
def tiny_root(tmp_path):
    return write_folder(tmp_path / "tiny", {"a": {"x": 6, "y": 6, "z": 6}, "b": {"x": 5, "y": 7, "z": 6}})


@pytest.fixture(scope="session")
def digits_root(tmp_path_factory):
    from ucdir_core.data.digits import build_digits

    return build_digits(tmp_path_factory.mktemp("digits"), seed=0, per_class=12)


@pytest.fixture
def tiny_cfg(digits_root):
    """A few seconds of training on tiny digits: a small CNN at 16 px, 3 epochs, every UCDIR loss on
    from epoch 1."""
    from ucdir_core.config.presets import get_preset

    return get_preset("digits_scratch").replace(
        root=str(digits_root), max_images_per_domain=96, image_size=16, resize_size=16, batch_size=16, epochs=3,
        clustering_start=1, cluster_contrastive_ramp_after=0, cluster_contrastive_ramp_end=2,
        cluster_contrastive_weight_initial=0.5, cluster_contrastive_weight=1.0, self_entropy_start=1,
        distance_of_distance_start=1, num_clusters=(5,), kmeans_restarts=1, workers=0, eval_ks=(1, 5), device="cpu")


def killed_and_resumed(cfg, tmp_path: Path, monkeypatch, kill_epoch: int):
    """Train ``cfg`` uninterrupted, and again killed during epoch ``kill_epoch`` then resumed: the two
    histories without their wall times, which a resume must make equal."""
    import torch

    from ucdir_core.training.build import train
    from ucdir_core.training.trainer import Trainer

    def quiet(_msg):
        pass

    full = train(cfg, tmp_path / "full", progress=False, log=quiet)
    original = Trainer.train_epoch

    def killed(self, epoch):
        if epoch == kill_epoch:
            raise KeyboardInterrupt
        return original(self, epoch)

    monkeypatch.setattr(Trainer, "train_epoch", killed)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "killed", progress=False, log=quiet)
    monkeypatch.setattr(Trainer, "train_epoch", original)
    assert torch.load(tmp_path / "killed" / "last.pt", weights_only=True)["epoch"] == kill_epoch - 1  # the last done
    resumed = train(cfg, tmp_path / "killed", resume=True, progress=False, log=quiet)
    strip = lambda h: [{k: v for k, v in r.items() if k != "wall_seconds"} for r in h]  # noqa: E731
    return strip(full), strip(resumed)
