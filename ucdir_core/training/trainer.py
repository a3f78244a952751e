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

import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from ucdir_core.base import distributed as D
from ucdir_core.base.config import UCDIRConfig, config_differences
from ucdir_core.base.device import select_device
from ucdir_core.base.io import atomic_torch_save, plain, write_json
from ucdir_core.base.pair import DomainPair
from ucdir_core.base.seeding import epoch_seed, rng_state, seed_everything, set_rng_state, worker_init
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
    """

    def __init__(self, cfg: UCDIRConfig, run_dir: str | Path, inputs: DomainPair[DomainInputs], encoder: Encoder,
                 progress: bool = True, log: Callable[[str], None] = print):
        self.cfg = cfg
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
        self.check_checkpoint(state, path)
        self.load_state(state)
        if D.is_main():
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
        return DataLoader(paired, batch_size=self.cfg.batch_size, shuffle=False, drop_last=True,
                          num_workers=self.cfg.workers, worker_init_fn=worker_init, generator=gen,
                          pin_memory=self.device.type == "cuda", persistent_workers=False)

    def step(self, x_q: DomainPair[Tensor], x_k: DomainPair[Tensor], ids: DomainPair[Tensor]) -> dict[str, float]:
        """One optimisation step on one batch: momentum update, query and key embeddings, the
        batch's keys written into the banks, the method's loss, backward and update. Returns the
        method's terms and ``total``.

        Shape:
            x_q, x_k: DomainPair of (n, *input); ids: DomainPair of (n,) long.
        """
        dev, model = self.device, self.model
        x_q, x_k = x_q.map(lambda t: t.to(dev, non_blocking=True)), x_k.map(lambda t: t.to(dev, non_blocking=True))
        ids = ids.map(lambda t: t.to(dev, non_blocking=True))
        model.momentum_update(self.cfg.momentum)
        with torch.autocast(device_type=dev.type, dtype=torch.float16, enabled=self.use_amp):
            q, k = model(x_q, x_k, encoder_q=self.query_encoder)
        # every process writes the keys of all processes, so the banks stay identical
        model.write_bank(ids.map(D.gather_cat), k.map(D.gather_cat))
        loss, terms = self.method.loss(StepBatch(q, k, model.banks, ids))
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.embedder.changed()
        return {**terms, "total": float(loss.detach())}

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """One pass over the epoch's pairs; the mean of each loss term (``loss_<term>``)."""
        from tqdm.auto import tqdm

        self.model.train()
        loader = self.loader(epoch)
        if len(loader) == 0:
            raise ValueError(f"batch_size {self.cfg.batch_size} is larger than the epoch's {len(loader.dataset)} pairs")
        sums: dict[str, float] = {}
        bar = tqdm(loader, desc=f"epoch {epoch}", disable=not self.progress, leave=False)
        for qa, ka, ia, qb, kb, ib in bar:
            terms = self.step(DomainPair(qa, qb), DomainPair(ka, kb), DomainPair(ia, ib))
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

    def evaluate_into(self, row: dict[str, Any]) -> None:
        """Add the evaluation, the selection score and (process 0) the alignment record to ``row``;
        keep ``best.pt`` when the score is the best so far."""
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
            if D.is_main():
                self.run.start(cfg, command)
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


def check_checkpoint(state: dict[str, Any], path: Path, cfg: UCDIRConfig, model: MomentumEncoders,
                     run: runs.RunFolder) -> None:
    """Refuse a checkpoint written under another config or for other data, in one line.

    Raises:
        RunError: the checkpoint's config differs from the run's, or a bank's size from the data's.
    """
    keys = config_differences(plain(state.get("config")), cfg)
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
