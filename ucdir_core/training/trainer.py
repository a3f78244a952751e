"""Training of one method in one run folder (spec sections 1-4).

Every epoch the :class:`Trainer` (1) sets the learning rate of the schedule, (2) at the first
epoch fills the banks with evaluation embeddings, (3) lets the method recompute what it keeps per
epoch (UCDIR: k-means of both domains once clustering is on), (4) trains over ``max(N_A, N_B)``
pairs, one :meth:`Trainer.step` per batch, (5) evaluates in both directions, (6) writes a
checkpoint atomically (holding the history's rows) and appends a JSON line to the history. A
killed run resumes from its last checkpoint with identical results, its history rewritten from
the checkpoint's rows. The trainer never asks which method it runs (:mod:`ucdir_core.method.interface`).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

from ucdir_core.align.stage import AlignmentModel
from ucdir_core.base import distributed as D
from ucdir_core.base.device import select_device
from ucdir_core.base.errors import DivergenceError
from ucdir_core.base.io import plain, write_json
from ucdir_core.base.pair import DomainPair
from ucdir_core.base.seeding import epoch_seed, seed_everything
from ucdir_core.config.run import RunConfig
from ucdir_core.data.inputs import DomainInputs
from ucdir_core.data.loader import epoch_batch_size, epoch_loader
from ucdir_core.evaluation.embedding import Embedder
from ucdir_core.evaluation.metrics import selection_score
from ucdir_core.method.clustering import Clustering, KMeansSettings, cluster_jointly
from ucdir_core.method.interface import EpochContext, StepBatch
from ucdir_core.method.registry import build_method
from ucdir_core.models.encoders import Encoder, MomentumEncoders
from ucdir_core.training import runs
from ucdir_core.training.checkpointing import Checkpointing
from ucdir_core.training.optim import Optimisation

#: fewer training steps than this in a whole run draw a warning at its start
SHORT_TRAINING_STEPS = 50


class Trainer(Checkpointing):
    """Trains one model with the method ``cfg.method`` names, in one run folder.

    Args:
        cfg: the run's configuration.
        run_dir: where config, history, checkpoints and summary go.
        inputs: the two domains' datasets (see :class:`~ucdir_core.data.inputs.DomainInputs`).
        encoder: the query encoder to start from (the key encoder is a copy).
        progress: show progress bars.
        log: where one-line messages go.
        identity: the dataset's identity (:mod:`ucdir_core.data.identity`), recorded in the run
            folder at the start and compared on resume.

    Raises:
        DataError: the batch does not fit the data (:func:`~ucdir_core.data.loader.epoch_batch_size`).
        ValueError: the method refuses its parameters for this run (e.g. a term that never switches on).
    """

    def __init__(self, cfg: RunConfig, run_dir: str | Path, inputs: DomainPair[DomainInputs], encoder: Encoder,
                 progress: bool = True, log: Callable[[str], None] = print, identity: dict[str, Any] | None = None):
        self.cfg, self.identity, self.inputs, self.progress, self.log = cfg, identity, inputs, progress, log
        self.run = runs.RunFolder(run_dir)
        self.device = select_device(cfg.device)
        self.method = build_method(cfg.method_params, cfg.num_clusters, cfg.epochs)
        self.model = MomentumEncoders(encoder, inputs.map(lambda d: len(d.train_eval)), dim=cfg.feature_dim,
                                      key_bn_splits=cfg.key_bn_splits).to(self.device)
        self.optim = Optimisation(cfg, self.model.encoder_q, self.device)
        self.kmeans = KMeansSettings(cfg.num_clusters, cfg.kmeans_iters, cfg.kmeans_restarts,
                                     cfg.kmeans_max_points_per_centroid, cfg.kmeans_min_points_per_centroid)
        self.embedder = Embedder(cfg, inputs, self.model.encoder_k, self.device, progress)
        self.pairs = max(len(d.train_eval) for d in inputs) // D.world_size()  # pairs of an epoch, per process
        self.batch_size = epoch_batch_size(cfg, self.pairs)
        self.query_encoder = D.wrap_ddp(self.model.encoder_q, self.device)
        self.next_epoch = 0  # the next epoch to run
        self.best: dict[str, Any] | None = None
        self.rows: list[dict[str, Any]] = []  # the history's epoch rows, also kept in last.pt
        self.aligner: AlignmentModel | None = None  # the alignment stage fitted at the last evaluation

    def cluster(self, embeddings: DomainPair[Tensor]) -> DomainPair[Clustering]:
        """k-means of each domain's ``embeddings`` for every K; run on process 0 and given to every process."""
        result = embeddings.map(lambda e: self.kmeans.cluster(e).to("cpu")) if D.is_main() else None
        return D.broadcast_object(result).map(lambda c: c.to(self.device))

    def cluster_jointly(self, embeddings: DomainPair[Tensor]) -> DomainPair[Clustering]:
        """k-means of both domains' ``embeddings`` together for every K
        (:func:`~ucdir_core.method.clustering.cluster_jointly`), found after the run's alignment stage
        when it has one (fitted now on the training embeddings, no label read); run on process 0
        and given to every process."""
        result = None
        if D.is_main():
            found = self._aligned(embeddings)
            a, b = cluster_jointly((embeddings.a, embeddings.b), (found.a, found.b), self.kmeans)
            result = DomainPair(a.to("cpu"), b.to("cpu"))
        return D.broadcast_object(result).map(lambda c: c.to(self.device))

    def align(self, embeddings: DomainPair[Tensor]) -> DomainPair[Tensor]:
        """``embeddings`` after the run's alignment stage, fitted now on the training embeddings (no
        label read; themselves when the run has none); computed on process 0 and given to every process.

        Shape: DomainPair of (N_d, d) -> the same, float32, unit rows where a stage applies."""
        result = self._aligned(embeddings).map(lambda t: t.to("cpu")) if D.is_main() else None
        return D.broadcast_object(result).map(lambda t: t.to(self.device))

    def _aligned(self, embeddings: DomainPair[Tensor]) -> DomainPair[Tensor]:
        if self.cfg.alignment_params.alignment == "none":
            return embeddings
        stage = self.embedder.fit_alignment(self.cfg.alignment_params)
        return DomainPair(*(torch.from_numpy(stage.apply(e.detach().float().cpu().numpy(), side))
                            for side, e in enumerate(embeddings)))

    def step(self, x_q: DomainPair[Tensor], x_k: DomainPair[Tensor], ids: DomainPair[Tensor],
             where: tuple[int, int] = (0, 0)) -> dict[str, float]:
        """One optimisation step on one batch: momentum update, query and key embeddings, the
        batch's keys written into the banks, the method's loss, backward and update. Returns the
        method's terms and ``total``. ``where`` (epoch, step) names the step in an error.

        Shape:
            x_q, x_k: DomainPair of (n, *input); ids: DomainPair of (n,) long.

        Raises:
            DivergenceError: a non-finite loss (so also a non-finite embedding, which every loss
                reads) or gradient; the optimiser does not step and the run folder keeps the last
                finite epoch.
        """
        dev, model = self.device, self.model
        x_q, x_k = x_q.map(lambda t: t.to(dev, non_blocking=True)), x_k.map(lambda t: t.to(dev, non_blocking=True))
        ids = ids.map(lambda t: t.to(dev, non_blocking=True))
        model.momentum_update(self.cfg.momentum)
        with torch.autocast(device_type=dev.type, dtype=torch.float16, enabled=self.optim.use_amp):
            q, k = model(x_q, x_k, encoder_q=self.query_encoder)
        # every process writes the keys of all processes, so the banks stay identical
        model.write_bank(ids.map(D.gather_cat), k.map(D.gather_cat))
        loss, terms = self.method.loss(StepBatch(q, k, model.banks, ids))
        if not math.isfinite(float(loss.detach())):
            # a non-finite embedding makes every term that reads it non-finite
            bad = next((f"{n} loss" for n, v in terms.items() if not math.isfinite(v)), "total loss")
            raise divergence_error(self.cfg, self.run.path, where, bad)
        if not self.optim.backward(loss):
            raise divergence_error(self.cfg, self.run.path, where, "gradient")
        self.optim.step()
        self.embedder.changed()
        return {**terms, "total": float(loss.detach())}

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """One pass over the epoch's pairs; the mean of each loss term (``loss_<term>``)."""
        from tqdm.auto import tqdm

        self.model.train()
        loader = epoch_loader(self.inputs, self.cfg, epoch, self.batch_size, pin_memory=self.device.type == "cuda")
        sums: dict[str, float] = {}
        bar = tqdm(loader, desc=f"epoch {epoch}", disable=not self.progress, leave=False)
        for i, (qa, ka, ia, qb, kb, ib) in enumerate(bar):
            terms = self.step(DomainPair(qa, qb), DomainPair(ka, kb), DomainPair(ia, ib), where=(epoch, i))
            for name, v in terms.items():
                sums[name] = sums.get(name, 0.0) + v
            bar.set_postfix({n: f"{v:.3f}" for n, v in terms.items() if v})
        return {f"loss_{n}": v / len(loader) for n, v in sums.items()}

    def run_epoch(self, epoch: int) -> dict[str, Any]:
        """Train one epoch and evaluate it; returns its history row."""
        t0 = time.time()
        seed_everything(epoch_seed(self.cfg.seed, epoch))
        lr = self.optim.set_lr(epoch)
        if epoch == 0:
            self.model.fill_banks(self.embedder.train_embeddings())
        self.method.begin_epoch(EpochContext(epoch, self.model.banks, self.embedder.train_embeddings, self.cluster,
                                             self.cluster_jointly, self.align))
        row: dict[str, Any] = {"epoch": epoch, "lr": lr, **{f"w_{n}": w for n, w in self.method.weights(epoch).items()}}
        row.update(self.train_epoch(epoch))
        self.next_epoch = epoch + 1
        D.broadcast_buffers(self.model.encoder_k)  # identical key BatchNorm statistics everywhere
        if (epoch + 1) % self.cfg.eval_every == 0 or epoch + 1 == self.cfg.epochs:
            self.evaluate_into(row)
        row["wall_seconds"] = time.time() - t0
        return row

    def evaluate_into(self, row: dict[str, Any]) -> None:
        """Add the evaluation, the selection score and (process 0) the alignment record to ``row``;
        keep ``best.pt`` when the score is the best so far."""
        if not all(bool(torch.isfinite(e).all()) for e in self.embedder.test_embeddings()):
            raise divergence_error(self.cfg, self.run.path, (row["epoch"], -1), "key encoder's embedding")
        report = self.embedder.evaluate()
        row["eval"], row["score"] = report, selection_score(report, self.cfg.eval_ks[0])
        if D.is_main():  # only process 0's rows are written
            row["alignment"] = self.embedder.alignment()
            if self.cfg.alignment_params.alignment != "none":  # the run's alignment stage, fitted on this epoch
                self.aligner = self.embedder.fit_alignment(self.cfg.alignment_params)
                row["aligned"] = self.embedder.aligned(self.aligner)
        if self.best is None or row["score"] > self.best["score"]:
            self.best = {"epoch": row["epoch"], "score": row["score"], "eval": report}
            if D.is_main() and self.cfg.keep_checkpoints == "all":
                self.run.save_best(row["epoch"], self.model.state_dict(), self.cfg)

    def fit(self, resume: bool = False, command: list[str] | None = None) -> list[dict[str, Any]]:
        """Run (or continue) every epoch; return the history rows."""
        from tqdm.auto import tqdm

        cfg = self.cfg
        if not (resume and self.resume()):
            untrained = self.embedder.evaluate()
            if D.is_main():
                log_plan(self.log, cfg, self.pairs, self.batch_size, untrained)
            if D.is_main():
                self.run.start(cfg, command, self.identity, {"untrained": untrained, "batch_size": self.batch_size,
                                                             "steps_per_epoch": self.pairs // self.batch_size})
            D.barrier()
            self.next_epoch, self.rows = 0, []
        for epoch in tqdm(range(self.next_epoch, cfg.epochs), desc="epochs", disable=not self.progress,
                          initial=self.next_epoch, total=cfg.epochs):
            row = self.run_epoch(epoch)
            self.rows.append(plain(row))
            if D.is_main():  # one process writes the run folder; the checkpoint holds the rows too
                self.run.save_last(self.state(), keep_previous=self.cfg.keep_checkpoints == "all")
                self.run.append_history(row)
                self.log(runs.format_row(row, self.rows[-2] if len(self.rows) > 1 else None))
            D.barrier()
        history = self.run.history()
        if D.is_main():
            if self.aligner is not None:  # fitted on the last epoch's training embeddings: goes with last.pt
                self.aligner.save(self.run.file(runs.ALIGNMENT))
            write_json(self.run.file(runs.SUMMARY), runs.summarize(history, cfg))
        D.barrier()
        return history


def log_plan(log: Callable[[str], None], cfg: RunConfig, pairs: int, batch_size: int,
             untrained: dict[str, dict[str, float]]) -> None:
    """Log the size of the epochs and the untrained scores (P@k of the model before any step: the
    untrained backbone through the initial head); warn when training is too short to mean much."""
    steps, k = pairs // batch_size, cfg.eval_ks[0]
    log(f"{pairs} pairs per epoch, batch {batch_size}: {steps} steps per epoch, {cfg.epochs} epochs; untrained: "
        + ", ".join(f"{d} P@{k} {m[f'P@{k}']:.1f}" for d, m in untrained.items()))
    if steps * cfg.epochs < SHORT_TRAINING_STEPS:
        log(f"warning: {steps * cfg.epochs} training steps in all (fewer than {SHORT_TRAINING_STEPS}): too few to "
            "change much; compare the epochs' scores with the untrained ones above")


def divergence_error(cfg: RunConfig, run_dir: Path, where: tuple[int, int], what: str) -> DivergenceError:
    """The one-line error of a run that diverged at ``where`` (epoch, step; step -1: the epoch's
    end): what is not finite, what the run folder keeps, and the keys that can cause it with their values."""
    epoch, at = where[0], f"epoch {where[0]}" + (f", step {where[1]}" if where[1] >= 0 else " (its end)")
    kept = f"{runs.LAST} holds epoch {epoch - 1}" if epoch > 0 else "no epoch was saved"
    params = cfg.method_params
    keys = ", ".join([f"lr {cfg.lr:g}", f"momentum {cfg.momentum:g}",
                      *(f"{k} {getattr(params, k):g}" for k in type(params).divergence_keys)])
    return DivergenceError(
        f"training diverged at {at}: the {what} is not finite ({kept}); the keys that can cause it, now: {keys}; "
        f"try a lower lr or a higher temperature, e.g. `ucdir train --resume --run-dir {run_dir} "
        f"--set lr={cfg.lr / 10:g}`")
