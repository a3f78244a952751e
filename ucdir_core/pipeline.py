"""From a config to a ready :class:`~ucdir_core.trainer.Trainer`: data, split, input regime, model."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ucdir_core import runs
from ucdir_core.config import UCDIRConfig
from ucdir_core.data import DataError, DomainImages, heldout_split, load_domains, read_split, subsample, write_split
from ucdir_core.model import Encoder
from ucdir_core.pair import DomainPair
from ucdir_core.regimes import build_inputs
from ucdir_core.trainer import Trainer


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


def build_trainer(cfg: UCDIRConfig, run_dir: str | Path, progress: bool = True, allow_unmatched_classes: bool = False,
                  log: Callable[[str], None] = print, init_head: bool = True,
                  read_only: bool = False) -> tuple[Trainer, DomainPair[SplitImages]]:
    """Everything a run needs, from its config. Seeds torch before building the model.

    The input regime (decoded images or a frozen trunk's cached views, :mod:`ucdir_core.regimes`)
    provides the datasets, the trainable module and the query-image transform. ``init_head=False``
    skips the PCA head initialisation (``head_init="pca"``), for a model whose weights are about to
    come from a checkpoint. ``read_only``: write nothing into ``run_dir``.
    """
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    images = load_split_images(cfg, Path(run_dir), allow_unmatched_classes=allow_unmatched_classes, log=log,
                               read_only=read_only)
    inputs = build_inputs(cfg, images, progress)
    torch.manual_seed(cfg.seed)
    encoder = Encoder(inputs.module, inputs.dim, cfg.feature_dim, cfg.mlp, freeze_backbone=cfg.trainable == "head",
                      freeze_bn=cfg.freeze_bn)
    if cfg.head_init == "pca" and init_head:
        from ucdir_core.device import select_device
        from ucdir_core.model import init_head_pca
        from ucdir_core.trainer import embed

        device = select_device(cfg.device)
        feats = [embed(encoder.backbone.to(device), d.train_eval, device, cfg.eval_batch_size, cfg.workers)
                 for d in inputs.domains]
        init_head_pca(encoder, torch.cat(feats).cpu())
    trainer = Trainer(cfg, run_dir, inputs.domains, encoder, progress=progress, log=log, to_input=inputs.to_input)
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
