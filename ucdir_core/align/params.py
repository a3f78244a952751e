"""The alignment stage's own parameters, with their defaults and valid ranges. Free of torch, so
that a config can be read and checked without loading a model.

Harmony: Korsunsky et al., "Fast, sensitive and accurate integration of single-cell data with
Harmony", Nature Methods 16, 1289-1296 (2019); fitted with the ``harmonypy`` package (>= 2.1, the
C++ port of the R "harmony2" algorithm). Every ``harmony_*`` default below is
harmonypy's ``run_harmony`` default except three, chosen on the PACS tuning pairs (photo<->sketch,
art_painting<->sketch; ``python -m benchmarks.harmony_tuning``, ``results/harmony_tuning.json``: the
highest mean P@1 of UCDIR ``full`` and ProtoOT over a grid of 18): ``harmony_theta`` 1 (harmonypy's
is 2: a stronger diversity penalty), ``harmony_clusters`` 30 (harmonypy's is ``min(N / 30, 100)``,
which depends on the data) and ``harmony_pcs`` 20 (harmonypy takes principal components that the
caller computed).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import ClassVar

from ucdir_core.base.params import AT_LEAST_ONE, NON_NEGATIVE, POSITIVE, Params, Range, one_of, within

#: the alignments a run can choose
ALIGNMENTS = ("none", "centred", "harmony")
#: (0, 1]
_SHARE = Range(0, 1, lo_open=True)
#: harmonypy seeds a 32-bit generator with a C ``int``
_SEED = Range(0, 2**31 - 1)


@dataclass(frozen=True)
class AlignmentParams(Params):
    """The alignment stage's settings: which correction, and Harmony's settings when it is Harmony.

    - ``none``: the embeddings as they are (unit rows).
    - ``centred``: each domain's embedding minus the mean of that domain's training embeddings,
      then unit rows.
    - ``harmony``: Harmony (Korsunsky et al., Nature Methods 2019; ``harmonypy``) on the principal
      components of both domains' training embeddings, the domain as the batch variable; see
      :mod:`ucdir_core.align.stage` for how a new embedding is corrected.

    The ``harmony_*`` keys are read only when ``alignment`` is ``harmony``.

    Raises:
        ValueError: a value outside its range or choices, or a non-integer count (one line naming
            the key).
    """

    owner: ClassVar[str] = "alignment"

    alignment: str = one_of(*ALIGNMENTS, default="none")
    harmony_theta: float = within(NON_NEGATIVE, 1.0)  #: diversity penalty (harmonypy ``theta``; 0 = plain soft k-means)
    harmony_clusters: int = within(AT_LEAST_ONE, 30)  #: number of clusters K (harmonypy ``nclust``)
    harmony_pcs: int = within(AT_LEAST_ONE, 20)  #: principal components of the embeddings Harmony corrects
    harmony_seed: int = within(_SEED, 0)  #: harmonypy ``random_state`` (k-means start, update order)
    harmony_sigma: float = within(POSITIVE, 0.1)  #: width of the soft assignment (harmonypy ``sigma``)
    #: the ridge penalty of each cluster's batch-effect regression is ``alpha`` times the cluster's
    #: expected number of images of the domain (harmonypy ``alpha``, with ``lamb=None``)
    harmony_alpha: float = within(POSITIVE, 0.2)
    harmony_max_iter: int = within(AT_LEAST_ONE, 10)  #: harmonypy ``max_iter_harmony``
    harmony_max_iter_kmeans: int = within(AT_LEAST_ONE, 4)  #: harmonypy ``max_iter_kmeans``
    harmony_epsilon_cluster: float = within(NON_NEGATIVE, 1e-3)  #: harmonypy ``epsilon_cluster``
    harmony_epsilon_harmony: float = within(NON_NEGATIVE, 1e-2)  #: harmonypy ``epsilon_harmony``
    #: share of the images re-assigned per block (harmonypy ``block_size``)
    harmony_block_size: float = within(_SHARE, 0.05)

    def for_data(self, images: int, dim: int) -> "AlignmentParams":
        """These settings as a fit on ``images`` embeddings of dimension ``dim`` can take them:
        ``harmony_pcs`` at most ``min(dim, images - 1)`` and ``harmony_clusters`` at most ``images``
        (a small folder of one's own); unchanged where they fit, which is every benchmark here. The
        fitted model records the values it used."""
        if self.alignment != "harmony":
            return self
        return self.replace(harmony_pcs=max(1, min(self.harmony_pcs, dim, images - 1)),
                            harmony_clusters=max(1, min(self.harmony_clusters, images)))

    def unread_keys(self) -> tuple[str, ...]:
        """The keys this setting does not read: the ``harmony_*`` keys unless ``alignment`` is
        ``harmony``. Two configs that differ only in keys both leave unread train the same run."""
        return () if self.alignment == "harmony" else tuple(k for k in self.keys() if k.startswith("harmony_"))

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type in ("int", int) and (isinstance(value, bool) or not isinstance(value, int)):
                raise ValueError(f"{f.name} must be an integer, got {value!r}")
        self.check()
