"""An encoder's embeddings of both domains, cached while its weights do not change, with what is
evaluated on them: P@k and mAP in both directions (spec section 4) and the alignment record."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from ucdir_core.align.params import AlignmentParams
from ucdir_core.align.stage import AlignmentModel, fit_stage
from ucdir_core.base.pair import DomainPair
from ucdir_core.config.run import RunConfig
from ucdir_core.data.inputs import DomainInputs
from ucdir_core.evaluation.alignment import alignment_diagnostics, mixing_and_agreement
from ucdir_core.evaluation.metrics import retrieval_report


@torch.no_grad()
def embed(encoder: nn.Module, dataset: Dataset, device: torch.device, batch_size: int = 256,
          workers: int = 0, progress: bool = False, desc: str = "embed") -> Tensor:
    """Embeddings of every item of ``dataset`` (items ``(x, id)``) in id order, in eval mode.

    Shape:
        -> (len(dataset), dim) float32 on ``device``.

    Raises:
        ValueError: an empty dataset.
    """
    from tqdm.auto import tqdm

    was_training = encoder.training
    encoder.eval()
    # its own generator: iterating a DataLoader otherwise draws from the global RNG, and whether
    # embeddings come from a cache must not change the training run's random stream
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                        generator=torch.Generator().manual_seed(0))
    out: Tensor | None = None
    for x, idx in tqdm(loader, desc=desc, disable=not progress, leave=False):
        z = encoder(x.to(device, non_blocking=True)).float()
        if out is None:
            out = torch.empty(len(dataset), z.shape[1], device=device)
        out[idx.to(device)] = z
    encoder.train(was_training)
    if out is None:
        raise ValueError("cannot embed an empty dataset")
    return out


class Embedder:
    """The evaluation embeddings of one encoder (the key encoder, which the reference evaluates)
    over both domains' inputs, computed once per model version.

    Whoever changes the encoder's weights calls :meth:`changed` (the trainer, after every
    optimiser step and after loading a checkpoint).
    """

    def __init__(self, cfg: RunConfig, inputs: DomainPair[DomainInputs], encoder: nn.Module, device: torch.device,
                 progress: bool = False):
        self.cfg, self.inputs, self.encoder, self.device, self.progress = cfg, inputs, encoder, device, progress
        self._version = 0
        self._train: tuple[int, DomainPair[Tensor]] | None = None
        self._test: tuple[int, DomainPair[Tensor]] | None = None
        self._stage: tuple[int, AlignmentParams, AlignmentModel] | None = None

    def changed(self) -> None:
        """Mark the encoder's weights as changed: the next call embeds again."""
        self._version += 1

    def _embed(self, which: str) -> DomainPair[Tensor]:
        return self.inputs.map(lambda d: embed(
            self.encoder, getattr(d, which), self.device, self.cfg.eval_batch_size, self.cfg.workers, self.progress,
            desc=f"embed {which}"))

    def train_embeddings(self) -> DomainPair[Tensor]:
        """Evaluation embeddings of the training images. Shape: pair of (N_d, dim)."""
        if self._train is None or self._train[0] != self._version:
            self._train = (self._version, self._embed("train_eval"))
        return self._train[1]

    def test_embeddings(self) -> DomainPair[Tensor]:
        """Evaluation embeddings of the evaluated images (the training images under the full split).
        Shape: pair of (M_d, dim)."""
        if all(d.test_is_train for d in self.inputs):
            return self.train_embeddings()
        if self._test is None or self._test[0] != self._version:
            self._test = (self._version, self._embed("test_eval"))
        return self._test[1]

    def evaluate(self) -> dict[str, dict[str, float]]:
        """P@k and mAP in both directions on the evaluated images: ``{"A->B": {...}, "B->A": {...}}``."""
        emb = self.test_embeddings()
        return retrieval_report(emb.a, self.inputs.a.test_labels, emb.b, self.inputs.b.test_labels,
                                self.cfg.eval_ks, names=tuple(self.cfg.domains))

    def alignment(self) -> dict[str, Any]:
        """Domain mixing, class agreement and prototype spread of the embeddings
        (:func:`~ucdir_core.evaluation.alignment.alignment_diagnostics`); labels only for class agreement."""
        return alignment_diagnostics(self.test_embeddings(), self.inputs.map(lambda d: d.test_labels),
                                     self.train_embeddings(), tuple(self.cfg.domains), self.cfg.num_clusters[0])

    def fit_alignment(self, params: AlignmentParams) -> AlignmentModel:
        """The alignment stage ``params`` names, fitted on both domains' *training* embeddings with
        the domain as the batch variable (no label is read): under the held-out split the
        evaluated images are not seen (:func:`~ucdir_core.align.stage.fit_stage`: Harmony's settings
        capped at what the number of images allows, the global random generators left as they were).
        Fitted once per model version and settings: the evaluation and the next epoch's joint
        clustering share it."""
        if self._stage is None or self._stage[:2] != (self._version, params):  # once per model version
            emb = self.train_embeddings().map(lambda t: t.detach().cpu().numpy())
            self._stage = (self._version, params, fit_stage(params, emb.a, emb.b))
        return self._stage[2]

    def aligned(self, model: AlignmentModel) -> dict[str, Any]:
        """P@k and mAP of the evaluated embeddings corrected by ``model``, with their domain mixing
        and class agreement (labels read only for the metrics):
        ``{"alignment": name, "eval": {direction: metrics}, "domain_mixing", "class_agreement"}``."""
        emb = self.test_embeddings().map(lambda t: t.detach().cpu().numpy())
        a, b = model.apply(emb.a, 0), model.apply(emb.b, 1)
        la, lb = self.inputs.a.test_labels, self.inputs.b.test_labels
        report = retrieval_report(a, la, b, lb, self.cfg.eval_ks, names=tuple(self.cfg.domains))
        return {"alignment": model.alignment, "eval": report, **mixing_and_agreement(a, la, b, lb)}
