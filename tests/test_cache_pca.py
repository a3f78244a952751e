"""Frozen-trunk cached views and the PCA head initialisation."""

import pytest
import torch

from ucdir_core.config.presets import get_preset
from ucdir_core.data.cache import CachedTwoViews, split_backbone
from ucdir_core.models.encoders import Encoder, init_head_pca
from ucdir_core.training.build import build_trainer, train


def test_split_backbone_composes_to_the_whole():
    trunk, top, bb = split_backbone("tv:resnet18", 2)
    bb.module.eval()
    top.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(top(trunk(x)), bb.module(x))
    assert not any(p.requires_grad for p in trunk.parameters())
    trunk, top, bb = split_backbone("efficientnet_lite0", 6)
    bb.module.eval()
    top.eval()
    with torch.no_grad():
        torch.testing.assert_close(top(trunk(x)), bb.module(x))
    with pytest.raises(ValueError):
        split_backbone("small_cnn", 1)


def test_cached_two_views_are_different_views():
    views = torch.arange(5 * 3, dtype=torch.float16).view(5, 3, 1, 1, 1)
    ds = CachedTwoViews(views)
    for _ in range(20):
        a, b, i = ds[2]
        assert i == 2 and a.item() != b.item() and 6 <= a.item() <= 8 and 6 <= b.item() <= 8


def test_pca_head_init_reproduces_pca_projection():
    torch.manual_seed(0)
    feats = torch.rand(300, 32)
    enc = Encoder(torch.nn.Identity(), 32, dim=8, mlp=True)
    init_head_pca(enc, feats)
    centred = feats - feats.mean(0)
    _, _, v = torch.linalg.svd(centred, full_matrices=False)
    want = torch.nn.functional.normalize(centred @ v[:8].t(), dim=1)
    with torch.no_grad():
        torch.testing.assert_close(enc(feats), want, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError):
        init_head_pca(Encoder(torch.nn.Identity(), 32, dim=8), feats - 1.0)  # negative features


def test_cached_trunk_pipeline_trains_and_resumes(digits_root, tmp_path, monkeypatch):
    monkeypatch.setenv("UCDIR_DATA", str(tmp_path / "home"))
    cfg = get_preset("digits").replace(
        root=str(digits_root), backbone="tv:resnet18", trunk_blocks=3, cached_views=3, head_init="pca",
        max_images_per_domain=80, image_size=32, resize_size=32, batch_size=16, epochs=2, clustering_start=1,
        num_clusters=(4,), kmeans_restarts=1, workers=0, device="cpu", eval_ks=(1,), cluster_contrastive_ramp_after=0,
        cluster_contrastive_weight_initial=0.5)
    history = train(cfg, tmp_path / "run", progress=False, log=lambda s: None)
    assert len(history) == 2 and history[1]["loss_cluster_contrastive"] != 0
    assert len(list((tmp_path / "home" / "view-cache").glob("views-*.pt"))) == 4  # views + eval, per domain
    from ucdir_core.inference.loading import evaluate_run

    again = evaluate_run(tmp_path / "run")["eval"]  # no PCA init here: the checkpoint holds the head
    for direction, metrics in history[-1]["eval"].items():
        assert again[direction] == pytest.approx(metrics, abs=1e-6)
    trainer, _ = build_trainer(cfg, tmp_path / "run2", progress=False, log=lambda s: None)
    x, _ = trainer.inputs.a.train_eval[0]
    assert x.shape == (256, 2, 2)  # resnet18 after layer3 at 32 px
