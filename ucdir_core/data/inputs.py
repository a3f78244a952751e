"""The two input pipelines behind one interface: decoded images, or a frozen trunk's cached feature maps.

An input pipeline turns the split images of a pair into what training and evaluation read
(:class:`DomainInputs` per domain), the trainable module that maps one such input to pooled
features, and a function mapping a PIL image to one input (for retrieval with a query image).
Its :class:`QueryInputs` (the module, the evaluation transform and, for the cached trunk, the
frozen trunk) are built from the config alone, without any dataset: what embedding a new image
needs (``ucdir retrieve``, ``ucdir index --gallery``). The trainer, the notebooks and the
benchmarks take a :class:`PipelineInputs` and never ask which pipeline made it;
:func:`build_inputs` and :func:`query_inputs` are the places that choose.

- :class:`DecodedImages` (``trunk_blocks=None``, the paper's setting): images are decoded and
  augmented on the fly with the spec's transforms; the whole backbone trains.
- :class:`CachedTrunk` (``trunk_blocks=s``): the backbone's stem and first ``s`` stages are frozen
  and run once per cached augmented view (:mod:`ucdir_core.data.cache`); only the stages above
  train. A deviation from the reference that fits real-image training into a 2-core CPU budget.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from ucdir_core.base.device import select_device
from ucdir_core.base.pair import DomainPair
from ucdir_core.config.run import RunConfig
from ucdir_core.data.cache import (CachedEval, CachedTwoViews, cached_views, compute_views, file_fingerprints,
                                   split_backbone)
from ucdir_core.data.images import eval_transform, train_transform
from ucdir_core.data.locations import default_data_home
from ucdir_core.data.splits import SplitImages
from ucdir_core.data.views import EvalImages, TwoViews
from ucdir_core.models.backbones import build_backbone


@dataclass
class DomainInputs:
    """What the trainer reads of one domain.

    ``train_views[i]`` -> (view1, view2, i) for training image i; ``train_eval[i]`` -> (x, i), its
    evaluation view; ``test_eval[j]`` -> (x, j) for evaluated image j, whose label is
    ``test_labels[j]``. With ``test_is_train`` (the full split) both sets are the same images.
    """

    train_views: Dataset
    train_eval: Dataset
    test_eval: Dataset
    test_labels: np.ndarray
    test_is_train: bool


@dataclass
class QueryInputs:
    """What embedding a new image needs of a pipeline, built from the config alone (no dataset).

    Attributes:
        module: the trainable feature extractor, ``(B, *input) -> (B, dim)``, as
            :attr:`PipelineInputs.module` (its trained weights come from a checkpoint).
        dim: its output size D.
        transform: a PIL image -> ``(3, H, W)`` tensor (the evaluation transform).
        trunk: the frozen trunk, ``(B, 3, H, W) -> (B, *input)``, that turns transformed images into
            inputs of ``module`` (:class:`CachedTrunk`); None when the module takes images.
    """

    module: nn.Module
    dim: int
    transform: Callable[[object], Tensor]
    trunk: nn.Module | None

    @torch.no_grad()
    def to_inputs(self, images: Tensor) -> Tensor:
        """Transformed images as inputs of :attr:`module`, on ``images``' device.

        Shape:
            (B, 3, H, W) -> (B, *input), float32.
        """
        if self.trunk is None:
            return images
        return self.trunk.to(images.device)(images).float()

    def to_input(self, img) -> Tensor:
        """A PIL image -> one input ``(*input)`` of :attr:`module`, on the CPU."""
        return self.to_inputs(self.transform(img)[None])[0]


@dataclass
class PipelineInputs:
    """What an input pipeline provides.

    Attributes:
        domains: both domains' datasets (training views, evaluation views, labels of evaluated images).
        module: the trainable feature extractor, ``(B, *input) -> (B, dim)`` pooled features; the
            MLP head goes on top of it. Untrained, it composes with the inputs to the whole
            pretrained backbone, so its features are the "baseline" row.
        dim: its output size D.
        to_input: a PIL image -> one input ``(*input)`` of ``module`` (evaluation transform).
    """

    domains: DomainPair[DomainInputs]
    module: nn.Module
    dim: int
    to_input: Callable[[object], Tensor]


class InputPipeline(Protocol):
    def query(self, cfg: RunConfig) -> QueryInputs:
        ...

    def build(self, cfg: RunConfig, images: DomainPair[SplitImages], progress: bool = True) -> PipelineInputs:
        ...


class DecodedImages:
    """Images decoded per step with the spec's training and evaluation transforms; end to end."""

    def query(self, cfg: RunConfig) -> QueryInputs:
        """The whole backbone as the module; inputs are transformed images."""
        backbone = build_backbone(cfg.backbone, cfg.checkpoint)
        return QueryInputs(backbone.module, backbone.dim,
                           eval_transform(cfg.image_size, cfg.resize_size, backbone.mean, backbone.std), None)

    def build(self, cfg: RunConfig, images: DomainPair[SplitImages], progress: bool = True) -> PipelineInputs:
        backbone = build_backbone(cfg.backbone, cfg.checkpoint)
        train_tf = train_transform(cfg.image_size, backbone.mean, backbone.std)
        eval_tf = eval_transform(cfg.image_size, cfg.resize_size, backbone.mean, backbone.std)

        def one(s: SplitImages) -> DomainInputs:
            return DomainInputs(TwoViews(s.train.paths, train_tf), EvalImages(s.train.paths, eval_tf),
                                EvalImages(s.test.paths, eval_tf), s.test.labels, s.train is s.test)

        return PipelineInputs(images.map(one), backbone.module, backbone.dim, eval_tf)


class CachedTrunk:
    """The frozen trunk's feature maps of ``cached_views`` augmented views per image, computed once
    and stored in the view cache; the backbone's top (stages ``trunk_blocks`` and up) trains."""

    def query(self, cfg: RunConfig) -> QueryInputs:
        """The backbone's top as the module; inputs are the frozen trunk's float32 feature maps of
        transformed images (the cache keeps them as float16)."""
        trunk, top, bb = split_backbone(cfg.backbone, cfg.trunk_blocks, cfg.checkpoint)
        return QueryInputs(top, bb.dim, eval_transform(cfg.image_size, cfg.resize_size, bb.mean, bb.std), trunk)

    def build(self, cfg: RunConfig, images: DomainPair[SplitImages], progress: bool = True) -> PipelineInputs:
        trunk, top, bb = split_backbone(cfg.backbone, cfg.trunk_blocks, cfg.checkpoint)
        device = select_device(cfg.device)
        train_tf = train_transform(cfg.image_size, bb.mean, bb.std)
        eval_tf = eval_transform(cfg.image_size, cfg.resize_size, bb.mean, bb.std)
        cache_dir = default_data_home() / "view-cache"
        key = (cfg.backbone, cfg.checkpoint, cfg.trunk_blocks, cfg.image_size, cfg.resize_size)

        def one(s: SplitImages) -> DomainInputs:
            paths = sorted(set(s.train.paths) | set(s.test.paths))
            pos = {p: i for i, p in enumerate(paths)}
            files = (len(paths), file_fingerprints(paths))  # names and bytes: replaced images are not served stale
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

        return PipelineInputs(images.map(one), top, bb.dim, to_input)


def input_pipeline(cfg: RunConfig) -> InputPipeline:
    """The pipeline ``cfg`` asks for: :class:`CachedTrunk` when ``trunk_blocks`` is set, else :class:`DecodedImages`."""
    return DecodedImages() if cfg.trunk_blocks is None else CachedTrunk()


def query_inputs(cfg: RunConfig) -> QueryInputs:
    """What embedding a new image needs under ``cfg``'s pipeline (:class:`QueryInputs`), without data."""
    return input_pipeline(cfg).query(cfg)


def build_inputs(cfg: RunConfig, images: DomainPair[SplitImages], progress: bool = True) -> PipelineInputs:
    """The inputs of ``images`` through the pipeline ``cfg`` asks for."""
    return input_pipeline(cfg).build(cfg, images, progress)
