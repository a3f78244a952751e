"""The aligned-target term (``aligned_target_weight``, opt-in, beyond the reference): each query
pulled toward its own image's training embedding after the run's label-free alignment stage,
refitted every epoch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ucdir_core.base.pair import DomainPair
from ucdir_core.method import losses
from ucdir_core.method.interface import EpochContext
from ucdir_core.method.ucdir import UCDIR, LossWeights, ucdir_objective
from ucdir_core.method.ucdir_params import UCDIRParams


def test_the_term_is_the_cosine_distance_to_the_own_images_target():
    targets = torch.eye(4)
    q = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]])
    # query 0 is its target (distance 0), query 1 is orthogonal to target 1 (distance 1)
    assert float(losses.aligned_target(q, targets, torch.tensor([0, 1]))) == pytest.approx(0.5)
    assert float(losses.aligned_target(q, targets, torch.tensor([0, 2]))) == pytest.approx(0.0)
    with pytest.raises(IndexError):
        losses.aligned_target(q, targets, torch.tensor([0, 4]))


def test_the_objective_adds_the_weighted_mean_of_both_domains():
    g = torch.Generator().manual_seed(0)
    unit = lambda x: F.normalize(x, dim=1)  # noqa: E731
    banks = DomainPair(unit(torch.randn(20, 6, generator=g)), unit(torch.randn(20, 6, generator=g)))
    targets = banks.map(lambda b: unit(b + 1.0))
    ids = DomainPair(torch.arange(5), torch.arange(5, 10))
    q = DomainPair(banks.a[:5] + 0.1, banks.b[5:10] - 0.1)
    k = DomainPair(banks.a[:5], banks.b[5:10])
    params = UCDIRParams(aligned_target_weight=2.0)
    off = ucdir_objective(q, k, banks, ids, None, LossWeights(1.0, 0.0, 0.0, 0.0, False), params)
    on = ucdir_objective(q, k, banks, ids, None, LossWeights(1.0, 0.0, 0.0, 0.0, False, 2.0), params,
                         targets=targets)
    expected = (losses.aligned_target(q.a, targets.a, ids.a) + losses.aligned_target(q.b, targets.b, ids.b)) / 2
    assert on[1]["aligned_target"] == pytest.approx(float(expected)) and off[1]["aligned_target"] == 0.0
    assert float(on[0]) == pytest.approx(float(off[0]) + 2.0 * float(expected), rel=1e-5)
    with pytest.raises(ValueError, match="no targets"):
        ucdir_objective(q, k, banks, ids, None, LossWeights(1.0, 0.0, 0.0, 0.0, False, 2.0), params)
    # off: no such term in the reference's terms
    assert "aligned_target" not in ucdir_objective(q, k, banks, ids, None, LossWeights(1.0, 0.0, 0.0, 0.0, False),
                                                   UCDIRParams())[1]


def test_the_targets_are_the_training_embeddings_after_the_stage_from_clustering_start_on():
    params = UCDIRParams(aligned_target_weight=1.0, clustering_start=1, cluster_contrastive_weight=0.0,
                         self_entropy_weight=0.0, distance_of_distance_weight=0.0)
    method = UCDIR(params, (3,), epochs=3)
    assert method.terms[-1] == "aligned_target"
    assert [method.weights(e)["aligned_target"] for e in range(3)] == [0.0, 1.0, 1.0]
    emb = DomainPair(torch.randn(6, 4), torch.randn(7, 4))
    shifted = emb.map(lambda t: t + 3.0)
    context = lambda epoch: EpochContext(epoch, emb, lambda: emb, lambda e: None, None,  # noqa: E731
                                         lambda e: e.map(lambda t: t + 3.0))
    method.begin_epoch(context(0))
    assert method.targets is None
    method.begin_epoch(context(1))
    for got, want in zip(method.targets, shifted):
        torch.testing.assert_close(got, want)
    with pytest.raises(ValueError, match="alignment stage"):
        UCDIR(params, (3,), epochs=3).begin_epoch(EpochContext(1, emb, lambda: emb, lambda e: None))


def test_a_config_with_the_term_but_no_alignment_stage_is_refused_in_one_line(tiny_cfg):
    with pytest.raises(ValueError, match="^aligned_target_weight needs an alignment stage: set alignment=harmony"):
        tiny_cfg.replace(aligned_target_weight=1.0)
    assert tiny_cfg.replace(aligned_target_weight=1.0, alignment="centred").method_params.aligned_target_weight == 1.0


def test_a_run_with_the_term_trains_and_records_it(tiny_cfg, tmp_path):
    from ucdir_core.training.build import train

    cfg = tiny_cfg.replace(aligned_target_weight=1.0, alignment="centred", epochs=2)
    history = train(cfg, tmp_path / "run", progress=False, log=lambda s: None)
    assert history[0]["w_aligned_target"] == 0.0 and history[0]["loss_aligned_target"] == 0.0
    assert history[1]["w_aligned_target"] == 1.0 and 0 < history[1]["loss_aligned_target"] < 2
    assert np.isfinite(history[-1]["loss_total"])
