"""What a training method provides to the trainer, so that the trainer never asks which one it runs.

A method (UCDIR, :mod:`ucdir_core.method.ucdir`; its successor ProtoOT beside it) shares the
model of both: query and key encoders, the momentum update and one id-indexed memory bank per
domain (:class:`~ucdir_core.models.encoders.MomentumEncoders`). It differs in

- its loss of one step, from the step's queries, keys, banks and ids (:class:`StepBatch`), and
  the named terms it logs (:meth:`Method.loss`);
- what it recomputes at the start of every epoch, such as k-means clusterings or prototypes
  (:meth:`Method.begin_epoch`, given an :class:`EpochContext`);
- its per-epoch loss weights (:meth:`Method.weights`), logged as ``w_<term>``, and the epochs at
  which its terms switch on;
- whatever it keeps between steps (evolving prototypes), which goes into the checkpoint
  (:meth:`Method.state_dict`) so that a resumed run continues exactly.

A method is built from its own parameters (:mod:`ucdir_core.method.params`), the K values of the
shared k-means and the run's number of epochs (schedules stated as shares of training resolve
against it); it never reads the run config. The optimiser and the learning-rate schedule are shared
keys of the run config, as is everything else not named here.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

from torch import Tensor

from ucdir_core.base.pair import DomainPair
from ucdir_core.base.params import Params
from ucdir_core.method.clustering import Clustering


@dataclass
class StepBatch:
    """What one training step gives a method: L2-normalised query embeddings (with gradient), key
    embeddings (none), both memory banks (the batch's keys already written into their slots, as
    the reference does) and the images' ids within their domains.

    Shape:
        q, k: DomainPair of (n, d); banks: DomainPair of (N_d, d); ids: DomainPair of (n,) long.
    """

    q: DomainPair[Tensor]
    k: DomainPair[Tensor]
    banks: DomainPair[Tensor]
    ids: DomainPair[Tensor]


@dataclass
class EpochContext:
    """What a method may use at the start of an epoch.

    Attributes:
        epoch: the 0-based epoch about to run.
        banks: both memory banks (filled with evaluation embeddings at epoch 0).
        train_embeddings: returns the key encoder's evaluation embeddings of every training image
            (computed once per model version, shared with evaluation).
        cluster: k-means of each domain's rows of the given embeddings for every K of
            ``num_clusters``, with the config's k-means settings; run once (on process 0 under
            DDP) and given to every process.
        cluster_jointly: k-means of both domains' rows together, found after the run's alignment
            stage when it has one, prototypes shared by both domains
            (:func:`~ucdir_core.method.clustering.cluster_jointly`); as ``cluster`` otherwise.
        align: the given rows after the run's alignment stage, fitted now on the training embeddings
            (the rows themselves when the run has none); computed once and given to every process.
    """

    epoch: int
    banks: DomainPair[Tensor]
    train_embeddings: Callable[[], DomainPair[Tensor]]
    cluster: Callable[[DomainPair[Tensor]], DomainPair[Clustering]]
    cluster_jointly: Callable[[DomainPair[Tensor]], DomainPair[Clustering]] | None = None
    align: Callable[[DomainPair[Tensor]], DomainPair[Tensor]] | None = None


class Method(ABC):
    """One training method behind the trainer. Subclasses set :attr:`name` and :attr:`terms`.

    Args:
        params: the method's own parameters (its class in :data:`~ucdir_core.method.params.METHOD_PARAMS`).
        num_clusters: the K values of the per-epoch k-means (shared key ``num_clusters``).
        epochs: the run's number of epochs.

    Attributes:
        name: the config's ``method`` value.
        terms: the names of its loss terms, in the order they are logged (``loss_<term>``,
            ``w_<term>``); the same names as the config keys and the tables use.

    Raises:
        ValueError: a term weighted above 0 that would never switch on within ``epochs`` (one line
            naming the term, the epoch it starts and the fix).
    """

    name: ClassVar[str]
    terms: ClassVar[tuple[str, ...]]

    def __init__(self, params: Params, num_clusters: tuple[int, ...], epochs: int):
        self.params = params
        self.num_clusters = num_clusters
        self.epochs = epochs

    def check_switch_on(self, starts: dict[str, tuple[str, float]]) -> None:
        """Refuse a term whose weight is above 0 but which is never on within the run's epochs.

        Args:
            starts: ``{term: (the key naming its start, its weight)}`` for the terms to check.

        Raises:
            ValueError: one line naming the term, its start key and value, and what to change.
        """
        on = self.switch_on_epochs(self.epochs)
        for term, (key, weight) in starts.items():
            if weight > 0 and on.get(term) is None:
                raise ValueError(
                    f"{term} is weighted {weight:g} but never switches on in {self.epochs} epoch(s) "
                    f"({key}={getattr(self.params, key)!r}); train more epochs, set {key} earlier (an epoch, or "
                    f"a share of training such as 0.5), or set its weight to 0")

    @abstractmethod
    def weights(self, epoch: int) -> dict[str, float]:
        """The weight of every term at ``epoch`` (0 = not computed that epoch)."""

    @abstractmethod
    def begin_epoch(self, context: EpochContext) -> None:
        """Recompute what the method keeps per epoch (clusterings, prototypes, marginals)."""

    @abstractmethod
    def loss(self, batch: StepBatch) -> tuple[Tensor, dict[str, float]]:
        """The weighted loss of one step (a scalar with gradient to ``batch.q``) and the value of
        every term of :attr:`terms` (0.0 for a term not computed)."""

    def state_dict(self) -> dict[str, Any]:
        """What the method keeps between steps, as tensors and plain values (saved in ``last.pt``)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""

    def switch_on_epochs(self, epochs: int) -> dict[str, int | None]:
        """The first epoch at which each term other than the first has a nonzero weight (None: never)."""
        return {name: next((e for e in range(epochs) if self.weights(e)[name] > 0), None) for name in self.terms[1:]}
