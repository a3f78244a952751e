"""Evaluate a trained run and retrieve with it (used by ``ucdir evaluate`` and ``ucdir retrieve``)."""

from __future__ import annotations

from pathlib import Path

import torch

from ucdir_core import runs
from ucdir_core.data import DataError
from ucdir_core.images import load_image
from ucdir_core.pipeline import build_trainer
from ucdir_core.trainer import Trainer, embed


def load_run(run_dir: str | Path, which: str = "last", progress: bool = False) -> Trainer:
    """A trainer for ``run_dir`` whose model holds the ``last`` or ``best`` checkpoint.

    Writes nothing into ``run_dir``: it may be read-only.
    """
    run = runs.RunFolder(run_dir)
    cfg = run.config()
    name = {"last": runs.LAST, "best": runs.BEST}.get(which)
    if name is None:
        raise ValueError("which must be 'last' or 'best'")
    path = run.file(name)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint {path}")
    state = runs.load_checkpoint(path)
    trainer, _ = build_trainer(cfg, run_dir, progress=progress, allow_unmatched_classes=True, log=lambda s: None,
                               init_head=False, read_only=True)  # the checkpoint overwrites the head
    trainer.check_checkpoint(state, path)
    trainer.model.load_state_dict(state["model"])
    trainer.epoch = int(state["epoch"])
    return trainer


def evaluate_run(run_dir: str | Path, which: str = "last") -> dict:
    """P@k and mAP of a run's checkpoint on its evaluated images, both directions."""
    trainer = load_run(run_dir, which)
    cfg = trainer.cfg
    return {"run": str(run_dir), "checkpoint": which, "split": cfg.split, "dataset": cfg.dataset,
            "backbone": cfg.backbone, "image_size": cfg.image_size, "seed": cfg.seed,
            "eval": trainer.evaluate()}


def _load_query(path: str | Path):
    """The query image, or a one-line :class:`DataError` if it cannot be decoded (not an image,
    truncated, unreadable, a decompression bomb)."""
    from PIL import Image

    try:
        return load_image(path)
    except (OSError, Image.DecompressionBombError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"query {path} is not a readable image ({reason})") from None


def retrieve(run_dir: str | Path, query_image: str | Path, gallery_domain: str | None = None, top_k: int = 10,
             which: str = "last") -> list[dict]:
    """The ``top_k`` images of ``gallery_domain`` (default: domain B of the run) closest to ``query_image``.

    Returns ``[{"rank", "path", "score"}]`` with cosine similarity scores.
    """
    run = runs.RunFolder(run_dir)
    cfg = run.config()
    domains = list(cfg.domains)
    gallery_domain = gallery_domain or domains[1]
    if gallery_domain not in domains:
        raise DataError(f"gallery domain {gallery_domain!r} is not one of the run's domains {domains}")
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")
    if not Path(query_image).is_file():
        raise FileNotFoundError(f"query image not found: {query_image}")
    query = _load_query(query_image)
    trainer = load_run(run_dir, which)
    side = domains.index(gallery_domain)
    gallery = trainer.inputs[side].test_eval
    enc = trainer.model.encoder_k
    g = embed(enc, gallery, trainer.device, cfg.eval_batch_size, cfg.workers)
    enc.eval()
    with torch.no_grad():
        q = enc(trainer.to_input(query)[None].to(trainer.device))
    scores = (q @ g.t())[0]
    top = scores.topk(min(top_k, scores.numel()))
    return [{"rank": r + 1, "path": gallery.paths[int(i)], "score": float(s)} for r, (s, i) in enumerate(zip(top.values, top.indices))]
