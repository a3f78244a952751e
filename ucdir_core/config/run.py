"""The run configuration: the part every method shares (data, backbone, input pipeline, k-means,
optimisation, epochs, evaluation, run) plus the chosen method's own parameters.

A method's parameters (and the alignment stage's, :class:`~ucdir_core.align.params.AlignmentParams`)
are their own frozen dataclass next to their code
(:class:`~ucdir_core.method.ucdir_params.UCDIRParams`,
:class:`~ucdir_core.method.protoot_params.ProtoOTParams`). Keys keep one flat namespace for the
user: ``--set threshold=0.3`` and ``cfg.replace(threshold=0.3)`` reach the chosen method's
parameters; a key of another method is refused in one line naming the method it belongs to.
``config.json`` holds the shared keys, ``method``, ``method_params`` and ``alignment_params``; files
written before
(one flat dict, old key names) still load.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field, fields
from typing import Any

from ucdir_core.align.params import AlignmentParams
from ucdir_core.base.params import (AT_LEAST_ONE, FRACTION_OPEN, NON_NEGATIVE, POSITIVE, Params, Range, one_of,
                                    parse_value, within)
from ucdir_core.method.params import METHOD_PARAMS, owners, params_class
from ucdir_core.method.ucdir_params import UCDIRParams

_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


@dataclass(frozen=True)
class RunConfig(Params):
    """Every knob of a run. Epochs are 0-based everywhere.

    Attributes:
        method_params: the chosen method's parameters; :attr:`method` is its name.

    Raises:
        ValueError: a value outside its range, or values that do not fit together (one line).
    """

    # --- data ---
    dataset: str = "digits"  #: known benchmark name (domains/classes) or "folder" for any ImageFolder root
    root: str | None = None  #: dataset root holding one folder per domain; None = build digits in the data home
    domains: tuple[str, str] = ("handwritten", "printed")  #: (domain A, domain B) folder names
    split: str = one_of("full", "heldout", default="full")  #: full: train and evaluate on all images (the reference)
    heldout_fraction: float = within(FRACTION_OPEN, 0.2)  #: per-class fraction held out when split="heldout"
    split_seed: int = within(NON_NEGATIVE, 0)  #: seed of the held-out split
    image_size: int = within(AT_LEAST_ONE, 224)  #: crop size of training and evaluation views
    resize_size: int = within(AT_LEAST_ONE, 256)  #: evaluation Resize before CenterCrop(image_size)
    max_images_per_domain: int | None = within(Range(2), None)  #: a seeded subset of each domain (smoke runs)
    # --- model ---
    backbone: str = "efficientnet_lite0"  #: efficientnet_lite0 | resnet50_moco | small_cnn | tv:NAME | timm:NAME
    checkpoint: str | None = None  #: MoCo v2 checkpoint file for backbone=resnet50_moco
    feature_dim: int = within(AT_LEAST_ONE, 128)  #: embedding size
    mlp: bool = True  #: MLP head Linear(D,D)-ReLU-Linear(D,128); False = one Linear
    momentum: float = within(Range(0, 1, hi_open=True), 0.999)  #: key-encoder momentum m
    #: "random" (reference) or "pca": identity + PCA of the backbone's features (models.encoders.init_head_pca)
    head_init: str = one_of("random", "pca", default="random")
    key_bn_splits: int = within(AT_LEAST_ONE, 2)  #: key batch shuffled and normalised in this many groups
    # --- method ---
    #: the chosen method's parameters (ucdir: Hu & Lee, ECCV 2022; protoot: Li et al., AAAI 2024)
    method_params: Params = field(default_factory=UCDIRParams)
    #: the label-free alignment stage applied to the trained embeddings (none: off; ucdir_core.align)
    alignment_params: AlignmentParams = field(default_factory=AlignmentParams)
    # --- k-means (faiss), used by every method's per-epoch clustering ---
    num_clusters: tuple[int, ...] = within(AT_LEAST_ONE, (65,))  #: K values of k-means (the shipped scripts use one)
    kmeans_iters: int = within(AT_LEAST_ONE, 20)
    kmeans_restarts: int = within(AT_LEAST_ONE, 5)
    kmeans_max_points_per_centroid: int = within(AT_LEAST_ONE, 2000)
    kmeans_min_points_per_centroid: int = within(NON_NEGATIVE, 2)
    # --- optimisation ---
    epochs: int = within(AT_LEAST_ONE, 200)
    batch_size: int = within(Range(2), 64)  #: images per domain per step; the last incomplete batch is dropped
    #: on data so small that batch_size would give fewer steps per epoch than this, the batch shrinks
    #: (to 2 at the least) so that each epoch has at least this many steps; 0: never (the reference)
    min_steps_per_epoch: int = within(NON_NEGATIVE, 0)
    lr: float = within(POSITIVE, 2e-4)
    #: the backbone's learning rate is lr times this (the projection head keeps lr); 1.0 is the reference
    backbone_lr_scale: float = within(POSITIVE, 1.0)
    optimizer: str = one_of("sgd", "adam", default="sgd")  #: sgd (momentum; UCDIR's) or adam (AMSGrad; ProtoOT's)
    lr_schedule: str = one_of("cosine", "constant", default="cosine")  #: cosine (UCDIR's) or constant (ProtoOT's)
    sgd_momentum: float = within(Range(0, 1, hi_open=True), 0.9)
    weight_decay: float = within(NON_NEGATIVE, 1e-4)
    trainable: str = one_of("all", "head", default="all")  #: all, or head (backbone frozen, kept in eval mode)
    freeze_bn: bool = False  #: keep the backbone's BatchNorm layers in eval mode (pretrained statistics)
    #: freeze the backbone's first stages and cache their outputs (None: end to end)
    trunk_blocks: int | None = within(NON_NEGATIVE, None)
    cached_views: int = within(NON_NEGATIVE, 0)  #: augmented views per image precomputed through the frozen trunk
    cache_seed: int = within(NON_NEGATIVE, 0)  #: seed of the cached views' augmentations
    # --- evaluation ---
    eval_ks: tuple[int, ...] = within(AT_LEAST_ONE, (1, 5, 15))  #: reported P@k; the first selects the best epoch
    eval_every: int = within(AT_LEAST_ONE, 1)  #: evaluate every this many epochs (and always after the last)
    # --- run ---
    seed: int = within(NON_NEGATIVE, 0)
    device: str = "auto"  #: auto (cuda, then mps, then cpu) or a torch device string
    amp: bool = True  #: mixed precision; only takes effect on CUDA
    workers: int = within(NON_NEGATIVE, 2)  #: DataLoader worker processes decoding images
    eval_batch_size: int = within(AT_LEAST_ONE, 256)
    #: all: last.pt, prev.pt (the one before it, read when last.pt is unreadable) and best.pt;
    #: last: last.pt only (the smoke runs: a third of the disk)
    keep_checkpoints: str = one_of("all", "last", default="all")

    def __post_init__(self) -> None:
        if not isinstance(self.alignment_params, AlignmentParams):
            raise ValueError(f"alignment_params must be AlignmentParams, got {type(self.alignment_params).__name__}")
        if type(self.method_params) not in METHOD_PARAMS.values():
            raise ValueError(f"method_params must be one method's parameters, got {type(self.method_params).__name__}")
        self.check()
        needs = getattr(self.method_params, "needs_alignment_stage", ())
        if needs and self.alignment_params.alignment == "none":
            raise ValueError(f"{needs[0]} needs an alignment stage: set alignment=harmony (or centred)")
        if len(self.domains) != 2 or self.domains[0] == self.domains[1]:
            raise ValueError(f"domains must be two different names, got {self.domains!r}")
        if not self.num_clusters or not self.eval_ks:
            raise ValueError("num_clusters and eval_ks must each hold at least one value")
        if self.trunk_blocks is not None and self.cached_views < 2:
            raise ValueError("trunk_blocks needs cached_views >= 2")
        if not _DEVICE.fullmatch(self.device):
            raise ValueError(f"device must be auto, cpu, cuda, cuda:N or mps, got {self.device!r}")

    @property
    def method(self) -> str:
        """The training method's name (``ucdir`` or ``protoot``; :mod:`ucdir_core.method.params`)."""
        return type(self.method_params).method  # type: ignore[attr-defined]

    def replace(self, **changes: Any) -> "RunConfig":
        """A copy with ``changes`` applied (checked again). ``method=NAME`` switches to that
        method with its default parameters (applied first); keys of the chosen method's parameters
        go to :attr:`method_params`.

        Raises:
            ValueError: an unknown key, a key of another method's parameters (naming it), or a
                value the checks refuse.
        """
        params = self.method_params
        if "method" in changes:
            name = changes.pop("method")
            if name != self.method:
                params = params_class(name)()
        if "method_params" in changes:
            params = changes.pop("method_params")
        shared = {k: changes.pop(k) for k in list(changes) if k in SHARED_KEYS}
        align = {k: changes.pop(k) for k in list(changes) if k in AlignmentParams.keys()}
        if align:
            shared["alignment_params"] = shared.get("alignment_params", self.alignment_params).replace(**align)
        for key in changes:
            if key not in type(params).keys():
                raise ValueError(foreign_key_message(key, type(params).method))  # type: ignore[attr-defined]
        if changes:
            params = params.replace(**changes)
        return dataclasses.replace(self, method_params=params, **shared)

    def to_dict(self) -> dict[str, Any]:
        """The config as ``config.json`` holds it: shared keys, ``method``, ``method_params``,
        ``alignment_params``."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in COMPONENTS}
        out = {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}
        return {**out, "method": self.method, "method_params": self.method_params.to_dict(),
                "alignment_params": self.alignment_params.to_dict()}

    def flat(self, resolved: bool = False) -> dict[str, Any]:
        """Every key of the run in one namespace (the names ``--set`` takes): shared keys,
        ``method`` and the method's parameters; with ``resolved``, schedule values as the epochs
        they name in this run (so that a share and the epoch it names compare equal)."""
        d = (self.pinned() if resolved else self).to_dict()
        return {**{k: v for k, v in d.items() if k not in COMPONENTS}, **d["method_params"], **d["alignment_params"]}

    def pinned(self) -> "RunConfig":
        """This config with the method's schedule shares replaced by the epochs they name in this
        run (a resumed run that changes ``epochs`` keeps the schedule it started with)."""
        return dataclasses.replace(self, method_params=self.method_params.pinned(self.epochs))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunConfig":
        """The config a dict describes: as :meth:`to_dict` writes it, or one flat dict as files
        written before the methods owned their parameters hold it. Keys under old names
        (:data:`LEGACY_KEYS`) are read under the new ones; in a flat dict, keys of another
        method's parameters (an old file holds every method's) are dropped, as they did nothing.

        Raises:
            ValueError: an unknown key, or a value the checks refuse.
        """
        if not isinstance(data, dict):
            raise ValueError(f"a config must be a JSON object, got {type(data).__name__}")
        data = {LEGACY_KEYS.get(k, k): v for k, v in data.items()}
        nested = data.pop("method_params", None)
        align = data.pop("alignment_params", None) or {}
        if not isinstance(align, dict):
            raise ValueError("alignment_params must be a JSON object")
        align = {**align, **{k: data.pop(k) for k in list(data) if k in AlignmentParams.keys()}}
        pcls = params_class(data.pop("method", "ucdir"))
        if nested is not None:
            if not isinstance(nested, dict):
                raise ValueError("method_params must be a JSON object")
            own = {LEGACY_KEYS.get(k, k): v for k, v in nested.items()}
            foreign = sorted(set(own) - set(pcls.keys()))
            if foreign:
                raise ValueError(foreign_key_message(foreign[0], pcls.method))  # type: ignore[attr-defined]
        else:
            own = {k: data.pop(k) for k in list(data) if k in pcls.keys()}
            for k in [k for k in data if k not in SHARED_KEYS and owners(k)]:
                data.pop(k)
        unknown = sorted(set(data) - set(SHARED_KEYS))
        if unknown:
            raise ValueError(f"unknown config keys: {', '.join(unknown)}")
        params = pcls(**own)
        return cls(method_params=params, alignment_params=AlignmentParams(**align),
                   **{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})

    def with_overrides(self, overrides: list[str]) -> "RunConfig":
        """Apply ``key=value`` strings, e.g. ``["epochs=5", "num_clusters=7,14", "threshold=0.3"]``.

        Raises:
            ValueError: a malformed item, an unknown key, another method's key, or a bad value.
        """
        changes: dict[str, Any] = {}
        for item in overrides:
            if "=" not in item:
                raise ValueError(f"override {item!r} is not of the form key=value")
            key, raw = override_key(item), item.split("=", 1)[1].strip()
            ftype = key_type(key)
            try:
                changes[key] = parse_value(ftype, raw)
            except ValueError as exc:
                raise ValueError(f"config key {key}: {exc}") from None
        return self.replace(**changes)


#: the run config's fields that hold a component's own parameters
COMPONENTS = ("method_params", "alignment_params")
#: the keys every method shares (the run config's own fields)
SHARED_KEYS: tuple[str, ...] = tuple(f.name for f in fields(RunConfig) if f.name not in COMPONENTS)


def key_type(key: str) -> Any:
    """The annotation of config key ``key`` (a shared key, ``method`` or any method's parameter).

    Raises:
        ValueError: no such key (the message lists the keys).
    """
    if key == "method":
        return "str"
    for f in fields(RunConfig):
        if f.name == key and key not in COMPONENTS:
            return f.type
    for cls in (AlignmentParams, *METHOD_PARAMS.values()):
        for f in fields(cls):  # type: ignore[arg-type]
            if f.name == key:
                return f.type
    known = sorted({*SHARED_KEYS, "method", *AlignmentParams.keys(),
                    *(k for c in METHOD_PARAMS.values() for k in c.keys())})
    raise ValueError(f"unknown config key {key!r}; known: {', '.join(known)}")


def foreign_key_message(key: str, method: str) -> str:
    """One line refusing ``key`` for a config that trains ``method``."""
    belong = [m for m in owners(key) if m != method]
    if belong:
        return (f"{key} is a parameter of method {' and '.join(belong)}, not of {method} (the method this config "
                f"trains); pass --method {belong[0]} to train it")
    return f"unknown config key {key!r}"


def config_differences(saved: Any, cfg: RunConfig, ignore: tuple[str, ...] = ()) -> list[str]:
    """The flat keys, sorted, in which ``saved`` (a config as written to a file: a dict) differs
    from ``cfg``; keys added since it was written take their defaults, keys in ``ignore`` are not
    compared, schedule values are compared as the epochs they name in each run
    (:meth:`RunConfig.flat`), and keys that neither config reads (Harmony's settings when neither
    aligns with Harmony, :meth:`~ucdir_core.align.params.AlignmentParams.unread_keys`) are not
    differences. ``["config (unreadable: ...)"]`` when ``saved`` is no readable config."""
    try:
        saved_cfg = RunConfig.from_dict(saved)
    except (TypeError, ValueError) as e:
        return [f"config (unreadable: {e})"]
    old, new = saved_cfg.flat(resolved=True), cfg.flat(resolved=True)
    unread = set(saved_cfg.alignment_params.unread_keys()) & set(cfg.alignment_params.unread_keys())
    return sorted(k for k in set(old) | set(new) if k not in ignore and k not in unread and old.get(k) != new.get(k))


def override_key(item: str) -> str:
    """The config key a ``key=value`` override names (dashes read as underscores, an old name
    read as its new one, :data:`LEGACY_KEYS`)."""
    key = item.split("=", 1)[0].strip().replace("-", "_")
    return LEGACY_KEYS.get(key, key)


#: Keys that ``ucdir train --resume --set KEY=VALUE`` may change in a run that continues (optimisation
#: and evaluation settings: the data, the model's shapes and the method stay as they were).
RESUMABLE_KEYS = ("lr", "weight_decay", "sgd_momentum", "backbone_lr_scale", "temperature", "epochs", "eval_every",
                  "keep_checkpoints",
                  "eval_batch_size", "workers", "device", "amp")

#: Config keys renamed since files were written; a config written with the old key is read under the new one.
LEGACY_KEYS: dict[str, str] = {
    "inst_weight": "instance_contrastive_weight",
    "warmup_epochs": "clustering_start",
    "cw_start": "cluster_contrastive_ramp_after",
    "cw_sat": "cluster_contrastive_ramp_end",
    "cw_weight_start": "cluster_contrastive_weight_initial",
    "cw_weight_sat": "cluster_contrastive_weight",
    "cluster_contrastive_start": "cluster_contrastive_ramp_after",
    "cluster_contrastive_sat": "cluster_contrastive_ramp_end",
    "cluster_contrastive_weight_start": "cluster_contrastive_weight_initial",
    "cluster_contrastive_weight_sat": "cluster_contrastive_weight",
    "se_temperature": "self_entropy_temperature",
    "se_weight": "self_entropy_weight",
    "se_start": "self_entropy_start",
    "se_center": "self_entropy_centred",
    "self_entropy_center": "self_entropy_centred",
    "dod_temperature": "distance_of_distance_temperature",
    "dod_weight": "distance_of_distance_weight",
    "dod_start": "distance_of_distance_start",
    "dod_center": "distance_of_distance_centred",
    "distance_of_distance_center": "distance_of_distance_centred",
}
