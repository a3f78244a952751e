"""The optimiser a config names, shared by every method (UCDIR: SGD; ProtoOT: Adam with AMSGrad)."""

from __future__ import annotations

import torch

from ucdir_core.base.config import UCDIRConfig
from ucdir_core.method.model import Encoder, param_groups


def build_optimizer(cfg: UCDIRConfig, encoder: Encoder) -> torch.optim.Optimizer:
    """``cfg.optimizer`` over ``encoder``'s trainable parameters (groups of
    :func:`~ucdir_core.method.model.param_groups`, each with its ``lr_scale``).

    - ``sgd``: momentum ``sgd_momentum``, weight decay ``weight_decay`` (UCDIR, spec section 3).
    - ``adam``: Adam with AMSGrad, betas (0.9, 0.999), weight decay ``weight_decay`` (ProtoOT's
      released scripts, ``protoot-spec.md`` section 6).
    """
    groups = param_groups(encoder, cfg.backbone_lr_scale)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, betas=(0.9, 0.999), weight_decay=cfg.weight_decay, amsgrad=True)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.sgd_momentum, weight_decay=cfg.weight_decay)
