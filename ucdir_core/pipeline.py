"""From a config to a ready :class:`~ucdir_core.trainer.Trainer`: data, split, backbone, inputs."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ucdir_core import runs
from ucdir_core.backbones import Backbone, build_backbone
from ucdir_core.config import UCDIRConfig
from ucdir_core.data import (DataError, DomainImages, EvalImages, TwoViews, heldout_split, load_domains, read_split,
                             subsample, write_split)
from ucdir_core.images import eval_transform, train_transform
from ucdir_core.model import Encoder
from ucdir_core.pair import DomainPair
from ucdir_core.trainer import DomainInputs, Trainer


def default_data_home() -> Path:
    """Where built-in data is written: ``$UCDIR_DATA`` or ``~/.cache/ucdir``."""
    return Path(os.environ.get("UCDIR_DATA", Path.home() / ".cache" / "ucdir"))


def resolve_root(cfg: UCDIRConfig) -> Path:
    """The dataset root; for ``dataset="digits"`` without a root, the embedded digits (built once)."""
    if cfg.root is not None:
        return Path(cfg.root)
    if cfg.dataset == "digits":
        from ucdir_core.digits import build_digits

        return build_digits(default_data_home() / "digits-seed0", seed=0)
    raise DataError(f"dataset {cfg.dataset!r} needs root=PATH (see `ucdir data prepare {cfg.dataset} --root DIR`)")


@dataclass
class SplitImages:
    """Training and evaluated images of one domain (the same object under the full split)."""

    train: DomainImages
    test: DomainImages


def load_split_images(cfg: UCDIRConfig, run_dir: Path | None = None, allow_unmatched_classes: bool = False,
                      check: bool = True, log: Callable[[str], None] = print,
                      read_only: bool = False) -> DomainPair[SplitImages]:
    """Scan, check (broken files are skipped, counted and listed in the manifest), subsample and split.

    The held-out split is written to ``run_dir/split.json`` and read back from there on resume.
    ``read_only``: write nothing into ``run_dir`` (evaluation and retrieval).
    """
    from ucdir_core.datacheck import check_dataset
    from ucdir_core.datasets import BENCHMARKS

    root = resolve_root(cfg)
    # DomainNet's folders hold 345 classes; the benchmark uses its 7-class subset
    classes = BENCHMARKS["domainnet"].classes if cfg.dataset == "domainnet" else None
    bad: set[str] = set()
    if check:
        report = check_dataset(root, cfg.domains, classes=classes, progress=False)
        bad = report.bad_files
        if bad:
            log(f"warning: skipping {len(bad)} broken files (listed in {runs.MANIFEST})")
        if run_dir is not None and not read_only:
            Path(run_dir).mkdir(parents=True, exist_ok=True)
            runs.write_json(Path(run_dir) / runs.MANIFEST, report.to_dict())
    images = load_domains(root, cfg.domains, classes=classes, bad_files=bad,
                          allow_unmatched_classes=allow_unmatched_classes)
    images = DomainPair(*(subsample(d, cfg.max_images_per_domain, cfg.seed) for d in images))
    if cfg.split == "full":
        return images.map(lambda d: SplitImages(d, d))
    split_path = Path(run_dir) / runs.SPLIT if run_dir is not None else None
    if split_path is not None and split_path.exists():
        saved = read_split(split_path)
        out = []
        for d in images:
            pos = {p: i for i, p in enumerate(d.paths)}
            missing = [p for p in saved[d.name]["train"] + saved[d.name]["test"] if p not in pos]
            if missing:
                raise DataError(f"{len(missing)} files of the saved split are gone, e.g. {missing[0]}")
            out.append(SplitImages(d.subset([pos[p] for p in saved[d.name]["train"]]),
                                   d.subset([pos[p] for p in saved[d.name]["test"]])))
        return DomainPair(*out)
    out, record = [], {}
    for d in images:
        tr, te = heldout_split(d.labels, cfg.heldout_fraction, cfg.split_seed)
        out.append(SplitImages(d.subset(tr), d.subset(te)))
        record[d.name] = {"train": out[-1].train.paths, "test": out[-1].test.paths}
    if split_path is not None and not read_only:
        write_split(split_path, record)
    return DomainPair(*out)


def image_inputs(cfg: UCDIRConfig, images: DomainPair[SplitImages], backbone: Backbone) -> DomainPair[DomainInputs]:
    """Datasets decoding images with the spec's training and evaluation transforms."""
    train_tf = train_transform(cfg.image_size, backbone.mean, backbone.std)
    eval_tf = eval_transform(cfg.image_size, cfg.resize_size, backbone.mean, backbone.std)

    def build(s: SplitImages) -> DomainInputs:
        same = s.train is s.test
        return DomainInputs(TwoViews(s.train.paths, train_tf), EvalImages(s.train.paths, eval_tf),
                            EvalImages(s.test.paths, eval_tf), s.test.labels, same)

    return images.map(build)


def cached_inputs(cfg: UCDIRConfig, images: DomainPair[SplitImages], progress: bool = True):
    """Inputs of the frozen-trunk regime (see :mod:`ucdir_core.cache`), the trainable top, and a
    function mapping a PIL image to the top's input."""
    from ucdir_core.cache import (CachedEval, CachedTwoViews, cached_views, compute_views, file_fingerprints,
                                  split_backbone)
    from ucdir_core.device import select_device

    trunk, top, bb = split_backbone(cfg.backbone, cfg.trunk_blocks, cfg.checkpoint)
    device = select_device(cfg.device)
    train_tf = train_transform(cfg.image_size, bb.mean, bb.std)
    eval_tf = eval_transform(cfg.image_size, cfg.resize_size, bb.mean, bb.std)
    cache_dir = default_data_home() / "view-cache"
    key = (cfg.backbone, cfg.checkpoint, cfg.trunk_blocks, cfg.image_size, cfg.resize_size)

    def build(s: SplitImages) -> DomainInputs:
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
    def to_input(img):
        return trunk.to(device)(eval_tf(img)[None].to(device))[0].float()

    return images.map(build), top, bb.dim, to_input


def build_encoder(cfg: UCDIRConfig, backbone: Backbone | None = None) -> Encoder:
    backbone = backbone or build_backbone(cfg.backbone, cfg.checkpoint)
    return Encoder(backbone.module, backbone.dim, cfg.feature_dim, cfg.mlp, freeze_backbone=cfg.trainable == "head",
                   freeze_bn=cfg.freeze_bn)


def build_trainer(cfg: UCDIRConfig, run_dir: str | Path, progress: bool = True, allow_unmatched_classes: bool = False,
                  log: Callable[[str], None] = print, init_head: bool = True,
                  read_only: bool = False) -> tuple[Trainer, DomainPair[SplitImages]]:
    """Everything a run needs, from its config. Seeds torch before building the model.

    ``init_head=False`` skips the PCA head initialisation (``head_init="pca"``), for a model whose
    weights are about to come from a checkpoint. ``read_only``: write nothing into ``run_dir``.
    """
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    images = load_split_images(cfg, Path(run_dir), allow_unmatched_classes=allow_unmatched_classes, log=log,
                               read_only=read_only)
    if cfg.trunk_blocks is not None:
        inputs, top, dim, to_input = cached_inputs(cfg, images, progress)
        torch.manual_seed(cfg.seed)
        encoder = Encoder(top, dim, cfg.feature_dim, cfg.mlp, freeze_backbone=cfg.trainable == "head",
                          freeze_bn=cfg.freeze_bn)
    else:
        backbone = build_backbone(cfg.backbone, cfg.checkpoint)
        inputs = image_inputs(cfg, images, backbone)
        torch.manual_seed(cfg.seed)
        encoder = build_encoder(cfg, backbone)
        eval_tf = inputs.a.test_eval.transform

        def to_input(img):
            return eval_tf(img)

    if cfg.head_init == "pca" and init_head:
        from ucdir_core.model import init_head_pca
        from ucdir_core.device import select_device
        from ucdir_core.trainer import embed

        device = select_device(cfg.device)
        feats = [embed(encoder.backbone.to(device), d.train_eval, device, cfg.eval_batch_size, cfg.workers)
                 for d in inputs]
        init_head_pca(encoder, torch.cat(feats).cpu())
    trainer = Trainer(cfg, run_dir, inputs, encoder, progress=progress, log=log)
    trainer.to_input = to_input  # PIL image -> one model input (used by retrieval)
    return trainer, images


def train(cfg: UCDIRConfig, run_dir: str | Path, resume: bool = False, progress: bool = True,
          allow_unmatched_classes: bool = False, command: list[str] | None = None,
          log: Callable[[str], None] = print, overwrite: bool = False) -> list[dict]:
    """Train one run (or resume it); returns the history rows.

    The run folder is locked for the whole run (a second writer is refused). A folder that already
    holds a run is refused unless ``resume`` (continue it) or ``overwrite`` (delete its files first).
    """
    with runs.RunFolder(run_dir).claim(resume, overwrite):
        return _train(cfg, run_dir, resume, progress, allow_unmatched_classes, command, log)


def _train(cfg: UCDIRConfig, run_dir: str | Path, resume: bool, progress: bool, allow_unmatched_classes: bool,
           command: list[str] | None, log: Callable[[str], None]) -> list[dict]:
    run = runs.RunFolder(run_dir)
    if resume and run.exists():
        saved = run.config()
        if saved != cfg:
            warnings.warn("resuming with the run folder's saved config; the given config is ignored", stacklevel=3)
        cfg = saved
    resuming = resume and run.has_checkpoint()  # weights come from last.pt (or prev.pt)
    trainer, _ = build_trainer(cfg, run_dir, progress, allow_unmatched_classes, log, init_head=not resuming)
    return trainer.fit(resume=resume, command=command)
