"""Training and evaluation of UCDIR (spec sections 1-4).

One :class:`Trainer` per run folder. Every epoch it (1) sets the cosine learning rate,
(2) at the first epoch fills the banks with evaluation embeddings, (3) once clustering is on,
clusters each domain's evaluation embeddings with faiss, (4) trains over ``max(N_A, N_B)`` pairs,
(5) evaluates in both directions, (6) writes a checkpoint atomically (holding the history's rows)
and appends a JSON line to the history. A killed run resumes from its last checkpoint with
identical results, its history rewritten from the checkpoint's rows.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from ucdir_core import distributed as D
from ucdir_core import runs
from ucdir_core.clustering import cluster_domain
from ucdir_core.config import UCDIRConfig, config_differences
from ucdir_core.device import select_device
from ucdir_core.metrics import retrieval_report, selection_score
from ucdir_core.model import UCDIR, Encoder, param_groups
from ucdir_core.objective import Clustering, LossParams, ucdir_objective
from ucdir_core.pair import DomainPair
from ucdir_core.schedules import UCDIRSchedule


@dataclass
class DomainInputs:
    """What the trainer reads of one domain.

    ``train_views[i]`` -> (view1, view2, i) for training image i; ``train_eval[i]`` -> (x, i), its
    evaluation view; ``test_eval[j]`` -> (x, j) for evaluated image j, whose label is
    ``test_labels[j]``. With ``test_is_train`` (the full split) both sets are the same images.
    """

    train_views: Dataset
    train_eval: Dataset
    test_eval: Dataset
    test_labels: np.ndarray
    test_is_train: bool


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """The torch, numpy, Python and CUDA random states as tensors and plain values (``weights_only``)."""
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {"torch": torch.get_rng_state(),
            "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "gauss": float(gauss)},
            "python": {"version": int(version), "state": [int(v) for v in internal], "gauss_next": gauss_next},
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].cpu().numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss_next"]))
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([t.cpu() for t in state["cuda"]])


def _worker_init(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


@torch.no_grad()
def embed(encoder: torch.nn.Module, dataset: Dataset, device: torch.device, batch_size: int = 256,
          workers: int = 0, progress: bool = False, desc: str = "embed") -> Tensor:
    """Embeddings of every item of ``dataset`` (items ``(x, id)``) in id order, in eval mode.

    Shape:
        -> (len(dataset), dim) float32 on ``device``.
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


class Trainer:
    """Trains one UCDIR model in one run folder.

    Args:
        cfg: the run's configuration.
        run_dir: where config, history, checkpoints and summary go.
        inputs: the two domains' datasets (see :class:`DomainInputs`).
        encoder: the query encoder to start from (the key encoder is a copy).
        progress: show tqdm bars.
        log: where one-line messages go.
        to_input: a PIL image -> one input of the encoder (used to embed a query image); from the
            input regime (:mod:`ucdir_core.regimes`).
    """

    def __init__(self, cfg: UCDIRConfig, run_dir: str | Path, inputs: DomainPair[DomainInputs], encoder: Encoder,
                 progress: bool = True, log: Callable[[str], None] = print,
                 to_input: Callable[[Any], Tensor] | None = None):
        self.cfg = cfg
        self.to_input = to_input
        self.run = runs.RunFolder(run_dir)
        self.inputs = inputs
        self.device = select_device(cfg.device)
        self.progress = progress
        self.log = log
        n_train = inputs.map(lambda d: len(d.train_eval))
        self.model = UCDIR(encoder, n_train, dim=cfg.feature_dim, key_bn_splits=cfg.key_bn_splits).to(self.device)
        self.optimizer = torch.optim.SGD(param_groups(self.model.encoder_q, cfg.backbone_lr_scale), lr=cfg.lr,
                                         momentum=cfg.sgd_momentum, weight_decay=cfg.weight_decay)
        self.use_amp = bool(cfg.amp and self.device.type == "cuda")
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.schedule = UCDIRSchedule.from_config(cfg)
        self.params = LossParams(cfg.temperature, cfg.threshold, cfg.se_temperature, cfg.dod_temperature,
                                 cfg.dod_center, cfg.se_center)
        self.rank, self.world = D.rank(), D.world_size()
        self.query_encoder: torch.nn.Module = self.model.encoder_q
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.query_encoder = DistributedDataParallel(self.model.encoder_q, device_ids=ids)
        self.epoch = 0  # next epoch to run
        self.best: dict[str, Any] | None = None
        self.rows: list[dict[str, Any]] = []  # the history's epoch rows, also kept in last.pt
        self._cache: tuple[int, DomainPair[Tensor]] | None = None  # (model version, train embeddings)
        self._test_cache: tuple[int, DomainPair[Tensor]] | None = None  # (model version, test embeddings)
        self._version = 0  # bumped by every optimiser step

    # ----------------------------------------------------------------- embeddings and evaluation
    def _embed(self, which: str) -> DomainPair[Tensor]:
        return self.inputs.map(lambda d: embed(
            self.model.encoder_k, getattr(d, which), self.device, self.cfg.eval_batch_size,
            self.cfg.workers, self.progress, desc=f"embed {which}"))

    def train_embeddings(self) -> DomainPair[Tensor]:
        """Key-encoder evaluation embeddings of the training images, reused while weights are unchanged."""
        if self._cache is None or self._cache[0] != self._version:
            self._cache = (self._version, self._embed("train_eval"))
        return self._cache[1]

    def test_embeddings(self) -> DomainPair[Tensor]:
        """Key-encoder evaluation embeddings of the evaluated images, reused while weights are unchanged."""
        if all(d.test_is_train for d in self.inputs):
            return self.train_embeddings()
        if self._test_cache is None or self._test_cache[0] != self._version:
            self._test_cache = (self._version, self._embed("test_eval"))
        return self._test_cache[1]

    def evaluate(self) -> dict[str, dict[str, float]]:
        """P@k and mAP in both directions on the evaluated images, with the key encoder."""
        emb = self.test_embeddings()
        names = tuple(self.cfg.domains)
        return retrieval_report(emb.a, self.inputs.a.test_labels, emb.b, self.inputs.b.test_labels,
                                self.cfg.eval_ks, names=names)

    def alignment(self) -> dict[str, Any]:
        """Domain mixing, class agreement and prototype spread of the key encoder's embeddings
        (see :func:`ucdir_core.alignment.alignment_diagnostics`); labels only for class agreement."""
        from ucdir_core.alignment import alignment_diagnostics

        return alignment_diagnostics(self.test_embeddings(), self.inputs.map(lambda d: d.test_labels),
                                     self.train_embeddings(), tuple(self.cfg.domains), self.cfg.num_clusters[0])

    def cluster(self) -> DomainPair[Clustering]:
        cfg = self.cfg
        kw = dict(niter=cfg.kmeans_iters, nredo=cfg.kmeans_restarts,
                  max_points_per_centroid=cfg.kmeans_max_points_per_centroid,
                  min_points_per_centroid=cfg.kmeans_min_points_per_centroid)
        result = None
        if D.is_main():  # once, on process 0; the others receive it
            result = self.train_embeddings().map(lambda e: cluster_domain(e, cfg.num_clusters, **kw).to("cpu"))
        return D.broadcast_object(result).map(lambda c: c.to(self.device))

    # ----------------------------------------------------------------- checkpoints
    def state(self) -> dict[str, Any]:
        """Everything a resume needs, as tensors and plain values (loadable with ``weights_only=True``)."""
        return {
            "epoch": self.epoch, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(), "best": runs.plain(self.best), "config": self.cfg.to_dict(),
            "history": runs.plain(self.rows), "rng": rng_state(),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.best = int(state["epoch"]), state["best"]
        self.rows = list(state.get("history", []))
        set_rng_state(state["rng"])
        self._version += 1

    def check_checkpoint(self, state: dict[str, Any], path: Path) -> None:
        """Refuse a checkpoint written under another config or for other data, in one line."""
        keys = config_differences(runs.plain(state.get("config")), self.cfg)
        if keys:
            raise runs.RunError(f"{path} was written under another config than {self.run.file(runs.CONFIG)} "
                                f"(differs in {', '.join(keys[:6])}); refusing it")
        model = state.get("model", {})
        for name, domain in zip(("bank_a", "bank_b"), self.cfg.domains):
            have, want = model.get(name), getattr(self.model, name)
            if have is not None and have.shape[0] != want.shape[0]:
                raise runs.RunError(f"the dataset changed since {path} was written: domain {domain} had "
                                    f"{have.shape[0]} training images, now {want.shape[0]}")

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
    def _loader(self, epoch: int) -> DataLoader:
        from ucdir_core.data import PairedViews, epoch_pairs

        gen = torch.Generator().manual_seed(self.cfg.seed * 100003 + epoch)
        idx_a, idx_b = epoch_pairs(len(self.inputs.a.train_eval), len(self.inputs.b.train_eval), gen)
        if self.world > 1:  # every process takes its shard, all of the same length
            per = len(idx_a) // self.world
            idx_a = idx_a[self.rank::self.world][:per]
            idx_b = idx_b[self.rank::self.world][:per]
        paired = PairedViews(self.inputs.map(lambda d: d.train_views), idx_a, idx_b)
        return DataLoader(paired, batch_size=self.cfg.batch_size, shuffle=False, drop_last=True,
                          num_workers=self.cfg.workers, worker_init_fn=_worker_init, generator=gen,
                          pin_memory=self.device.type == "cuda", persistent_workers=False)

    def train_epoch(self, epoch: int, clustering: DomainPair[Clustering] | None) -> dict[str, float]:
        """One pass over the epoch's pairs; mean of each loss term."""
        from tqdm.auto import tqdm

        cfg, model, dev = self.cfg, self.model, self.device
        weights = self.schedule.weights(epoch)
        model.train()
        loader = self._loader(epoch)
        if len(loader) == 0:
            raise ValueError(f"batch_size {cfg.batch_size} is larger than the epoch's {len(loader.dataset)} pairs")
        sums: dict[str, float] = {}
        bar = tqdm(loader, desc=f"epoch {epoch}", disable=not self.progress, leave=False)
        for qa, ka, ia, qb, kb, ib in bar:
            x_q = DomainPair(qa, qb).map(lambda t: t.to(dev, non_blocking=True))
            x_k = DomainPair(ka, kb).map(lambda t: t.to(dev, non_blocking=True))
            ids = DomainPair(ia, ib).map(lambda t: t.to(dev, non_blocking=True))
            model.momentum_update(cfg.momentum)
            with torch.autocast(device_type=dev.type, dtype=torch.float16, enabled=self.use_amp):
                q, k = model(x_q, x_k, encoder_q=self.query_encoder)
            # every process writes the keys of all processes, so the banks stay identical
            model.write_bank(ids.map(D.gather_cat), k.map(D.gather_cat))
            loss, terms = ucdir_objective(q, k, model.banks, ids, clustering, weights, self.params)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self._version += 1
            terms["total"] = float(loss.detach())
            for name, v in terms.items():
                sums[name] = sums.get(name, 0.0) + v
            bar.set_postfix({n: f"{v:.3f}" for n, v in terms.items() if v})
        return {f"loss_{n}": v / len(loader) for n, v in sums.items()}

    def fit(self, resume: bool = False, command: list[str] | None = None) -> list[dict[str, Any]]:
        """Run (or continue) every epoch; return the history rows."""
        cfg = self.cfg
        if not (resume and self.resume()):
            if D.is_main():
                self.run.start(cfg, command)
            D.barrier()
            self.epoch, self.rows = 0, []
        from tqdm.auto import tqdm

        for epoch in tqdm(range(self.epoch, cfg.epochs), desc="epochs", disable=not self.progress,
                          initial=self.epoch, total=cfg.epochs):
            t0 = time.time()
            seed_everything(cfg.seed * 100003 + epoch)
            lr = self.schedule.lr(epoch)
            for group in self.optimizer.param_groups:
                group["lr"] = lr * group.get("lr_scale", 1.0)  # absent in checkpoints older than the key
            if epoch == 0:
                self.model.fill_banks(self.train_embeddings())
            weights = self.schedule.weights(epoch)
            clustering = self.cluster() if weights.clustering else None
            row: dict[str, Any] = {"epoch": epoch, "lr": lr, **weights.as_dict()}
            row.update(self.train_epoch(epoch, clustering))
            self.epoch = epoch + 1
            D.broadcast_buffers(self.model.encoder_k)  # identical key BatchNorm statistics everywhere
            if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs:
                report = self.evaluate()
                row["eval"] = report
                row["score"] = selection_score(report, cfg.eval_ks[0])
                if D.is_main():  # only process 0's rows are written
                    row["alignment"] = self.alignment()
                if self.best is None or row["score"] > self.best["score"]:
                    self.best = {"epoch": epoch, "score": row["score"], "eval": report}
                    if D.is_main():
                        runs.atomic_torch_save({"epoch": epoch, "model": self.model.state_dict(),
                                                "config": cfg.to_dict()}, self.run.file(runs.BEST))
            row["wall_seconds"] = time.time() - t0
            self.rows.append(runs.plain(row))
            if D.is_main():  # one process writes the run folder; the checkpoint holds the rows too
                self.run.save_last(self.state())
                self.run.append_history(row)
                self.log(_format_row(row))
            D.barrier()
        history = self.run.history()
        if D.is_main():
            runs.write_json(self.run.file(runs.SUMMARY), summarize(history, cfg))
        D.barrier()
        return history


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
        "seed": cfg.seed, "domains": list(cfg.domains),
        "last": {"epoch": last["epoch"], "eval": last["eval"]},
        "best": {"epoch": best["epoch"], "eval": best["eval"],
                 "selection": f"max mean P@{cfg.eval_ks[0]} of both directions, chosen on the evaluation labels "
                              "(the reference's protocol; optimistic)"},
    }


def _format_row(row: dict[str, Any]) -> str:
    parts = [f"epoch {row['epoch']}", f"lr {row['lr']:.2e}", f"loss {row.get('loss_total', float('nan')):.4f}"]
    if "eval" in row:
        for direction, m in row["eval"].items():
            parts.append(f"{direction} " + " ".join(f"{k} {v:.1f}" for k, v in m.items()))
    parts.append(f"{row['wall_seconds']:.1f}s")
    return " | ".join(parts)
