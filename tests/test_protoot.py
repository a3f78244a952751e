"""ProtoOT (``../shared/protoot-spec.md``): the transport plan and both losses against slow loops
written from the spec, their properties, the method's per-epoch state, and a short fit that
resumes exactly."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from references import ce_loop, cross_loop, in_domain_loop, sinkhorn_loop, unit
from ucdir_core.base.pair import DomainPair
from ucdir_core.config.presets import get_preset
from ucdir_core.method.clustering import Clustering
from ucdir_core.method.interface import EpochContext, StepBatch
from ucdir_core.method.protoot import ProtoOT, matched_marginal
from ucdir_core.method.prototype_losses import (bank_plan, cross_domain_loss, cross_domain_neighbour_loss, in_domain_loss,
                                                moved_prototypes, nearest_neighbours)
from ucdir_core.method.transport import marginal_of, plan_similarity, transport_plan


@pytest.fixture
def inputs():
    q = unit(5, 8, seed=1).requires_grad_(True)
    k = unit(5, 8, seed=2)
    bank = unit(24, 8, seed=3)
    ids = torch.tensor([0, 7, 11, 18, 23])
    P = unit(4, 8, seed=4)
    beta = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    return q, k, bank, ids, P, beta


# ----------------------------------------------------------------------------- the plan
def test_transport_plan_matches_the_loop_and_its_rows_sum_to_one(inputs):
    _, _, bank, _, P, beta = inputs
    S = plan_similarity(bank, P)
    plan = transport_plan(S, beta, 0.05, 3)
    ref = sinkhorn_loop(S.tolist(), beta.tolist(), 0.05, 3)
    np.testing.assert_allclose(plan.numpy(), np.array(ref), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(plan.sum(1), torch.ones(24, dtype=torch.float64))


def test_prototype_masses_follow_the_marginal(inputs):
    _, _, bank, _, P, beta = inputs
    plan = transport_plan(plan_similarity(bank, P, "cosine"), beta, epsilon=0.5, iterations=200)
    torch.testing.assert_close(plan.sum(0) / 24, beta, atol=1e-6, rtol=0)
    skewed = torch.tensor([0.7, 0.1, 0.1, 0.1], dtype=torch.float64)
    masses = transport_plan(plan_similarity(bank, P, "cosine"), skewed, 0.5, 200).sum(0) / 24
    assert masses.argmax() == 0 and float(masses[0]) == pytest.approx(0.7, abs=1e-4)


def test_plan_similarity_as_released_normalises_rows(inputs):
    _, _, bank, _, P, _ = inputs
    torch.testing.assert_close(plan_similarity(bank, P).norm(dim=1), torch.ones(24, dtype=torch.float64))
    torch.testing.assert_close(plan_similarity(bank, P, "cosine"), bank @ P.t())


def test_transport_plan_refuses_a_bad_marginal(inputs):
    _, _, bank, _, P, _ = inputs
    with pytest.raises(ValueError, match="sum to 1"):
        transport_plan(bank @ P.t(), torch.tensor([0.5, 0.5, 0.5, -0.5], dtype=torch.float64))
    with pytest.raises(ValueError, match="must match"):
        transport_plan(bank @ P.t(), torch.ones(3, dtype=torch.float64) / 3)


def test_marginal_is_the_share_of_each_cluster():
    beta = marginal_of(torch.tensor([0, 0, 1, 3, 3, 3]), 4)
    torch.testing.assert_close(beta, torch.tensor([2 / 6, 1 / 6, 0.0, 3 / 6]))


# ----------------------------------------------------------------------------- the losses
def test_in_domain_loss_matches_the_loop(inputs):
    q, k, bank, ids, P, beta = inputs
    plan = bank_plan(bank, P, beta, 0.05, 3)
    got = in_domain_loss(q, k, bank, ids, P, plan, 0.2, 0.5, 0.1)
    assert float(got.detach()) == pytest.approx(in_domain_loop(q.detach(), k, bank, ids, P, plan.tolist(), 0.2, 0.5, 0.1),
                                       rel=1e-9)


@pytest.mark.parametrize("mode", ["normalised", "cosine"])
def test_cross_domain_loss_matches_the_loop(inputs, mode):
    q, _, bank, ids, _, beta = inputs
    Pe = unit(4, 8, seed=9)
    plan = bank_plan(bank, Pe, beta, 0.05, 3)
    got = cross_domain_loss(q, ids, Pe, plan, 0.2, mode)
    assert float(got.detach()) == pytest.approx(cross_loop(q.detach(), ids, Pe, plan.tolist(), 0.2, mode == "normalised"),
                                       rel=1e-9)


def test_joint_cross_domain_loss_matches_the_loop(inputs):
    q, _, bank, ids, Pd, beta = inputs
    Pe = unit(4, 8, seed=9)
    plan = bank_plan(bank, Pe, beta, 0.05, 3)
    got = cross_domain_loss(q, ids, Pe, plan, 0.2, "joint", own_prototypes=Pd)
    assert float(got.detach()) == pytest.approx(cross_loop(q.detach(), ids, Pe, plan.tolist(), 0.2, False, Pd), rel=1e-9)
    with pytest.raises(ValueError, match="own domain"):
        cross_domain_loss(q, ids, Pe, plan, 0.2, "joint")


def test_only_joint_negatives_feel_a_shift_of_the_other_domain(inputs):
    """Moving every prototype of the other domain by one vector v (a domain offset) leaves the
    cosine cross-domain loss unchanged, so it cannot pull one domain onto the other as a whole;
    with the own domain's prototypes among the negatives it changes, and moving the other domain
    towards the queries lowers it."""
    q, _, bank, ids, Pd, beta = inputs
    q = q.detach()
    Pe = unit(4, 8, seed=9)
    plan = bank_plan(bank, Pe, beta, 0.05, 3)
    v = unit(8, seed=11) * 0.7
    for mode, moves in (("cosine", False), ("joint", True)):
        before = float(cross_domain_loss(q, ids, Pe, plan, 0.2, mode, own_prototypes=Pd))
        after = float(cross_domain_loss(q, ids, Pe + v, plan, 0.2, mode, own_prototypes=Pd))
        assert (after != pytest.approx(before, rel=1e-9)) is moves, mode
    toward = 0.5 * F.normalize(q.sum(0), dim=0)  # the other domain moved towards the queries
    assert bool((q @ toward > 0).all())
    lower = float(cross_domain_loss(q, ids, Pe + toward, plan, 0.2, "joint", own_prototypes=Pd))
    assert lower < float(cross_domain_loss(q, ids, Pe, plan, 0.2, "joint", own_prototypes=Pd))


def test_cross_domain_neighbour_loss_matches_the_loop(inputs):
    q, k, bank_e, _, Pd, _ = inputs
    Pe = unit(4, 8, seed=9)
    got = cross_domain_neighbour_loss(q, k, bank_e, Pd, Pe, 0.2)
    out = []
    for i in range(len(q)):
        nn = max(range(len(bank_e)), key=lambda j: float(k[i] @ bank_e[j]))
        negs = [float(q[i].detach() @ P[j]) for P in (Pd, Pe) for j in range(len(P))]
        out.append(ce_loop(float(q[i].detach() @ bank_e[nn]), negs, 0.2))
    assert float(got.detach()) == pytest.approx(sum(out) / len(out), rel=1e-9)


def test_no_gradient_reaches_keys_bank_or_prototypes(inputs):
    q, k, bank, ids, P, beta = inputs
    k, bank, P = k.clone().requires_grad_(True), bank.clone().requires_grad_(True), P.clone().requires_grad_(True)
    plan = bank_plan(bank, P, beta, 0.05, 3)
    assert not plan.requires_grad
    (in_domain_loss(q, k, bank, ids, P, plan) + cross_domain_loss(q, ids, P, plan)).backward()
    assert q.grad is not None and q.grad.abs().sum() > 0
    assert k.grad is None and bank.grad is None and P.grad is None
    assert not moved_prototypes(plan, bank).requires_grad


def test_nearest_neighbour_skips_the_own_slot():
    bank = unit(6, 4, seed=5)
    ids = torch.tensor([2, 4])
    nn = nearest_neighbours(bank[ids], bank, ids)  # a key equal to its own slot
    assert (nn != ids).all()
    sims = bank[ids] @ bank.t()
    sims[0, 2] = sims[1, 4] = -9
    assert nn.tolist() == sims.argmax(1).tolist()


def test_moved_prototypes_are_the_unit_transport_weighted_bank_means(inputs):
    _, _, bank, _, P, beta = inputs
    plan = bank_plan(bank, P, beta, 0.05, 3)
    moved = moved_prototypes(plan, bank)
    for j in range(4):
        mean = sum(float(plan[i, j]) * bank[i] for i in range(24))
        torch.testing.assert_close(moved[j], mean / mean.norm())


def test_matched_marginal_follows_the_prototypes():
    protos = unit(3, 5, seed=7)
    centroids = protos[[2, 0, 1]]  # k-means found the same clusters in another order
    beta = torch.tensor([0.5, 0.3, 0.2])
    torch.testing.assert_close(matched_marginal(beta, centroids, protos), torch.tensor([0.3, 0.2, 0.5]))


# ----------------------------------------------------------------------------- the method
def _context(epoch, banks):
    def cluster(emb):
        return emb.map(lambda e: Clustering([torch.arange(len(e)) % 3], [F.normalize(e[:3].float(), dim=1)]))

    return EpochContext(epoch, banks, lambda: banks, cluster)


def test_the_method_takes_prototypes_from_k_means_at_epoch_0_only_and_moves_them_every_step():
    cfg = get_preset("protoot_pacs").replace(num_clusters=(3,), cross_domain_start=1)

    def protoot(params):
        return ProtoOT(params, cfg.num_clusters, cfg.epochs)

    method = protoot(cfg.method_params)
    banks = DomainPair(unit(12, 8, seed=1).float(), unit(12, 8, seed=2).float())
    method.begin_epoch(_context(0, banks))
    start = method.prototypes
    torch.testing.assert_close(start.a, F.normalize(banks.a[:3], dim=1))
    assert float(method.marginals.a.sum()) == pytest.approx(1.0)
    q = DomainPair(unit(4, 8, seed=3).float().requires_grad_(True), unit(4, 8, seed=4).float().requires_grad_(True))
    batch = StepBatch(q, DomainPair(unit(4, 8, seed=5).float(), unit(4, 8, seed=6).float()), banks,
                      DomainPair(torch.tensor([0, 1, 2, 3]), torch.tensor([4, 5, 6, 7])))
    loss, terms = method.loss(batch)
    assert terms["cross_domain"] == 0.0 and terms["in_domain"] > 0 and loss.requires_grad
    assert not torch.allclose(method.prototypes.a, start.a)
    moved = method.prototypes
    method.begin_epoch(_context(1, banks))  # a later epoch keeps the moved prototypes
    assert method.prototypes is moved and method.weights(1)["cross_domain"] == cfg.method_params.cross_domain_weight
    _, terms = method.loss(batch)
    assert terms["cross_domain"] > 0 and "cross_domain_neighbour" not in terms  # not logged unless weighted
    neighbour = protoot(cfg.method_params.replace(cross_domain_neighbour_weight=0.5))
    neighbour.begin_epoch(_context(1, banks))
    total, terms = neighbour.loss(batch)
    assert terms["cross_domain_neighbour"] > 0 and float(total.detach()) == pytest.approx(
        terms["in_domain"] + cfg.method_params.cross_domain_weight * terms["cross_domain"] + 0.5 * terms["cross_domain_neighbour"],
        rel=1e-5)
    restored = protoot(cfg.method_params)
    restored.load_state_dict(method.state_dict())
    torch.testing.assert_close(restored.prototypes.b, method.prototypes.b)


def test_protoot_uses_one_k():
    with pytest.raises(ValueError, match="one K"):
        ProtoOT(get_preset("protoot_pacs").method_params, (7, 14), 5)
