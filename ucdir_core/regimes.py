"""The two input regimes behind one interface: decoded images, or a frozen trunk's cached feature maps.

A regime turns the split images of a pair into what training and evaluation read
(:class:`~ucdir_core.trainer.DomainInputs` per domain), the trainable module that maps one such
input to pooled features, and a function mapping a PIL image to one input (for retrieval with a
query image). The trainer, the notebooks and the benchmarks take a :class:`RegimeInputs` and never
ask which regime made it; :func:`build_inputs` is the one place that chooses.

- :class:`DecodedImages` (``trunk_blocks=None``, the paper's setting): images are decoded and
  augmented on the fly with the spec's transforms; the whole backbone trains.
- :class:`CachedTrunk` (``trunk_blocks=s``): the backbone's stem and first ``s`` stages are frozen
  and run once per cached augmented view (:mod:`ucdir_core.cache`); only the stages above train.
  A deviation from the reference that fits real-image training into a 2-core CPU budget.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Protocol

import torch
from torch import Tensor, nn

from ucdir_core.config import UCDIRConfig
from ucdir_core.pair import DomainPair

if TYPE_CHECKING:  # pragma: no cover
    from ucdir_core.pipeline import SplitImages
    from ucdir_core.trainer import DomainInputs


@dataclass
class RegimeInputs:
    """What a regime provides.

    Attributes:
        domains: both domains' datasets (training views, evaluation views, labels of evaluated images).
        module: the trainable feature extractor, ``(B, *input) -> (B, dim)`` pooled features; the
            MLP head goes on top of it. Untrained, it composes with the inputs to the whole
            pretrained backbone, so its features are the "baseline" row.
        dim: its output size D.
        to_input: a PIL image -> one input ``(*input)`` of ``module`` (evaluation transform).
    """

    domains: DomainPair["DomainInputs"]
    module: nn.Module
    dim: int
    to_input: Callable[[object], Tensor]


class InputRegime(Protocol):
    def build(self, cfg: UCDIRConfig, images: DomainPair["SplitImages"], progress: bool = True) -> RegimeInputs:
        ...


class DecodedImages:
    """Images decoded per step with the spec's training and evaluation transforms; end to end."""

    def build(self, cfg: UCDIRConfig, images: DomainPair["SplitImages"], progress: bool = True) -> RegimeInputs:
        from ucdir_core.backbones import build_backbone
        from ucdir_core.data import EvalImages, TwoViews
        from ucdir_core.images import eval_transform, train_transform
        from ucdir_core.trainer import DomainInputs

        backbone = build_backbone(cfg.backbone, cfg.checkpoint)
        train_tf = train_transform(cfg.image_size, backbone.mean, backbone.std)
        eval_tf = eval_transform(cfg.image_size, cfg.resize_size, backbone.mean, backbone.std)

        def one(s) -> DomainInputs:
            return DomainInputs(TwoViews(s.train.paths, train_tf), EvalImages(s.train.paths, eval_tf),
                                EvalImages(s.test.paths, eval_tf), s.test.labels, s.train is s.test)

        return RegimeInputs(images.map(one), backbone.module, backbone.dim, eval_tf)


class CachedTrunk:
    """The frozen trunk's feature maps of ``cached_views`` augmented views per image, computed once
    and stored in the view cache; the backbone's top (stages ``trunk_blocks`` and up) trains."""

    def build(self, cfg: UCDIRConfig, images: DomainPair["SplitImages"], progress: bool = True) -> RegimeInputs:
        from ucdir_core.cache import (CachedEval, CachedTwoViews, cached_views, compute_views, file_fingerprints,
                                      split_backbone)
        from ucdir_core.device import select_device
        from ucdir_core.images import eval_transform, train_transform
        from ucdir_core.pipeline import default_data_home
        from ucdir_core.trainer import DomainInputs

        trunk, top, bb = split_backbone(cfg.backbone, cfg.trunk_blocks, cfg.checkpoint)
        device = select_device(cfg.device)
        train_tf = train_transform(cfg.image_size, bb.mean, bb.std)
        eval_tf = eval_transform(cfg.image_size, cfg.resize_size, bb.mean, bb.std)
        cache_dir = default_data_home() / "view-cache"
        key = (cfg.backbone, cfg.checkpoint, cfg.trunk_blocks, cfg.image_size, cfg.resize_size)

        def one(s) -> DomainInputs:
            paths = sorted(set(s.train.paths) | set(s.test.paths))
            pos = {p: i for i, p in enumerate(paths)}
            files = (*paths, file_fingerprints(paths))  # sizes and mtimes too: replaced images are not served stale
            views = cached_views(cache_dir, (*key, "train", cfg.cached_views, cfg.cache_seed, *files), lambda: compute_views(
                trunk, paths, train_tf, cfg.cached_views, device, cfg.cache_seed, progress=progress, desc="cache views"))
            evals = cached_views(cache_dir, (*key, "eval", *files), lambda: compute_views(
                trunk, paths, eval_tf, 1, device, 0, progress=progress, desc="cache eval"))[:, 0]
            tr = torch.tensor([pos[p] for p in s.train.paths])
            te = torch.tensor([pos[p] for p in s.test.paths])
            return DomainInputs(CachedTwoViews(views[tr]), CachedEval(evals[tr], s.train.paths),
                                CachedEval(evals[te], s.test.paths), s.test.labels, s.train is s.test)

        @torch.no_grad()
        def to_input(img) -> Tensor:
            return trunk.to(device)(eval_tf(img)[None].to(device))[0].float()

        return RegimeInputs(images.map(one), top, bb.dim, to_input)


def input_regime(cfg: UCDIRConfig) -> InputRegime:
    """The regime ``cfg`` asks for: :class:`CachedTrunk` when ``trunk_blocks`` is set, else :class:`DecodedImages`."""
    return DecodedImages() if cfg.trunk_blocks is None else CachedTrunk()


def build_inputs(cfg: UCDIRConfig, images: DomainPair["SplitImages"], progress: bool = True) -> RegimeInputs:
    """The inputs of ``images`` in the regime ``cfg`` asks for."""
    return input_regime(cfg).build(cfg, images, progress)
