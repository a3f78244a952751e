"""Each loss against a slow loop reference written from ../shared/ucdir-spec.md, plus properties."""

import math

import pytest
import torch
import torch.nn.functional as F

from references import ref_cluster, ref_dod, ref_entropy, ref_instance, unit
from ucdir_core.base.pair import DomainPair
from ucdir_core.method.losses import cluster_contrastive, distance_of_distance, instance_contrastive, self_entropy


@pytest.fixture
def batch():
    n, N, d, K = 6, 20, 8, 4
    q = unit(n, d, seed=1).requires_grad_(True)
    k = unit(n, d, seed=2)
    bank = unit(N, d, seed=3)
    ids = torch.tensor([3, 0, 7, 19, 11, 5])
    bank[ids] = k  # the reference writes the batch's keys before the losses
    assign = torch.arange(N) % K
    protos = unit(K, d, seed=4)
    return q, k, bank, ids, assign, protos


def test_instance_matches_loop_reference(batch):
    q, k, bank, ids, _, _ = batch
    got = instance_contrastive(q, k, bank, ids, 0.2)
    assert got.item() == pytest.approx(ref_instance(q.detach(), k, bank, ids, 0.2), rel=1e-9)


def test_instance_uses_key_even_if_bank_slot_is_stale(batch):
    q, k, bank, ids, _, _ = batch
    stale = bank.clone()
    stale[ids] = unit(len(ids), bank.shape[1], seed=9)
    assert instance_contrastive(q, k, stale, ids, 0.2).item() == pytest.approx(
        ref_instance(q.detach(), k, stale, ids, 0.2), rel=1e-9)


@pytest.mark.parametrize("thr", [0.0, 0.2, 0.5])
def test_cluster_matches_loop_reference(batch, thr):
    q, k, bank, ids, assign, protos = batch
    got = cluster_contrastive(q, k, bank, ids, assign, protos, 0.2, thr)
    assert got.item() == pytest.approx(ref_cluster(q.detach(), k, bank, ids, assign, protos, 0.2, thr), rel=1e-7, abs=1e-10)


def test_cluster_filter_drops_everything_above_one(batch):
    q, k, bank, ids, assign, protos = batch
    assert cluster_contrastive(q, k, bank, ids, assign, protos, 0.2, 1.0).item() == 0.0


def test_cluster_several_clusterings_use_product_masks(batch):
    q, k, bank, ids, assign, protos = batch
    assign2 = torch.arange(bank.shape[0]) % 2
    protos2 = unit(2, bank.shape[1], seed=7)
    got = cluster_contrastive(q, k, bank, ids, [assign, assign2], [protos, protos2], 0.2, 0.0)
    first = ref_cluster(q.detach(), k, bank, ids, assign, protos, 0.2, 0.0)
    joint = assign * 2 + assign2  # product of masks == equality of the pair of ids
    second_mask_loss = cluster_contrastive(q, k, bank, ids, joint, protos2.new_zeros(8, bank.shape[1]) + 0, 0.2, -1.0)
    assert got.item() == pytest.approx((first + second_mask_loss.item()) / 2, rel=1e-7)


def test_self_entropy_matches_reference_and_bounds(batch):
    q, _, _, _, _, protos = batch
    for tau in (0.01, 0.1, 1.0, 100.0):
        h = self_entropy(q, protos, tau).item()
        assert h == pytest.approx(ref_entropy(q.detach(), protos, tau), rel=1e-7, abs=1e-12)
        assert -1e-12 <= h <= math.log(protos.shape[0]) + 1e-12
    assert self_entropy(q, protos, 1e6).item() == pytest.approx(math.log(protos.shape[0]), rel=1e-6)


def test_dod_matches_loop_reference(batch):
    q, _, _, _, _, protos = batch
    pb = unit(3, q.shape[1], seed=11)
    for tau in (0.01, 0.5):
        got = distance_of_distance(q, protos, pb, tau).item()
        assert got == pytest.approx(ref_dod(q.detach(), protos, pb, tau), rel=1e-7, abs=1e-12)


def test_dod_zero_for_equal_prototypes_and_permutation_invariant(batch):
    q, _, _, _, _, protos = batch
    pb = unit(5, q.shape[1], seed=12)
    assert distance_of_distance(q, protos, protos, 0.5).item() == pytest.approx(0.0, abs=1e-12)
    base = distance_of_distance(q, protos, pb, 0.5).item()
    assert base > 1e-4
    perm_a, perm_b = torch.randperm(4), torch.randperm(5)
    assert distance_of_distance(q, protos[perm_a], pb[perm_b], 0.5).item() == pytest.approx(base, rel=1e-10)


def test_gradients_reach_q_only(batch):
    q, k, bank, ids, assign, protos = batch
    k = k.clone().requires_grad_(True)
    bank = bank.clone().requires_grad_(True)
    protos = protos.clone().requires_grad_(True)
    total = (instance_contrastive(q, k, bank, ids, 0.2) + cluster_contrastive(q, k, bank, ids, assign, protos, 0.2, 0.0)
             + self_entropy(q, protos, 0.1) + distance_of_distance(q, protos, protos.flip(0), 0.5))
    total.backward()
    assert q.grad is not None and q.grad.abs().sum() > 0
    assert k.grad is None and bank.grad is None and protos.grad is None


def test_bad_ids_are_refused(batch):
    q, k, bank, ids, assign, protos = batch
    with pytest.raises(IndexError):
        instance_contrastive(q, k, bank, ids + 100, 0.2)
    with pytest.raises(TypeError):
        instance_contrastive(q, k, bank, ids.int(), 0.2)
    with pytest.raises(ValueError):
        cluster_contrastive(q, k, bank, ids, assign[:-1], protos, 0.2, 0.2)


def _objective_inputs(shift):
    from ucdir_core.method.clustering import Clustering

    def dom(seed):
        q = unit(6, 8, seed=seed).requires_grad_(True)
        k = unit(6, 8, seed=seed + 1)
        bank = unit(20, 8, seed=seed + 2)
        protos = unit(4, 8, seed=seed + 3)
        return q, k, bank, protos

    (qa, ka, ba, pa), (qb, kb, bb, pb) = dom(10), dom(20)
    off = torch.zeros(8)
    off[0] = shift
    # domain B moved by a constant offset (queries, keys, bank and prototypes alike)
    qb2, kb2, bb2, pb2 = (qb + off), (kb + off), (bb + off), (pb + off)
    ids = torch.tensor([3, 0, 7, 19, 11, 5])
    assign = torch.arange(20) % 4
    return (DomainPair(qa, qb2), DomainPair(ka, kb2), DomainPair(ba, bb2), DomainPair(ids, ids),
            DomainPair(Clustering([assign], [pa]), Clustering([assign], [pb2])))


def test_centred_assignments_remove_each_domains_bank_mean():
    from ucdir_core.method.ucdir import centred_assignment_inputs

    q, _, banks, _, clustering = _objective_inputs(shift=3.0)
    cq, cp = centred_assignment_inputs(q, banks, clustering.map(lambda c: c.prototypes[0]))
    mean_b = banks.b.mean(0)
    torch.testing.assert_close(cq.b, F.normalize(q.b - mean_b, dim=1))
    torch.testing.assert_close(cp.b, F.normalize(clustering.b.prototypes[0] - mean_b, dim=1))


def test_centring_makes_dod_and_self_entropy_blind_to_a_domain_offset():
    from ucdir_core.method.ucdir import LossWeights, ucdir_objective
    from ucdir_core.method.ucdir_params import UCDIRParams

    w = LossWeights(instance_contrastive=0.0, cluster_contrastive=0.0, self_entropy=1.0, distance_of_distance=1.0,
                    clustering=True)
    centred = UCDIRParams(distance_of_distance_centred=True, self_entropy_centred=True)
    plain = UCDIRParams()
    small, big = _objective_inputs(0.5), _objective_inputs(5.0)
    t_small = ucdir_objective(*small, w, centred)[1]
    t_big = ucdir_objective(*big, w, centred)[1]
    for term in ("self_entropy", "distance_of_distance"):
        assert t_small[term] == pytest.approx(t_big[term], rel=1e-4)
    assert ucdir_objective(*small, w, plain)[1]["distance_of_distance"] != pytest.approx(
        ucdir_objective(*big, w, plain)[1]["distance_of_distance"], rel=1e-3)
