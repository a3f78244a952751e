"""What embedding a new image needs, and nothing more: a run's config, its checkpoint's key encoder
and the evaluation transform (through the frozen trunk under the cached-trunk pipeline). No dataset
is scanned or hashed and no optimiser is built; nothing is written (``ucdir retrieve``, ``ucdir
index --gallery``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ucdir_core.align.stage import AlignmentModel
from ucdir_core.base.device import select_device
from ucdir_core.base.errors import DataError, RunError
from ucdir_core.base.io import load_checkpoint_digest
from ucdir_core.config.run import RunConfig
from ucdir_core.data.images import is_image_name, load_image
from ucdir_core.data.inputs import QueryInputs, query_inputs
from ucdir_core.models.encoders import Encoder
from ucdir_core.training import runs

#: the checkpoint files of ``--which last`` and ``--which best``
CHECKPOINTS = {"last": runs.LAST, "best": runs.BEST}


def checkpoint_path(run: runs.RunFolder, which: str) -> Path:
    """The checkpoint file ``which`` (``last`` or ``best``) of ``run``.

    Raises:
        ValueError: ``which`` is neither.
        FileNotFoundError: the run has no such checkpoint.
    """
    name = CHECKPOINTS.get(which)
    if name is None:
        raise ValueError("which must be 'last' or 'best'")
    path = run.file(name)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint {path}")
    return path


def run_alignment_model(run: runs.RunFolder, which: str) -> tuple[AlignmentModel | None, dict | None, str | None]:
    """The alignment stage that goes with checkpoint ``which`` of a run trained with one
    (``--set alignment=harmony``): ``(model, {"alignment", "file", "digest"}, None)``; otherwise
    ``(None, None, why)``, ``why`` None when the run has no alignment stage. The stage kept in the
    run folder (``alignment.npz``) was fitted on the last epoch's training embeddings: it goes with
    ``last``; ``best`` of an earlier epoch is used without it (``why`` says so).

    Raises:
        RunError: an ``alignment.npz`` that is not an alignment model (one line naming it).
    """
    name = run.config().alignment_params.alignment
    if name == "none":
        return None, None, None
    if not run.file(runs.ALIGNMENT).is_file():
        return None, None, (f"the run was trained with alignment={name} but has no {runs.ALIGNMENT} (it is written "
                            "when training ends)")
    if which != "last":
        return None, None, f"its {runs.ALIGNMENT} was fitted for {runs.LAST}, not {CHECKPOINTS.get(which, which)}"
    return (*run.alignment_stage(), None)


@dataclass
class QueryModel:
    """A run's key encoder (the one the reference evaluates and galleries are embedded with), in
    eval mode, with the inputs it takes and which checkpoint it comes from: ``{"file", "epoch"
    (0-based, as in the history), "digest" (BLAKE2b of the checkpoint's bytes)}``; and the run's
    alignment stage when it has one for this checkpoint (:func:`run_alignment_model`: the model,
    its record ``{"alignment", "file", "digest"}``, or why it is not used)."""

    cfg: RunConfig
    encoder: Encoder
    inputs: QueryInputs
    device: torch.device
    checkpoint: dict[str, Any]
    alignment: AlignmentModel | None = None
    alignment_record: dict[str, Any] | None = None
    alignment_note: str | None = None

    def align(self, embeddings: np.ndarray, domain: str) -> np.ndarray:
        """``embeddings`` of images of the run's domain ``domain`` corrected by the run's alignment
        stage (unchanged without one).

        Shape:
            (n, dim) -> (n, dim) float32.
        """
        if self.alignment is None or len(embeddings) == 0:
            return embeddings
        return self.alignment.apply(embeddings, list(self.cfg.domains).index(domain))

    @torch.no_grad()
    def embed_images(self, images: Sequence[Any], batch_size: int | None = None) -> np.ndarray:
        """Embeddings of PIL ``images``, in order.

        Shape:
            -> (len(images), dim) float32, unit rows.
        """
        batch_size = batch_size or self.cfg.eval_batch_size
        out = [self._embed(torch.stack([self.inputs.transform(img) for img in images[i:i + batch_size]]))
               for i in range(0, len(images), batch_size)]
        return np.concatenate(out) if out else np.zeros((0, self.cfg.feature_dim), np.float32)

    @torch.no_grad()
    def embed_files(self, paths: Sequence[str], progress: bool = False,
                    log: Callable[[str], None] = print) -> tuple[np.ndarray, list[str], list[str]]:
        """Embeddings of the image files ``paths``, decoded in ``cfg.workers`` processes: (embeddings,
        the paths embedded, the paths skipped as no readable image, each listed in one line to ``log``).

        Shape:
            -> (n kept, dim) float32, unit rows.
        """
        from tqdm.auto import tqdm

        shape = (3, self.cfg.image_size, self.cfg.image_size)  # the evaluation view's (centre crop)
        loader = DataLoader(_Transformed(list(paths), self.inputs.transform, shape),
                            batch_size=self.cfg.eval_batch_size, num_workers=self.cfg.workers)
        out, kept, skipped = [], [], []
        for x, ok, idx in tqdm(loader, desc="embed gallery", disable=not progress, leave=False):
            for i, good in zip(idx.tolist(), ok.tolist()):
                (kept if good else skipped).append(paths[i])
            if ok.any():
                out.append(self._embed(x[ok]))
        for p in skipped:
            log(f"skipped {p}: not a readable image")
        return (np.concatenate(out) if out else np.zeros((0, self.cfg.feature_dim), np.float32)), kept, skipped

    def _embed(self, images: torch.Tensor) -> np.ndarray:
        z = self.encoder(self.inputs.to_inputs(images.to(self.device)))
        return z.float().cpu().numpy().astype(np.float32)


class _Transformed(Dataset):
    """Item i: (the evaluation view of file i, whether it decoded, i); a file that does not decode
    gives zeros and False, so that one broken file in a gallery folder is skipped, not fatal."""

    def __init__(self, paths: list[str], transform, shape: tuple[int, ...]):
        self.paths, self.transform, self.shape = paths, transform, shape

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            x = self.transform(load_image(self.paths[i]))
        except DataError:  # ImageDecodeError, ImageMissingError
            return torch.zeros(self.shape), False, i
        return x, True, i


def load_query_model(run_dir: str | Path, which: str = "last") -> QueryModel:
    """The key encoder of ``run_dir``'s ``last`` or ``best`` checkpoint, ready to embed images. Reads
    the config and the checkpoint (once: its digest names the bytes loaded) and builds the backbone
    the config names; scans no dataset and writes nothing.

    Raises:
        ValueError: ``which`` is neither ``last`` nor ``best``.
        FileNotFoundError: no run or no such checkpoint.
        RunError: a checkpoint that is unreadable, of another config, or without a key encoder
            that fits the config's model, or an unreadable alignment stage (one line naming the file).
    """
    run = runs.RunFolder(run_dir)
    cfg = run.config()
    path = checkpoint_path(run, which)
    state, digest = load_checkpoint_digest(path)
    runs.check_checkpoint(state, path, cfg, {}, run)
    inputs = query_inputs(cfg)
    encoder = Encoder(inputs.module, inputs.dim, cfg.feature_dim, cfg.mlp, freeze_backbone=cfg.trainable == "head",
                      freeze_bn=cfg.freeze_bn)
    prefix = "encoder_k."
    weights = {k[len(prefix):]: v for k, v in state.get("model", {}).items() if k.startswith(prefix)}
    try:
        encoder.load_state_dict(weights)
    except RuntimeError as exc:
        raise RunError(f"{path}: its key encoder does not fit the run's model ({str(exc).splitlines()[0]})") from None
    device = select_device(cfg.device)
    encoder.to(device).eval()
    if inputs.trunk is not None:
        inputs.trunk.to(device).eval()
    return QueryModel(cfg, encoder, inputs, device,
                      {"file": path.name, "epoch": runs.checkpoint_epoch(state), "digest": digest},
                      *run_alignment_model(run, which))


def image_files(folder: str | Path) -> list[Path]:
    """The image files under ``folder`` (by extension, sub-folders included), sorted."""
    return sorted(p for p in Path(folder).rglob("*") if p.is_file() and is_image_name(p))
