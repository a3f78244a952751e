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
from torch.utils.data import DataLoader

from ucdir_core.base import distributed as D
from ucdir_core.base.config import RESUMABLE_KEYS, UCDIRConfig, config_differences
from ucdir_core.base.device import select_device
from ucdir_core.base.errors import DataError, DivergenceError
from ucdir_core.base.io import atomic_torch_save, plain, write_json
from ucdir_core.base.pair import DomainPair
from ucdir_core.base.seeding import epoch_seed, rng_state, seed_everything, set_rng_state, worker_init
from ucdir_core.data.identity import check_identity
from ucdir_core.data.inputs import DomainInputs
from ucdir_core.data.views import PairedViews, epoch_pairs
from ucdir_core.evaluation.embedding import Embedder
from ucdir_core.evaluation.metrics import selection_score
from ucdir_core.method.clustering import Clustering, cluster_domain
from ucdir_core.method.interface import EpochContext, StepBatch
from ucdir_core.method.model import Encoder, MomentumEncoders
from ucdir_core.method.registry import build_method
from ucdir_core.method.schedules import lr_schedule
from ucdir_core.training import runs
from ucdir_core.training.optim import build_optimizer


class Trainer:
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
        DataError: the batch does not fit the data (:func:`epoch_batch_size`).
    """

    def __init__(self, cfg: UCDIRConfig, run_dir: str | Path, inputs: DomainPair[DomainInputs], encoder: Encoder,
                 progress: bool = True, log: Callable[[str], None] = print, identity: dict[str, Any] | None = None):
        self.cfg = cfg
        self.identity = identity
        self.run = runs.RunFolder(run_dir)
        self.inputs = inputs
        self.device = select_device(cfg.device)
        self.progress = progress
        self.log = log
        n_train = inputs.map(lambda d: len(d.train_eval))
        self.model = MomentumEncoders(encoder, n_train, dim=cfg.feature_dim,
                                      key_bn_splits=cfg.key_bn_splits).to(self.device)
        self.method = build_method(cfg)
        self.optimizer = build_optimizer(cfg, self.model.encoder_q)
        self.lr = lr_schedule(cfg)
        self.use_amp = bool(cfg.amp and self.device.type == "cuda")
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.embedder = Embedder(cfg, inputs, self.model.encoder_k, self.device, progress)
        self.rank, self.world = D.rank(), D.world_size()
        self.pairs = max(len(d.train_eval) for d in inputs) // self.world  # pairs of an epoch, per process
        self.batch_size = epoch_batch_size(cfg, self.pairs)
        self.query_encoder: torch.nn.Module = self.model.encoder_q
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.query_encoder = DistributedDataParallel(self.model.encoder_q, device_ids=ids)
        self.epoch = 0  # next epoch to run
        self.best: dict[str, Any] | None = None
        self.rows: list[dict[str, Any]] = []  # the history's epoch rows, also kept in last.pt

    # ----------------------------------------------------------------- per-epoch state
    def cluster(self, embeddings: DomainPair[Tensor]) -> DomainPair[Clustering]:
        """k-means of each domain's ``embeddings`` for every K, with the config's settings; run on
        process 0 and given to every process."""
        cfg = self.cfg
        kw = dict(niter=cfg.kmeans_iters, nredo=cfg.kmeans_restarts,
                  max_points_per_centroid=cfg.kmeans_max_points_per_centroid,
                  min_points_per_centroid=cfg.kmeans_min_points_per_centroid)
        result = None
        if D.is_main():  # once, on process 0; the others receive it
            result = embeddings.map(lambda e: cluster_domain(e, cfg.num_clusters, **kw).to("cpu"))
        return D.broadcast_object(result).map(lambda c: c.to(self.device))

    def epoch_context(self, epoch: int) -> EpochContext:
        """What the method may use at the start of ``epoch``."""
        return EpochContext(epoch, self.model.banks, self.embedder.train_embeddings, self.cluster)

    # ----------------------------------------------------------------- checkpoints
    def state(self) -> dict[str, Any]:
        """Everything a resume needs, as tensors and plain values (loadable with ``weights_only=True``)."""
        return {
            "epoch": self.epoch, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(), "best": plain(self.best), "config": self.cfg.to_dict(),
            "history": plain(self.rows), "rng": rng_state(), "method": self.method.state_dict(),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.method.load_state_dict(state.get("method", {}))
        self.epoch, self.best = int(state["epoch"]), state["best"]
        self.rows = list(state.get("history", []))
        set_rng_state(state["rng"])
        self.embedder.changed()

    def check_checkpoint(self, state: dict[str, Any], path: Path) -> None:
        """Refuse a checkpoint written under another config or for other data, in one line."""
        check_checkpoint(state, path, self.cfg, self.model, self.run)

    def resume(self) -> bool:
        """Load ``last.pt`` (or ``prev.pt`` if ``last.pt`` is unreadable) if the run folder has one; True if it did.

        The history is rewritten from the rows the checkpoint holds, so that the two agree
        whatever the point at which the previous process was killed.
        """
        found = self.run.load_last(self.log)
        if found is None:
            return False
        state, path = found
        if self.identity is not None:
            check_identity(self.run.identity(), self.identity, str(self.run.file(runs.DATASET)))
        self.check_checkpoint(state, path)
        self.load_state(state)
        if D.is_main():
            if self.run.config() != self.cfg:  # resumed with other optimisation settings (RESUMABLE_KEYS)
                self.run.write_config(self.cfg)
            if path.name == runs.PREV:
                self.run.set_aside(runs.LAST)  # unreadable: kept for inspection, out of the rotation
            self.run.rewrite_history(self.cfg, self.rows)
        D.barrier()
        self.log(f"resumed {self.run.path} at epoch {self.epoch} from {path.name}")
        return True

    # ----------------------------------------------------------------- training
    def loader(self, epoch: int) -> DataLoader:
        """The batches of ``epoch``: ``(q_a, k_a, ids_a, q_b, k_b, ids_b)``, the last partial one dropped."""
        gen = torch.Generator().manual_seed(epoch_seed(self.cfg.seed, epoch))
        idx_a, idx_b = epoch_pairs(len(self.inputs.a.train_eval), len(self.inputs.b.train_eval), gen)
        if self.world > 1:  # every process takes its shard, all of the same length
            per = len(idx_a) // self.world
            idx_a = idx_a[self.rank::self.world][:per]
            idx_b = idx_b[self.rank::self.world][:per]
        paired = PairedViews(self.inputs.map(lambda d: d.train_views), idx_a, idx_b)
        return DataLoader(paired, batch_size=self.batch_size, shuffle=False, drop_last=True,
                          num_workers=self.cfg.workers, worker_init_fn=worker_init, generator=gen,
                          pin_memory=self.device.type == "cuda", persistent_workers=False)

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
        with torch.autocast(device_type=dev.type, dtype=torch.float16, enabled=self.use_amp):
            q, k = model(x_q, x_k, encoder_q=self.query_encoder)
        # every process writes the keys of all processes, so the banks stay identical
        model.write_bank(ids.map(D.gather_cat), k.map(D.gather_cat))
        at = f"epoch {where[0]}, step {where[1]}"
        loss, terms = self.method.loss(StepBatch(q, k, model.banks, ids))
        if not math.isfinite(float(loss.detach())):
            # a non-finite embedding makes every term that reads it non-finite
            bad = next((f"{n} loss" for n, v in terms.items() if not math.isfinite(v)), "total loss")
            self.diverged(at, bad, where[0])
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if not self.use_amp and not _finite_gradients(self.optimizer):  # AMP skips such steps by design
            self.diverged(at, "gradient", where[0])
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.embedder.changed()
        return {**terms, "total": float(loss.detach())}

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """One pass over the epoch's pairs; the mean of each loss term (``loss_<term>``)."""
        from tqdm.auto import tqdm

        self.model.train()
        loader = self.loader(epoch)
        sums: dict[str, float] = {}
        bar = tqdm(loader, desc=f"epoch {epoch}", disable=not self.progress, leave=False)
        for i, (qa, ka, ia, qb, kb, ib) in enumerate(bar):
            terms = self.step(DomainPair(qa, qb), DomainPair(ka, kb), DomainPair(ia, ib), where=(epoch, i))
            for name, v in terms.items():
                sums[name] = sums.get(name, 0.0) + v
            bar.set_postfix({n: f"{v:.3f}" for n, v in terms.items() if v})
        return {f"loss_{n}": v / len(loader) for n, v in sums.items()}

    def set_lr(self, epoch: int) -> float:
        """Set every parameter group's lr for ``epoch`` (the schedule's value times the group's scale)."""
        lr = self.lr(epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)  # absent in checkpoints older than the key
        return lr

    def run_epoch(self, epoch: int) -> dict[str, Any]:
        """Train one epoch and evaluate it; returns its history row."""
        t0 = time.time()
        seed_everything(epoch_seed(self.cfg.seed, epoch))
        lr = self.set_lr(epoch)
        if epoch == 0:
            self.model.fill_banks(self.embedder.train_embeddings())
        self.method.begin_epoch(self.epoch_context(epoch))
        row: dict[str, Any] = {"epoch": epoch, "lr": lr, **{f"w_{n}": w for n, w in self.method.weights(epoch).items()}}
        row.update(self.train_epoch(epoch))
        self.epoch = epoch + 1
        D.broadcast_buffers(self.model.encoder_k)  # identical key BatchNorm statistics everywhere
        if (epoch + 1) % self.cfg.eval_every == 0 or epoch + 1 == self.cfg.epochs:
            self.evaluate_into(row)
        row["wall_seconds"] = time.time() - t0
        return row

    def diverged(self, at: str, what: str, epoch: int) -> None:
        """Stop training in one line: where, what is not finite, what was kept, what to try.

        Raises:
            DivergenceError: always.
        """
        kept = f"{runs.LAST} holds epoch {epoch - 1}" if epoch > 0 else "no epoch was saved"
        raise DivergenceError(
            f"training diverged at {at}: the {what} is not finite ({kept}); try a lower learning rate (now "
            f"{self.cfg.lr:g}) or a higher temperature (now {self.cfg.temperature:g}), e.g. `ucdir train --resume "
            f"--run-dir {self.run.path} --set lr={self.cfg.lr / 10:g}`")

    def check_embeddings(self, embeddings: DomainPair[Tensor], at: str, epoch: int) -> None:
        """Refuse embeddings that are not finite (the model diverged), in one line."""
        if not all(bool(torch.isfinite(e).all()) for e in embeddings):
            self.diverged(at, "key encoder's embedding", epoch)

    def untrained(self) -> dict[str, dict[str, float]]:
        """P@k and mAP of the model before any step (the untrained backbone through the initial
        head), logged with the size of the epochs; a warning when training is too short to mean much."""
        report = self.embedder.evaluate()
        steps, k = self.pairs // self.batch_size, self.cfg.eval_ks[0]
        if not D.is_main():
            return report
        self.log(f"{self.pairs} pairs per epoch, batch {self.batch_size}: {steps} steps per epoch, "
                 f"{self.cfg.epochs} epochs; untrained: " + ", ".join(f"{d} P@{k} {m[f'P@{k}']:.1f}"
                                                                      for d, m in report.items()))
        if steps * self.cfg.epochs < SHORT_TRAINING_STEPS:
            self.log(f"warning: {steps * self.cfg.epochs} training steps in all (fewer than {SHORT_TRAINING_STEPS}): "
                     "too few to change much; compare the epochs' scores with the untrained ones above")
        return report

    def evaluate_into(self, row: dict[str, Any]) -> None:
        """Add the evaluation, the selection score and (process 0) the alignment record to ``row``;
        keep ``best.pt`` when the score is the best so far."""
        self.check_embeddings(self.embedder.test_embeddings(), f"the end of epoch {row['epoch']}", row["epoch"])
        report = self.embedder.evaluate()
        row["eval"] = report
        row["score"] = selection_score(report, self.cfg.eval_ks[0])
        if D.is_main():  # only process 0's rows are written
            row["alignment"] = self.embedder.alignment()
        if self.best is None or row["score"] > self.best["score"]:
            self.best = {"epoch": row["epoch"], "score": row["score"], "eval": report}
            if D.is_main():
                atomic_torch_save({"epoch": row["epoch"], "model": self.model.state_dict(),
                                   "config": self.cfg.to_dict()}, self.run.file(runs.BEST))

    def fit(self, resume: bool = False, command: list[str] | None = None) -> list[dict[str, Any]]:
        """Run (or continue) every epoch; return the history rows."""
        from tqdm.auto import tqdm

        cfg = self.cfg
        if not (resume and self.resume()):
            untrained = self.untrained()
            if D.is_main():
                self.run.start(cfg, command, self.identity, {"untrained": untrained, "batch_size": self.batch_size,
                                                             "steps_per_epoch": self.pairs // self.batch_size})
            D.barrier()
            self.epoch, self.rows = 0, []
        for epoch in tqdm(range(self.epoch, cfg.epochs), desc="epochs", disable=not self.progress,
                          initial=self.epoch, total=cfg.epochs):
            row = self.run_epoch(epoch)
            self.rows.append(plain(row))
            if D.is_main():  # one process writes the run folder; the checkpoint holds the rows too
                self.run.save_last(self.state())
                self.run.append_history(row)
                self.log(format_row(row))
            D.barrier()
        history = self.run.history()
        if D.is_main():
            write_json(self.run.file(runs.SUMMARY), summarize(history, cfg))
        D.barrier()
        return history


#: fewer training steps than this in a whole run draw a warning at its start
SHORT_TRAINING_STEPS = 50


def epoch_batch_size(cfg: UCDIRConfig, pairs: int) -> int:
    """The batch size of every step: ``batch_size``, or, with ``min_steps_per_epoch`` and data so
    small that the epoch would have fewer steps, the largest batch (at least 2) that gives that
    many.

    Raises:
        DataError: the batch is larger than the epoch's pairs (one line naming the numbers and
            ``--set batch_size=N``), or there are fewer than 2 pairs.
    """
    batch = cfg.batch_size
    if cfg.min_steps_per_epoch and pairs // batch < cfg.min_steps_per_epoch:
        batch = min(batch, max(2, pairs // cfg.min_steps_per_epoch))
    if batch > pairs:
        raise DataError(f"batch_size {batch} is larger than the {pairs} pairs of an epoch (the larger domain's "
                        f"training images{' per process' if D.world_size() > 1 else ''}); pass --set "
                        f"batch_size=N with 2 <= N <= {pairs}" if pairs >= 2 else
                        f"an epoch has {pairs} pair(s) (the larger domain's training images); at least 2 are needed")
    return batch


def _finite_gradients(optimizer: torch.optim.Optimizer) -> bool:
    """Whether every gradient is finite: one fused norm over all of them (non-finite if any entry is)."""
    grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
    return not grads or bool(torch.isfinite(torch.nn.utils.get_total_norm(grads)))


def check_checkpoint(state: dict[str, Any], path: Path, cfg: UCDIRConfig, model: MomentumEncoders,
                     run: runs.RunFolder) -> None:
    """Refuse a checkpoint written under another config or for other data, in one line.

    Raises:
        RunError: the checkpoint's config differs from the run's, or a bank's size from the data's.
    """
    keys = config_differences(plain(state.get("config")), cfg, ignore=RESUMABLE_KEYS)
    if keys:
        raise runs.RunError(f"{path} was written under another config than {run.file(runs.CONFIG)} "
                            f"(differs in {', '.join(keys[:6])}); refusing it")
    saved = state.get("model", {})
    for name, domain in zip(("bank_a", "bank_b"), cfg.domains):
        have, want = saved.get(name), getattr(model, name)
        if have is not None and have.shape[0] != want.shape[0]:
            raise runs.RunError(f"the dataset changed since {path} was written: domain {domain} had "
                                f"{have.shape[0]} training images, now {want.shape[0]}")


def summarize(history: list[dict[str, Any]], cfg: UCDIRConfig) -> dict[str, Any]:
    """Last-epoch and best-epoch results. The best epoch is chosen as the reference does, on the
    mean P@(first k) of the two directions of the *evaluation* labels, and labelled so."""
    evaluated = [r for r in history if "eval" in r]
    if not evaluated:
        return {"split": cfg.split}
    last = evaluated[-1]
    best = max(evaluated, key=lambda r: r["score"])
    return {
        "split": cfg.split, "epochs": cfg.epochs, "backbone": cfg.backbone, "image_size": cfg.image_size,
        "seed": cfg.seed, "domains": list(cfg.domains), "method": cfg.method,
        "last": {"epoch": last["epoch"], "eval": last["eval"]},
        "best": {"epoch": best["epoch"], "eval": best["eval"],
                 "selection": f"max mean P@{cfg.eval_ks[0]} of both directions, chosen on the evaluation labels "
                              "(the reference's protocol; optimistic)"},
    }


def format_row(row: dict[str, Any]) -> str:
    """One log line of a history row: epoch, lr, total loss, each direction's metrics, seconds."""
    parts = [f"epoch {row['epoch']}", f"lr {row['lr']:.2e}", f"loss {row.get('loss_total', float('nan')):.4f}"]
    if "eval" in row:
        for direction, m in row["eval"].items():
            parts.append(f"{direction} " + " ".join(f"{k} {v:.1f}" for k, v in m.items()))
    parts.append(f"{row['wall_seconds']:.1f}s")
    return " | ".join(parts)
