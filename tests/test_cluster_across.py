"""Cluster-wise positives across domains (``cluster_contrastive_across``, opt-in, beyond the
reference): joint k-means of both domains, found after the run's alignment stage, and a cluster-wise
loss over both banks that, unlike the reference's, a shift of one domain changes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ucdir_core.base.pair import DomainPair
from ucdir_core.method import losses
from ucdir_core.method.clustering import Clustering, KMeansSettings, cluster_jointly, joint_balance
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


def test_joint_balance_is_the_smaller_domain_share_over_the_larger():
    a = torch.tensor([0, 0, 1, 1])  # domain A: half in 0, half in 1, none in 2
    b = torch.tensor([0, 1, 1, 1, 1, 1, 2, 2])  # domain B: 1/8 in 0, 5/8 in 1, 2/8 in 2
    torch.testing.assert_close(joint_balance(a, b, 4), torch.tensor([0.25, 0.5 / 0.625, 0.0, 0.0]))


def _case(n=30):
    a, b, _ = _domains(n=n)
    unit = lambda x: F.normalize(x, dim=1)  # noqa: E731
    banks = DomainPair(unit(a), unit(b))
    ids = DomainPair(torch.arange(8), torch.arange(8))
    q = DomainPair(banks.a[:8] + 0.1, banks.b[:8] - 0.1)
    k = DomainPair(banks.a[:8], banks.b[:8])
    return q, k, banks, ids


def test_other_domain_positives_only_in_balanced_joint_clusters():
    q, k, banks, _ = _case()
    ids = DomainPair(*(torch.tensor([0, 5, 12, 15, 20, 27, 28, 29]),) * 2)  # queries in every joint cluster
    # joint cluster 0 holds both domains in proportion, cluster 1 nearly only A, cluster 2 nearly only B
    own = torch.tensor([0] * 10 + [1] * 18 + [2] * 2)
    other = torch.tensor([0] * 10 + [1] * 2 + [2] * 18)
    protos = F.normalize(torch.randn(3, banks.a.shape[1], generator=torch.Generator().manual_seed(1)), dim=1)
    joint = DomainPair(Clustering([own], [protos]), Clustering([other], [protos]))
    weights = LossWeights(0.0, 1.0, 0.0, 0.0, True)
    params = UCDIRParams(cluster_contrastive_across=True, threshold=0.0, cluster_contrastive_across_min_balance=0.5)
    got = ucdir_objective(q, k, banks, ids, joint, weights, params)[1]["cluster_contrastive"]
    expected = []
    for qd, kd, bd, bo, idd, c, co in zip(q, k, banks, banks.swap(), ids, joint, joint.swap()):
        kept = torch.where(co.assignments[0] == 0, co.assignments[0], torch.full_like(co.assignments[0], -1))
        expected.append(float(losses.cluster_contrastive(qd, kd, torch.cat([bd, bo]), idd,
                                                         torch.cat([c.assignments[0], kept]), protos, 0.2, 0.0)))
    assert got == pytest.approx(sum(expected) / 2, rel=1e-5)
    every = ucdir_objective(q, k, banks, ids, joint, weights, params.replace(
        cluster_contrastive_across_min_balance=0.0))[1]["cluster_contrastive"]
    assert every != pytest.approx(got)


def test_the_across_share_mixes_the_across_and_the_in_domain_terms():
    q, k, banks, ids = _case()
    a, b = banks
    joint = DomainPair(*cluster_jointly((a, b), (a - a.mean(0), b - b.mean(0)), KMeansSettings((3,), nredo=3)))
    settings = KMeansSettings((3,), nredo=3)
    in_domain = DomainPair(settings.cluster(a), settings.cluster(b))
    weights = LossWeights(0.0, 1.0, 0.1, 0.1, True)
    base = UCDIRParams(threshold=0.0)
    across = ucdir_objective(q, k, banks, ids, joint, weights, base.replace(cluster_contrastive_across=True))[1]
    reference = ucdir_objective(q, k, banks, ids, in_domain, weights, base)[1]
    half = ucdir_objective(q, k, banks, ids, joint, weights, base.replace(
        cluster_contrastive_across=True, cluster_contrastive_across_share=0.25), in_domain)[1]
    assert half["cluster_contrastive"] == pytest.approx(0.25 * across["cluster_contrastive"]
                                                        + 0.75 * reference["cluster_contrastive"], rel=1e-5)
    # self-entropy and distance-of-distance read the per-domain clustering, as the reference does
    for term in ("self_entropy", "distance_of_distance"):
        assert half[term] == pytest.approx(reference[term], rel=1e-5)
    with pytest.raises(ValueError, match="in_domain"):
        ucdir_objective(q, k, banks, ids, joint, weights,
                        base.replace(cluster_contrastive_across=True, cluster_contrastive_across_share=0.5))


@pytest.mark.parametrize("key,value", [("cluster_contrastive_across_min_balance", 0.5),
                                       ("cluster_contrastive_across_share", 0.5)])
def test_the_across_settings_are_refused_without_positives_across(key, value):
    with pytest.raises(ValueError, match="need cluster_contrastive_across=true"):
        UCDIRParams(**{key: value})


@pytest.mark.parametrize("alignment,changes", [("none", {}), ("harmony", {}), (
    "none", {"cluster_contrastive_across_share": 0.5, "cluster_contrastive_across_min_balance": 0.3})])
def test_a_run_with_positives_across_domains_trains_and_resumes_nothing_else(tiny_cfg, tmp_path, alignment, changes):
    from ucdir_core.training.build import train

    cfg = tiny_cfg.replace(cluster_contrastive_across=True, alignment=alignment, harmony_pcs=8, harmony_clusters=5,
                           epochs=2, **changes)
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
