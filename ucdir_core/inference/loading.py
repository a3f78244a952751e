"""A trained run loaded for evaluation and retrieval (used by ``ucdir evaluate``, ``ucdir
retrieve`` and the companion): the key encoder of its ``last`` or ``best`` checkpoint over the
run's data, built without an optimiser and writing nothing into the run folder."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

from ucdir_core.align.params import AlignmentParams
from ucdir_core.align.stage import require_alignment
from ucdir_core.base.device import select_device
from ucdir_core.base.io import load_checkpoint_digest
from ucdir_core.base.pair import DomainPair
from ucdir_core.config.run import RunConfig
from ucdir_core.data.identity import check_identity
from ucdir_core.data.inputs import DomainInputs
from ucdir_core.evaluation.embedding import Embedder
from ucdir_core.inference.query import checkpoint_path
from ucdir_core.models.encoders import MomentumEncoders
from ucdir_core.training import runs
from ucdir_core.training.build import build_parts


@dataclass
class TrainedModel:
    """A run's trained model: its config, the key encoder (the one the reference evaluates) with
    its embeddings of both domains (:class:`~ucdir_core.evaluation.embedding.Embedder`), the
    inputs, the function that turns a query image into an input, the last epoch the
    checkpoint holds (0-based, as in the history and ``summary.json``), and which checkpoint it
    is: ``{"file", "epoch", "digest"}`` (BLAKE2b of the bytes loaded)."""

    cfg: RunConfig
    model: MomentumEncoders
    embedder: Embedder
    inputs: DomainPair[DomainInputs]
    to_input: Callable[[Any], Tensor]
    device: torch.device
    epoch: int
    checkpoint: dict[str, Any] = field(default_factory=dict)

    def evaluate(self) -> dict[str, dict[str, float]]:
        """P@k and mAP in both directions on the run's evaluated images."""
        return self.embedder.evaluate()

    def aligned(self, params: AlignmentParams) -> dict[str, Any]:
        """The evaluation after the alignment stage ``params`` names, fitted now on the run's training
        embeddings (no label read; nothing written): see
        :meth:`~ucdir_core.evaluation.embedding.Embedder.aligned`."""
        return self.embedder.aligned(self.embedder.fit_alignment(params))


def load_trained(run_dir: str | Path, which: str = "last", progress: bool = False) -> TrainedModel:
    """The model of ``run_dir``'s ``last`` or ``best`` checkpoint. Writes nothing into ``run_dir``:
    it may be read-only.

    Raises:
        ValueError: ``which`` is neither ``last`` nor ``best``.
        FileNotFoundError: no run or no such checkpoint.
        RunError: a checkpoint that is unreadable, or written under another config or for other data.
        RunError: the run's files changed since it was trained (named).
    """
    run = runs.RunFolder(run_dir)
    cfg = run.config()
    path = checkpoint_path(run, which)
    state, digest = load_checkpoint_digest(path)
    parts = build_parts(cfg, run_dir, progress=progress, allow_unmatched_classes=True, log=lambda s: None,
                        init_head=False, read_only=True)  # the checkpoint overwrites the head
    check_identity(run.identity(), parts.identity, str(run.file(runs.DATASET)))
    device = select_device(cfg.device)
    inputs = parts.inputs.domains
    model = MomentumEncoders(parts.encoder, inputs.map(lambda d: len(d.train_eval)), dim=cfg.feature_dim,
                             key_bn_splits=cfg.key_bn_splits).to(device)
    runs.check_checkpoint(state, path, cfg, {"bank_a": model.bank_a.shape[0], "bank_b": model.bank_b.shape[0]}, run)
    model.load_state_dict(state["model"])
    model.eval()
    embedder = Embedder(cfg, inputs, model.encoder_k, device, progress)
    epoch = runs.checkpoint_epoch(state)
    return TrainedModel(cfg, model, embedder, inputs, parts.inputs.to_input, device, epoch,
                        {"file": path.name, "epoch": epoch, "digest": digest})


def evaluate_run(run_dir: str | Path, which: str = "last", align: str | None = None) -> dict:
    """P@k and mAP of a run's checkpoint on its evaluated images, both directions, with how they
    were obtained (dataset, split, backbone, resolution, seed, method, checkpoint).

    With ``align`` (``none``, ``centred``, ``harmony``), also ``aligned``: the same after that
    alignment stage, fitted now on the run's training embeddings (the run's own alignment settings
    when it was trained with this alignment, the defaults otherwise); nothing is written, so a
    read-only run folder works.

    Raises:
        ValueError: an unknown alignment.
    """
    if align is not None:
        require_alignment(AlignmentParams(alignment=align))
    trained = load_trained(run_dir, which)
    cfg = trained.cfg
    out = {"run": str(run_dir), "checkpoint": which, "epoch": trained.epoch, "split": cfg.split,
           "dataset": cfg.dataset, "method": cfg.method, "backbone": cfg.backbone, "image_size": cfg.image_size,
           "seed": cfg.seed, "eval": trained.evaluate()}
    if align is not None:
        own = cfg.alignment_params
        out["aligned"] = trained.aligned(own if own.alignment == align else AlignmentParams(alignment=align))
    return out
