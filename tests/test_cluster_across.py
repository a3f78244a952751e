"""Cluster-wise positives across domains (``cluster_contrastive_across``, opt-in, beyond the
reference): joint k-means of both domains, found after the run's alignment stage, and a cluster-wise
loss over both banks that, unlike the reference's, a shift of one domain changes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ucdir_core.base.pair import DomainPair
from ucdir_core.method.clustering import KMeansSettings, cluster_jointly
from ucdir_core.method.ucdir import LossWeights, ucdir_objective
from ucdir_core.method.ucdir_params import UCDIRParams


def _domains(n=60, d=8, seed=0, shift=6.0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    centres = torch.randn(3, d, generator=g) * 3
    a = centres[y] + 0.2 * torch.randn(n, d, generator=g)
    b = centres[y] + 0.2 * torch.randn(n, d, generator=g)
    b[:, 0] += shift
    return a, b, y


def test_joint_clusters_are_found_on_the_aligned_rows_and_share_the_raw_means_as_prototypes():
    a, b, y = _domains()
    aligned = (a - a.mean(0), b - b.mean(0))  # the offset removed: each class is one joint cluster
    ca, cb = cluster_jointly((a, b), aligned, KMeansSettings((3,), nredo=3))
    assign = torch.cat([ca.assignments[0], cb.assignments[0]])
    classes = torch.cat([y, y])
    for c in range(3):  # every joint cluster is one class, of both domains
        members = classes[assign == c]
        assert len(members) == 40 and (members == members[0]).all()
    assert torch.equal(ca.prototypes[0], cb.prototypes[0])
    raw = torch.cat([a, b])
    for c in range(3):
        torch.testing.assert_close(ca.prototypes[0][c], F.normalize(raw[assign == c].mean(0), dim=0))
    # without the alignment, the offset splits the domains apart instead
    a, b, _ = _domains(shift=60.0)
    ca2, cb2 = cluster_jointly((a, b), (a, b), KMeansSettings((2,), nredo=3))
    assert set(ca2.assignments[0].tolist()).isdisjoint(cb2.assignments[0].tolist())


def test_the_across_loss_sees_the_other_domains_bank_and_the_reference_loss_does_not():
    a, b, _ = _domains(n=30)
    ca, cb = cluster_jointly((a, b), (a - a.mean(0), b - b.mean(0)), KMeansSettings((3,), nredo=3))
    unit = lambda x: F.normalize(x, dim=1)  # noqa: E731
    banks = DomainPair(unit(a), unit(b))
    ids = DomainPair(torch.arange(8), torch.arange(8))
    q = DomainPair(banks.a[:8].clone().requires_grad_(), banks.b[:8].clone().requires_grad_())
    k = DomainPair(banks.a[:8], banks.b[:8])
    weights = LossWeights(1.0, 1.0, 0.0, 0.0, True)
    moved = DomainPair(banks.a, unit(banks.b + 0.5))  # another bank of domain B
    for across in (False, True):
        params = UCDIRParams(cluster_contrastive_across=across, threshold=0.0)
        terms = [ucdir_objective(q, k, bk, ids, DomainPair(ca, cb), weights, params)[1]["cluster_contrastive"]
                 for bk in (banks, moved)]
        # domain A's term: the reference's reads A's bank only; across reads B's as well
        only_a = [ucdir_objective(DomainPair(q.a, q.a), DomainPair(k.a, k.a), DomainPair(bk.a, bk.a) if not across
                                  else bk, ids, DomainPair(ca, cb), weights, params)[1]["cluster_contrastive"]
                  for bk in (banks, moved)]
        assert all(np.isfinite(terms)) and terms[0] != pytest.approx(terms[1])
        if across:
            assert only_a[0] != pytest.approx(only_a[1])
        else:
            assert only_a[0] == pytest.approx(only_a[1])


@pytest.mark.parametrize("alignment", ["none", "harmony"])
def test_a_run_with_positives_across_domains_trains_and_resumes_nothing_else(tiny_cfg, tmp_path, alignment):
    from ucdir_core.training.build import train

    cfg = tiny_cfg.replace(cluster_contrastive_across=True, alignment=alignment, harmony_pcs=8, harmony_clusters=5,
                           epochs=2)
    history = train(cfg, tmp_path / "run", progress=False, log=lambda s: None)
    assert history[-1]["loss_cluster_contrastive"] > 0 and np.isfinite(history[-1]["loss_total"])
    assert history[-1]["w_cluster_contrastive"] > 0


def test_the_stage_is_fitted_once_per_model_version(tiny_cfg, tmp_path, monkeypatch):
    """The evaluation and the next epoch's joint clustering see the same weights: one Harmony fit."""
    from ucdir_core.evaluation import embedding
    from ucdir_core.training.build import train

    fits = []
    original = embedding.fit_stage
    monkeypatch.setattr(embedding, "fit_stage", lambda *a: fits.append(1) or original(*a))
    cfg = tiny_cfg.replace(cluster_contrastive_across=True, alignment="harmony", harmony_pcs=8, harmony_clusters=5,
                           epochs=2, clustering_start=1)
    history = train(cfg, tmp_path / "run", progress=False, log=lambda s: None)
    assert len(fits) == len([r for r in history if "aligned" in r]) == 2
