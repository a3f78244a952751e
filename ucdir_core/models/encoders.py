"""The model shared by UCDIR and ProtoOT: query and key encoders, momentum update and one memory
bank per domain.

Hu & Lee, "Feature Representation Learning for Unsupervised Cross-domain Image Retrieval",
ECCV 2022, https://arxiv.org/abs/2207.09721 (spec section 1); ProtoOT keeps it unchanged. The
model owns the encoders and the banks; the losses live in the methods (:mod:`ucdir_core.method`) and
each method (:mod:`ucdir_core.method.interface`) computes its own.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ucdir_core.base.pair import DomainPair


class Encoder(nn.Module):
    """Backbone, then the projection head, then L2 normalisation.

    Head: ``Linear(D, D) - ReLU - Linear(D, dim)`` (``mlp=True``) or ``Linear(D, dim)``.
    With ``freeze_backbone`` the backbone gets no gradients and stays in eval mode; with
    ``freeze_bn`` only its BatchNorm layers stay in eval mode (pretrained running statistics,
    affine parameters still trained).

    Shape:
        (B, *input) -> (B, dim), unit rows.
    """

    def __init__(self, backbone: nn.Module, in_dim: int, dim: int = 128, mlp: bool = True, freeze_backbone: bool = False,
                 freeze_bn: bool = False):
        super().__init__()
        self.freeze_bn = freeze_bn
        self.backbone = backbone
        if mlp:
            self.head: nn.Module = nn.Sequential(nn.Linear(in_dim, in_dim), nn.ReLU(inplace=True), nn.Linear(in_dim, dim))
        else:
            self.head = nn.Linear(in_dim, dim)
        self.freeze_backbone = freeze_backbone
        if freeze_backbone:
            self.backbone.requires_grad_(False)

    def train(self, mode: bool = True) -> "Encoder":
        super().train(mode)
        if self.freeze_backbone:
            self.backbone.eval()
        elif self.freeze_bn:
            for m in self.backbone.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(self.head(self.backbone(x)).float(), dim=1)


def param_groups(encoder: Encoder, backbone_lr_scale: float = 1.0) -> list[dict]:
    """The optimiser's parameter groups of ``encoder``'s trainable parameters, each with an
    ``lr_scale``; the trainer sets a group's lr to the schedule's lr times its ``lr_scale``.

    With ``backbone_lr_scale == 1`` (the reference) one group holds every parameter, as before the
    key existed, so older checkpoints' optimiser states still load; otherwise the backbone's
    parameters get ``backbone_lr_scale`` and the head's 1 (an empty group, a frozen backbone, is
    left out).
    """
    if backbone_lr_scale == 1.0:
        return [{"params": [p for p in encoder.parameters() if p.requires_grad], "lr_scale": 1.0}]
    out = []
    for module, scale in ((encoder.backbone, backbone_lr_scale), (encoder.head, 1.0)):
        params = [p for p in module.parameters() if p.requires_grad]
        if params:
            out.append({"params": params, "lr_scale": float(scale)})
    return out


@torch.no_grad()
def init_head_pca(encoder: Encoder, features: Tensor) -> None:
    """Initialise the head so that, at step 0, the embedding is the PCA projection of the backbone's
    features: ``Linear(D, D)`` = identity (the ReLU then passes the non-negative pooled features
    unchanged), last ``Linear(D, dim)`` = the top ``dim`` principal directions with the mean
    subtracted through its bias. A deviation from the reference (random head) that keeps the
    pretrained features' retrieval quality at the start of a short CPU schedule.

    Shape:
        features: (N, D) backbone features of training images (no labels).
    """
    features = features.float()
    mean = features.mean(0)
    _, _, v = torch.linalg.svd(features - mean, full_matrices=False)  # v: (min(N, D), D)
    dim = encoder.head[-1].out_features if isinstance(encoder.head, nn.Sequential) else encoder.head.out_features
    if v.shape[0] < dim:  # fewer images than output dims: the extra rows start at zero
        v = torch.cat([v, v.new_zeros(dim - v.shape[0], v.shape[1])])
    last = encoder.head[-1] if isinstance(encoder.head, nn.Sequential) else encoder.head
    if isinstance(encoder.head, nn.Sequential):
        if (features < 0).any():
            raise ValueError("PCA init of the MLP head needs non-negative features (identity through ReLU)")
        first = encoder.head[0]
        first.weight.copy_(torch.eye(first.in_features))
        first.bias.zero_()
    last.weight.copy_(v[:dim])
    last.bias.copy_(-(v[:dim] @ mean))


class MomentumEncoders(nn.Module):
    """Momentum encoders with one memory bank per domain.

    The key encoder starts as a copy of the query encoder and follows it by
    ``theta_k <- m theta_k + (1 - m) theta_q``; it receives no gradients. Slot ``i`` of a domain's
    bank holds the latest key of that domain's image ``i``.

    BatchNorm leakage guard: the key batch (both domains together) is shuffled, cut into
    ``key_bn_splits`` groups that go through the key encoder separately (so each group is
    normalised with its own statistics, which is what the reference's two-way SplitBatchNorm
    does), then unshuffled. Separate forward passes work for any backbone, timm's fused
    BatchNorm-activation layers included.

    Shape:
        banks: (N_A, dim) and (N_B, dim).
    """

    def __init__(self, encoder: Encoder, num_images: DomainPair[int], dim: int = 128, key_bn_splits: int = 2):
        super().__init__()
        self.encoder_q = encoder
        self.encoder_k = copy.deepcopy(encoder)
        self.encoder_k.requires_grad_(False)
        self.key_bn_splits = key_bn_splits
        self.register_buffer("bank_a", torch.zeros(num_images.a, dim))
        self.register_buffer("bank_b", torch.zeros(num_images.b, dim))

    @property
    def banks(self) -> DomainPair[Tensor]:
        return DomainPair(self.bank_a, self.bank_b)

    @torch.no_grad()
    def momentum_update(self, m: float) -> None:
        """``theta_k <- m theta_k + (1 - m) theta_q`` over trainable parameters."""
        for p_q, p_k in zip(self.encoder_q.parameters(), self.encoder_k.parameters()):
            if p_q.requires_grad:
                p_k.mul_(m).add_(p_q.detach(), alpha=1.0 - m)

    def forward(self, x_q: DomainPair[Tensor], x_k: DomainPair[Tensor],
                encoder_q: nn.Module | None = None) -> tuple[DomainPair[Tensor], DomainPair[Tensor]]:
        """Query embeddings (both domains in one batch) and key embeddings (no gradient).

        ``encoder_q`` replaces the query encoder for this call (a DistributedDataParallel wrapper
        of it in multi-process training).

        Shape:
            x_q, x_k: DomainPair of (n, *input) -> q, k: DomainPair of (n, dim).
        """
        n_a = x_q.a.shape[0]
        q = (encoder_q or self.encoder_q)(torch.cat([x_q.a, x_q.b]))  # 2n x dim
        k = self.keys(torch.cat([x_k.a, x_k.b]))  # 2n x dim
        return DomainPair(q[:n_a], q[n_a:]), DomainPair(k[:n_a], k[n_a:])

    @torch.no_grad()
    def keys(self, x: Tensor) -> Tensor:
        """Key embeddings of ``x`` with the shuffle-and-split BatchNorm guard.

        Shape:
            (B, *input) -> (B, dim)
        """
        perm = torch.randperm(x.shape[0], device=x.device)
        parts = [self.encoder_k(chunk) for chunk in x[perm].chunk(self.key_bn_splits)]
        k = torch.cat(parts)
        return k[torch.argsort(perm)]

    @torch.no_grad()
    def write_bank(self, ids: DomainPair[Tensor], k: DomainPair[Tensor]) -> None:
        """Overwrite the batch's own slots with its keys (done before the losses, as the reference)."""
        for bank, idx, key in zip(self.banks, ids, k):
            bank[idx] = key.to(bank.dtype)

    @torch.no_grad()
    def fill_banks(self, embeddings: DomainPair[Tensor]) -> None:
        """Fill both banks with evaluation embeddings of every image (first epoch)."""
        for bank, emb in zip(self.banks, embeddings):
            if emb.shape != bank.shape:
                raise ValueError(f"embeddings of shape {tuple(emb.shape)} do not fit a bank of {tuple(bank.shape)}")
            bank.copy_(emb)
