"""ProtoOT's own parameters (``../shared/protoot-spec.md``), with their defaults (the released
values), valid ranges and its table rows. Free of torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ucdir_core.base.params import (AT_LEAST_ONE, NON_NEGATIVE, POSITIVE, EpochOrShare, Params, epoch_or_share,
                                    one_of, within)


@dataclass(frozen=True)
class ProtoOTParams(Params):
    """ProtoOT's losses, transport plan and schedule (Li, Shi, Yu & Wang, AAAI 2024).

    ``cross_domain_start`` is an int epoch or a float share of the run's epochs; the released 0.5
    is "from half of training" (epoch 100 of 200, epoch 2 of 5). The three string keys select the
    released behaviour or an opt-in correction (docs/protoot.md).

    Raises:
        ValueError: a value outside its range (one line naming the key and the range).
    """

    method: ClassVar[str] = "protoot"
    owner: ClassVar[str] = "method protoot"
    divergence_keys: ClassVar[tuple[str, ...]] = ("temperature", "sinkhorn_epsilon")

    temperature: float = within(POSITIVE, 0.2)  #: temperature of the in-domain and cross-domain losses
    cross_domain_weight: float = within(NON_NEGATIVE, 0.01)  #: weight of the cross-domain loss (spec 5)
    cross_domain_start: EpochOrShare = epoch_or_share(0.5)  #: the cross-domain loss is on from this epoch
    #: weight of a cross-domain neighbour positive (beyond the spec, opt-in; 0 = off), on with the
    #: cross-domain loss (ucdir_core.method.prototype_losses.cross_domain_neighbour_loss)
    cross_domain_neighbour_weight: float = within(NON_NEGATIVE, 0.0)
    in_domain_neighbour_weight: float = within(NON_NEGATIVE, 0.5)  #: bank-neighbour positive of the in-domain loss
    in_domain_prototype_weight: float = within(NON_NEGATIVE, 0.1)  #: prototype positive of the in-domain loss
    sinkhorn_epsilon: float = within(POSITIVE, 0.05)  #: entropic regularisation of the transport plan (spec 3)
    sinkhorn_iterations: int = within(AT_LEAST_ONE, 3)
    #: "normalised": bank-to-prototype similarities L2-normalised per row before the plan's exponential
    #: (as released); "cosine": plain cosines (a correction, opt-in)
    transport_similarity: str = one_of("normalised", "cosine", default="normalised")
    #: "normalised": cross-domain negatives are the L2-normalised row of q P_e^T, the positive not (as
    #: released); "cosine": both plain cosines (a correction); "joint": plain cosines with the own
    #: domain's K prototypes among the negatives (beyond the spec, opt-in)
    cross_domain_negatives: str = one_of("normalised", "cosine", "joint", default="normalised")
    #: "kmeans": the marginal keeps the epoch's k-means cluster order (as released); "matched": matched
    #: to the prototypes first (a correction, opt-in)
    marginal_order: str = one_of("kmeans", "matched", default="kmeans")

    def __post_init__(self) -> None:
        self.check()


#: ProtoOT's table rows as parameter changes: the in-domain loss alone, and the method
ROWS: dict[str, dict[str, Any]] = {
    "protoot_in_domain": dict(cross_domain_weight=0.0),
    "protoot": {},
}
