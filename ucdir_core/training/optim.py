"""The optimisation of a run, shared by every method: the optimiser the config names (UCDIR: SGD;
ProtoOT: Adam with AMSGrad), its learning-rate schedule, mixed precision and the finiteness check
of the gradients."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ucdir_core.config.run import RunConfig
from ucdir_core.models.encoders import Encoder, param_groups
from ucdir_core.training.schedules import lr_schedule


def build_optimizer(cfg: RunConfig, encoder: Encoder) -> torch.optim.Optimizer:
    """``cfg.optimizer`` over ``encoder``'s trainable parameters (groups of
    :func:`~ucdir_core.models.encoders.param_groups`, each with its ``lr_scale``).

    - ``sgd``: momentum ``sgd_momentum``, weight decay ``weight_decay`` (UCDIR, spec section 3).
    - ``adam``: Adam with AMSGrad, betas (0.9, 0.999), weight decay ``weight_decay`` (ProtoOT's
      released scripts, ``protoot-spec.md`` section 6).
    """
    groups = param_groups(encoder, cfg.backbone_lr_scale)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, betas=(0.9, 0.999), weight_decay=cfg.weight_decay, amsgrad=True)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.sgd_momentum, weight_decay=cfg.weight_decay)


class Optimisation:
    """The optimiser over ``encoder``, the per-epoch learning rate and the (CUDA-only) gradient scaler.

    Args:
        cfg: the run's config (``optimizer``, ``lr``, ``lr_schedule``, ``amp`` and the optimiser's keys).
        encoder: the query encoder whose trainable parameters are optimised.
        device: where training runs; mixed precision only takes effect on CUDA.
    """

    def __init__(self, cfg: RunConfig, encoder: Encoder, device: torch.device):
        self.optimizer = build_optimizer(cfg, encoder)
        self.lr = lr_schedule(cfg)
        self.use_amp = bool(cfg.amp and device.type == "cuda")
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)

    def set_lr(self, epoch: int) -> float:
        """Set every parameter group's lr for ``epoch`` (the schedule's value times the group's scale)."""
        lr = self.lr(epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)  # absent in checkpoints older than the key
        return lr

    def backward(self, loss: Tensor) -> bool:
        """Gradients of ``loss``; False (and no step) when a gradient is not finite."""
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if not self.use_amp and not finite_gradients(self.optimizer):  # AMP skips such steps by design
            return False
        return True

    def step(self) -> None:
        self.scaler.step(self.optimizer)
        self.scaler.update()

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])


def finite_gradients(optimizer: torch.optim.Optimizer) -> bool:
    """Whether every gradient is finite: one fused norm over all of them (non-finite if any entry is)."""
    grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
    return not grads or bool(torch.isfinite(torch.nn.utils.get_total_norm(grads)))
