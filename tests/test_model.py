"""Encoders, momentum update, memory banks and the BatchNorm leakage guard."""

import pytest
import torch

from ucdir_core.base.pair import DomainPair
from ucdir_core.method.clustering import Clustering
from ucdir_core.method.ucdir import LossWeights, ucdir_objective
from ucdir_core.method.ucdir_params import UCDIRParams
from ucdir_core.models.backbones import SmallCNN
from ucdir_core.models.encoders import MomentumEncoders, Encoder


def make_model(n_a=10, n_b=12):
    torch.manual_seed(0)
    return MomentumEncoders(Encoder(SmallCNN(), SmallCNN.dim, 16), DomainPair(n_a, n_b), dim=16)


def images(n, seed):
    return torch.randn(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


def test_shapes_and_unit_norm():
    model = make_model()
    q, k = model(DomainPair(images(4, 0), images(4, 1)), DomainPair(images(4, 2), images(4, 3)))
    for t in (*q, *k):
        assert t.shape == (4, 16)
        torch.testing.assert_close(t.norm(dim=1), torch.ones(4))
    assert model.bank_a.shape == (10, 16) and model.bank_b.shape == (12, 16)


def test_momentum_update_formula_and_no_key_grad():
    model = make_model()
    with torch.no_grad():
        for p in model.encoder_q.parameters():
            p.add_(1.0)
    before = [p.clone() for p in model.encoder_k.parameters()]
    model.momentum_update(0.9)
    for pk, pq, b in zip(model.encoder_k.parameters(), model.encoder_q.parameters(), before):
        torch.testing.assert_close(pk, 0.9 * b + 0.1 * pq)
        assert not pk.requires_grad


def test_training_step_leaves_key_encoder_and_bank_without_grad():
    model = make_model()
    ids = DomainPair(torch.tensor([1, 4, 7, 9]), torch.tensor([0, 2, 11, 5]))
    q, k = model(DomainPair(images(4, 0), images(4, 1)), DomainPair(images(4, 2), images(4, 3)))
    before = DomainPair(model.bank_a.clone(), model.bank_b.clone())
    model.write_bank(ids, k)
    for bank, old, idx, key in zip(model.banks, before, ids, k):
        written = torch.zeros(bank.shape[0], dtype=torch.bool)
        written[idx] = True
        torch.testing.assert_close(bank[idx], key)
        torch.testing.assert_close(bank[~written], old[~written])  # exactly the rows in ids changed
    protos = torch.nn.functional.normalize(torch.randn(3, 16), dim=1)
    clus = DomainPair(Clustering([torch.arange(10) % 3], [protos]), Clustering([torch.arange(12) % 3], [protos.flip(0)]))
    loss, terms = ucdir_objective(q, k, model.banks, ids, clus, LossWeights(1, 1, 1, 1, True), UCDIRParams())
    loss.backward()
    assert all(p.grad is None for p in model.encoder_k.parameters())
    assert not model.bank_a.requires_grad and model.bank_a.grad is None
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoder_q.parameters())
    assert set(terms) == {"instance_contrastive", "cluster_contrastive", "self_entropy", "distance_of_distance"}


def test_key_guard_unshuffles_and_splits_batchnorm():
    model = make_model()
    x = images(8, 5)
    model.train()
    torch.manual_seed(1)
    k = model.keys(x)
    # same result as running each shuffled half separately and putting rows back in order
    torch.manual_seed(1)
    perm = torch.randperm(8)
    halves = [model.encoder_k(c) for c in x[perm].chunk(2)]
    torch.testing.assert_close(k, torch.cat(halves)[torch.argsort(perm)])
    # and differs from one full-batch normalisation (the guard is active)
    assert not torch.allclose(k, model.encoder_k(x), atol=1e-4)


def test_fill_banks_checks_shape():
    model = make_model()
    model.fill_banks(DomainPair(torch.ones(10, 16), torch.zeros(12, 16)))
    assert model.bank_a.sum() == 160
    with pytest.raises(ValueError):
        model.fill_banks(DomainPair(torch.ones(9, 16), torch.zeros(12, 16)))


def test_frozen_backbone_stays_in_eval_mode_and_gets_no_grad():
    enc = Encoder(SmallCNN(), SmallCNN.dim, 16, freeze_backbone=True)
    enc.train()
    assert not enc.backbone.training and enc.head.training
    enc(images(4, 0)).sum().backward()
    assert all(p.grad is None for p in enc.backbone.parameters())
