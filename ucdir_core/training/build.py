"""From a config to a ready :class:`~ucdir_core.training.trainer.Trainer`: data, split, input
pipeline, encoder; and :func:`train`, one locked run, which ends by writing the run's gallery
indexes (:mod:`ucdir_core.evaluation.index`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from ucdir_core.align.stage import require_alignment
from ucdir_core.base import distributed as D
from ucdir_core.base.device import select_device
from ucdir_core.base.errors import RunError
from ucdir_core.base.io import file_digest
from ucdir_core.base.pair import DomainPair
from ucdir_core.base.seeding import seed_model_init
from ucdir_core.config.run import RESUMABLE_KEYS, RunConfig, config_differences
from ucdir_core.data.identity import dataset_identity
from ucdir_core.data.inputs import PipelineInputs, build_inputs
from ucdir_core.data.loader import epoch_batch_size
from ucdir_core.data.locations import resolve_root
from ucdir_core.data.splits import SplitImages, load_split_images
from ucdir_core.evaluation.embedding import embed
from ucdir_core.evaluation.index import write_domain_indexes
from ucdir_core.method.params import TITLES
from ucdir_core.method.registry import build_method
from ucdir_core.models.encoders import Encoder, init_head_pca
from ucdir_core.training import runs
from ucdir_core.training.trainer import Trainer


@dataclass
class ModelParts:
    """What a model is built from: the split images, the input pipeline's inputs, the query encoder
    (backbone part and head) before any training, and the dataset's identity."""

    images: DomainPair[SplitImages]
    inputs: PipelineInputs
    encoder: Encoder
    identity: dict


def build_parts(cfg: RunConfig, run_dir: str | Path | None = None, progress: bool = True,
                allow_unmatched_classes: bool = False, log: Callable[[str], None] = print, init_head: bool = True,
                read_only: bool = False) -> ModelParts:
    """The images, inputs and encoder of ``cfg``. Seeds torch before building the encoder.

    The held-out split is read from ``run_dir/split.json`` when present, and otherwise written
    there (unless ``read_only``); so is the data check's manifest. ``init_head=False`` skips the
    PCA head initialisation (``head_init="pca"``), for a model whose weights are about to come
    from a checkpoint.
    """
    seed_model_init(cfg.seed)
    run = runs.RunFolder(run_dir) if run_dir is not None else None
    split = run.file(runs.SPLIT) if run is not None and (not read_only or run.file(runs.SPLIT).exists()) else None
    manifest = run.file(runs.MANIFEST) if run is not None and not read_only else None
    images = load_split_images(cfg, split, manifest, allow_unmatched_classes=allow_unmatched_classes, log=log,
                               before_writing=lambda imgs: epoch_batch_size(cfg, max(len(s.train) for s in imgs)
                                                                            // D.world_size()))
    log(f"{sum(len(s.train) for s in images)} training images; recording the dataset's files (size and digest)")
    identity = dataset_identity(images, resolve_root(cfg))
    if cfg.trunk_blocks is not None:
        log(f"caching {cfg.cached_views} augmented views of every image through the frozen trunk (computed once, "
            "then read back from the view cache)")
    inputs = build_inputs(cfg, images, progress)
    seed_model_init(cfg.seed)
    encoder = Encoder(inputs.module, inputs.dim, cfg.feature_dim, cfg.mlp, freeze_backbone=cfg.trainable == "head",
                      freeze_bn=cfg.freeze_bn)
    if cfg.head_init == "pca" and init_head:
        log("initialising the projection head with the principal components of the backbone's features")
        device = select_device(cfg.device)
        feats = [embed(encoder.backbone.to(device), d.train_eval, device, cfg.eval_batch_size, cfg.workers)
                 for d in inputs.domains]
        init_head_pca(encoder, torch.cat(feats).cpu())
    return ModelParts(images, inputs, encoder, identity)


def build_trainer(cfg: RunConfig, run_dir: str | Path, progress: bool = True, allow_unmatched_classes: bool = False,
                  log: Callable[[str], None] = print, init_head: bool = True
                  ) -> tuple[Trainer, DomainPair[SplitImages]]:
    """A trainer for ``cfg`` in ``run_dir`` (:func:`build_parts`, then the model, method and optimiser)."""
    parts = build_parts(cfg, run_dir, progress, allow_unmatched_classes, log, init_head)
    trainer = Trainer(cfg, run_dir, parts.inputs.domains, parts.encoder, progress=progress, log=log,
                      identity=parts.identity)
    return trainer, parts.images


def train(cfg: RunConfig, run_dir: str | Path, resume: bool = False, progress: bool = True,
          allow_unmatched_classes: bool = False, command: list[str] | None = None,
          log: Callable[[str], None] = print, overwrite: bool = False) -> list[dict]:
    """Train one run (or resume it); returns the history rows.

    The run folder is locked for the whole run (a second writer is refused). A folder that already
    holds a run is refused unless ``resume`` (continue it) or ``overwrite`` (delete its files first).
    When training ends, process 0 writes each domain's gallery index of ``last.pt``
    (``RUN/index/<domain>/``, :func:`write_indexes`), still under the lock.

    Raises:
        ValueError: an alignment stage whose package is not installed, or method settings the method
            refuses (a term that never switches on in ``cfg.epochs``), both before the folder is
            touched or any data read.
    """
    require_alignment(cfg.alignment_params)  # before the run folder is touched ...
    build_method(cfg.method_params, cfg.num_clusters, cfg.epochs)  # ... and before any data is read: its refusals
    with runs.RunFolder(run_dir).claim(resume, overwrite):
        return _train(cfg, run_dir, resume, progress, allow_unmatched_classes, command, log)


def _train(cfg: RunConfig, run_dir: str | Path, resume: bool, progress: bool, allow_unmatched_classes: bool,
           command: list[str] | None, log: Callable[[str], None]) -> list[dict]:
    run = runs.RunFolder(run_dir)
    if resume and run.exists():
        saved = run.config()
        changed = config_differences(saved.to_dict(), cfg)
        fixed = [k for k in changed if k not in RESUMABLE_KEYS]
        if fixed:
            raise RunError(f"a resumed run keeps its config: {', '.join(fixed)} cannot change in {run.path} (only "
                           f"{', '.join(RESUMABLE_KEYS)} can); start a new run folder to train with other values")
        if changed:
            old, new = saved.flat(resolved=True), cfg.flat(resolved=True)
            log("resuming with " + ", ".join(f"{k} {old[k]} -> {new[k]}" for k in changed))
    resuming = resume and run.has_checkpoint()  # weights come from last.pt (or prev.pt)
    log(f"{'resuming' if resuming else 'training'} {TITLES.get(cfg.method, cfg.method)} on {cfg.domains[0]} and "
        f"{cfg.domains[1]} of {cfg.root or 'the embedded ' + cfg.dataset} (split {cfg.split}), {cfg.epochs} epochs, "
        f"{cfg.backbone} at {cfg.image_size} px, into {run.path}")
    trainer, _ = build_trainer(cfg, run_dir, progress, allow_unmatched_classes, log, init_head=not resuming)
    history = trainer.fit(resume=resume, command=command)
    if D.is_main():
        write_indexes(trainer, log)
    return history


def write_indexes(trainer: Trainer, log: Callable[[str], None] = print) -> None:
    """Each domain's gallery index of the trained run (``RUN/index/<domain>/``): its evaluated
    images embedded by the key encoder ``last.pt`` holds (the trainer's, at the end of ``fit``),
    corrected by the run's alignment stage when it has one (``alignment.npz``), as
    ``ucdir retrieve`` searches them and ``ucdir index RUN`` would write them. Process 0, under the
    run folder's lock."""
    run = trainer.run
    last = run.file(runs.LAST)
    if not last.exists():
        return
    cfg = trainer.cfg
    embeddings = [e.float().cpu().numpy() for e in trainer.embedder.test_embeddings()]
    checkpoint = {"file": runs.LAST, "epoch": trainer.next_epoch - 1, "digest": file_digest(last)}
    stage, record = run.alignment_stage()  # fitted for last.pt
    if stage is not None:
        embeddings = [stage.apply(e, side) for side, e in enumerate(embeddings)]
    written = write_domain_indexes(run.path, cfg.domains, embeddings, [d.test_eval.paths for d in trainer.inputs],
                                   resolve_root(cfg), checkpoint, alignment=record)
    log("gallery indexes: " + ", ".join(f"{run.path / runs.INDEX / g.meta['name']} ({g.meta['count']} images)"
                                        for g in written))
