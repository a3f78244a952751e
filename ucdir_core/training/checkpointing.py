"""What a trainer writes into its checkpoint and reads back on resume (the part of
:class:`~ucdir_core.training.trainer.Trainer` that is about ``last.pt``): everything a resumed run
needs to continue bit-identically, as tensors and plain values (loadable with ``weights_only=True``)."""

from __future__ import annotations

from typing import Any

from ucdir_core.base import distributed as D
from ucdir_core.base.io import plain
from ucdir_core.base.seeding import rng_state, set_rng_state
from ucdir_core.training import runs


class Checkpointing:
    """The checkpoint side of a trainer: its state (model, optimiser, method, best epoch, the
    history's rows, the random generators) and the resume from ``last.pt``. Mixed into
    :class:`~ucdir_core.training.trainer.Trainer`, whose attributes it reads and sets (``model``,
    ``optim``, ``method``, ``best``, ``rows``, ``next_epoch``, ``embedder``, ``run``, ``cfg``,
    ``identity``, ``log``)."""

    def state(self) -> dict[str, Any]:
        """Everything a resume needs, as tensors and plain values (loadable with ``weights_only=True``);
        ``epoch`` is the last epoch done (0-based)."""
        return {
            "epoch": self.next_epoch - 1, "model": self.model.state_dict(), **self.optim.state_dict(),
            "best": plain(self.best), "config": self.cfg.to_dict(),
            "history": plain(self.rows), "rng": rng_state(), "method": self.method.state_dict(),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state` returned (the epoch read with either checkpoint convention)."""
        self.model.load_state_dict(state["model"])
        self.optim.load_state_dict(state)
        self.method.load_state_dict(state.get("method", {}))
        self.next_epoch, self.best = runs.checkpoint_epoch(state) + 1, state["best"]
        self.rows = list(state.get("history", []))
        set_rng_state(state["rng"])
        self.embedder.changed()

    def resume(self) -> bool:
        """Continue from ``last.pt`` (or ``prev.pt``) if the run folder has one; True if it did.
        The history is rewritten from the checkpoint's rows, whatever the point of the kill."""
        found = self.run.checked_last(self.cfg, self.identity, {n: b.shape[0] for n, b in
                                                                 (("bank_a", self.model.bank_a), ("bank_b", self.model.bank_b))},
                                      self.log)
        if found is None:
            return False
        state, path = found
        self.load_state(state)
        if D.is_main():
            self.run.resumed_from(path, self.cfg, self.rows)
        D.barrier()
        self.log(f"resumed {self.run.path} at epoch {self.next_epoch} from {path.name}")
        return True
