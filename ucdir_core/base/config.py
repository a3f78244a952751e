"""Run configuration: one frozen dataclass whose named presets carry the paper's values.

The ``office_home`` and ``domainnet`` presets are the values of the reference's shipped training
scripts (``../shared/ucdir-spec.md`` section 3), not its argparse defaults, which differ. The
``pacs`` and ``digits`` presets are this project's own choices, documented field by field below.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass, fields
from typing import Any


@dataclass(frozen=True)
class UCDIRConfig:
    """Every knob of a UCDIR run. Epochs are 0-based everywhere."""

    # --- data ---
    dataset: str = "digits"  #: known benchmark name (domains/classes) or "folder" for any ImageFolder root
    root: str | None = None  #: dataset root holding one folder per domain; None = build digits in the run folder
    domains: tuple[str, str] = ("handwritten", "printed")  #: (domain A, domain B) folder names
    split: str = "full"  #: "full" (train and evaluate on all images, the reference protocol) or "heldout"
    heldout_fraction: float = 0.2  #: per-class fraction held out for evaluation when split="heldout"
    split_seed: int = 0  #: seed of the held-out split
    image_size: int = 224  #: crop size of training and evaluation views
    resize_size: int = 256  #: evaluation Resize before CenterCrop(image_size)
    max_images_per_domain: int | None = None  #: take a seeded subset of each domain (smoke runs)
    # --- model ---
    backbone: str = "efficientnet_lite0"  #: efficientnet_lite0 | resnet50_moco | small_cnn | tv:NAME | timm:NAME
    checkpoint: str | None = None  #: MoCo v2 checkpoint file for backbone=resnet50_moco
    feature_dim: int = 128  #: embedding size
    mlp: bool = True  #: MLP head Linear(D,D)-ReLU-Linear(D,128); False = one Linear
    momentum: float = 0.999  #: key-encoder momentum m
    #: "random" (reference) or "pca": identity + PCA of the backbone's features (see method.model.init_head_pca)
    head_init: str = "random"
    key_bn_splits: int = 2  #: key batch shuffled and normalised in this many groups (BatchNorm leakage guard)
    # --- method ---
    #: the training method: "ucdir" (Hu & Lee, ECCV 2022) or "protoot" (Li et al., AAAI 2024); method.registry
    method: str = "ucdir"
    temperature: float = 0.2  #: T of instance and cluster-wise contrastive losses and the confidence filter
    num_clusters: tuple[int, ...] = (65,)  #: K values of k-means (the shipped scripts use one)
    threshold: float = 0.2  #: confidence filter of the cluster-wise loss
    instance_contrastive_weight: float = 1.0  #: weight of the instance contrastive loss
    clustering_start: int = 20  #: k-means, and so the cluster-based losses, start at this epoch
    #: the cluster-wise contrastive weight is cluster_contrastive_weight_start while epoch <= this ...
    cluster_contrastive_start: int = 20
    cluster_contrastive_sat: int = 100  #: ... and cluster_contrastive_weight_sat from this epoch on (linear between)
    cluster_contrastive_weight_start: float = 0.0
    cluster_contrastive_weight_sat: float = 0.5
    self_entropy_temperature: float = 0.01  #: tau_se of self-entropy
    self_entropy_weight: float = 1.0
    self_entropy_start: int = 100  #: self-entropy on from this epoch
    distance_of_distance_weight: float = 0.5
    distance_of_distance_start: int = 100  #: distance-of-distance on from this epoch
    distance_of_distance_temperature: float = 0.01  #: fixed soft-assignment temperature of distance-of-distance
    #: centre queries and prototypes by their own domain's bank mean before the soft assignments of
    #: distance-of-distance (a deviation from the reference, off in the paper presets; see
    #: ucdir_core.method.ucdir.centred_assignment_inputs)
    distance_of_distance_center: bool = False
    #: the same centring before the soft assignments of self-entropy (a deviation; off in the paper presets)
    self_entropy_center: bool = False
    # --- ProtoOT (method="protoot"; ../shared/protoot-spec.md, docs/protoot.md) ---
    cross_domain_weight: float = 0.01  #: weight of the cross-domain loss (spec 5)
    cross_domain_start: int = 100  #: the cross-domain loss is on from this epoch (half of training)
    #: weight of a cross-domain neighbour positive (beyond the spec, opt-in; 0 = off): each query pulled to
    #: its key's nearest slot in the other domain's bank against both domains' prototypes, on with the
    #: cross-domain loss (ucdir_core.method.prototype_losses.cross_domain_neighbour_loss)
    cross_domain_neighbour_weight: float = 0.0
    in_domain_neighbour_weight: float = 0.5  #: weight of the bank-neighbour positive in the in-domain loss
    in_domain_prototype_weight: float = 0.1  #: weight of the prototype positive in the in-domain loss
    sinkhorn_epsilon: float = 0.05  #: entropic regularisation of the transport plan (spec 3)
    sinkhorn_iterations: int = 3
    #: "normalised": the bank-to-prototype similarities are L2-normalised per row before the plan's
    #: exponential (as released); "cosine": the plain cosine similarities (a correction, opt-in)
    transport_similarity: str = "normalised"
    #: "normalised": the cross-domain negatives are the L2-normalised row of q P_e^T while the positive
    #: is not (as released); "cosine": positive and negatives both plain cosines (a correction, opt-in);
    #: "joint": plain cosines with the own domain's K prototypes added to the negatives (beyond the spec,
    #: opt-in: the only variant whose loss changes when the other domain shifts as a whole)
    cross_domain_negatives: str = "normalised"
    #: "kmeans": the marginal keeps the epoch's k-means cluster order, not the evolving prototypes'
    #: (as released); "matched": k-means clusters matched to the prototypes first (a correction, opt-in)
    marginal_order: str = "kmeans"
    # --- k-means (faiss) ---
    kmeans_iters: int = 20
    kmeans_restarts: int = 5
    kmeans_max_points_per_centroid: int = 2000
    kmeans_min_points_per_centroid: int = 2
    # --- optimisation ---
    epochs: int = 200
    batch_size: int = 64  #: images per domain per step; the last incomplete batch is dropped
    #: on data so small that batch_size would give fewer steps per epoch than this, the batch shrinks
    #: (to 2 at the least) so that each epoch has at least this many steps; 0: never (the reference)
    min_steps_per_epoch: int = 0
    lr: float = 2e-4
    #: the backbone's learning rate is lr times this (the projection head keeps lr); 1.0 is the
    #: reference. Below 1 it lets more backbone stages train without moving the pretrained ones as
    #: fast as the randomly or PCA-initialised head.
    backbone_lr_scale: float = 1.0
    optimizer: str = "sgd"  #: "sgd" (momentum sgd_momentum; UCDIR's) or "adam" (Adam with AMSGrad; ProtoOT's)
    lr_schedule: str = "cosine"  #: "cosine" (set once per epoch; UCDIR's) or "constant" (ProtoOT's)
    sgd_momentum: float = 0.9
    weight_decay: float = 1e-4
    trainable: str = "all"  #: "all" or "head" (backbone frozen, kept in eval mode)
    freeze_bn: bool = False  #: keep the backbone's BatchNorm layers in eval mode (pretrained statistics)
    trunk_blocks: int | None = None  #: freeze the backbone's first stages and cache their outputs (None: end to end)
    cached_views: int = 0  #: augmented views per image precomputed through the frozen trunk (with trunk_blocks)
    cache_seed: int = 0  #: seed of the cached views' augmentations
    # --- evaluation ---
    eval_ks: tuple[int, ...] = (1, 5, 15)  #: reported P@k; the first is used to select the best epoch
    eval_every: int = 1  #: evaluate every this many epochs (and always after the last)
    # --- run ---
    seed: int = 0
    device: str = "auto"  #: auto (cuda, then mps, then cpu) or a torch device string
    amp: bool = True  #: mixed precision; only takes effect on CUDA
    workers: int = 2  #: DataLoader worker processes decoding images
    eval_batch_size: int = 256

    def __post_init__(self) -> None:
        if self.split not in ("full", "heldout"):
            raise ValueError(f"split must be 'full' or 'heldout', got {self.split!r}")
        if len(self.domains) != 2 or self.domains[0] == self.domains[1]:
            raise ValueError(f"domains must be two different names, got {self.domains!r}")
        if self.batch_size < 2:
            raise ValueError("batch_size must be at least 2")
        if not 0.0 < self.heldout_fraction < 1.0:
            raise ValueError("heldout_fraction must lie in (0, 1)")
        if self.head_init not in ("random", "pca"):
            raise ValueError("head_init must be 'random' or 'pca'")
        for name, allowed in (("transport_similarity", ("normalised", "cosine")),
                              ("cross_domain_negatives", ("normalised", "cosine", "joint")),
                              ("marginal_order", ("kmeans", "matched"))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        if self.sinkhorn_iterations < 1 or not self.sinkhorn_epsilon > 0:
            raise ValueError("sinkhorn_iterations must be at least 1 and sinkhorn_epsilon positive")
        if self.optimizer not in ("sgd", "adam"):
            raise ValueError(f"optimizer must be 'sgd' or 'adam', got {self.optimizer!r}")
        if self.lr_schedule not in ("cosine", "constant"):
            raise ValueError(f"lr_schedule must be 'cosine' or 'constant', got {self.lr_schedule!r}")
        if self.trainable not in ("all", "head"):
            raise ValueError("trainable must be 'all' or 'head'")
        if self.trunk_blocks is not None and self.cached_views < 2:
            raise ValueError("trunk_blocks needs cached_views >= 2")
        if any(k < 1 for k in self.num_clusters) or not self.num_clusters:
            raise ValueError("num_clusters must hold positive integers")
        if not self.eval_ks or any(k < 1 for k in self.eval_ks):
            raise ValueError(f"eval_ks must hold positive integers, got {self.eval_ks!r}")
        for name in ("epochs", "eval_every", "image_size", "resize_size", "feature_dim", "eval_batch_size",
                     "kmeans_iters", "kmeans_restarts"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)!r}")
        for name in [f.name for f in fields(self) if "_weight" in f.name]:
            if not math.isfinite(getattr(self, name)) or getattr(self, name) < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {getattr(self, name)!r}")
        if self.min_steps_per_epoch < 0:
            raise ValueError(f"min_steps_per_epoch must be 0 or more, got {self.min_steps_per_epoch!r}")
        if self.workers < 0:
            raise ValueError(f"workers must be 0 or more, got {self.workers!r}")
        if self.max_images_per_domain is not None and self.max_images_per_domain < 2:
            raise ValueError(f"max_images_per_domain must be at least 2, got {self.max_images_per_domain!r}")
        for name in ("temperature", "self_entropy_temperature", "distance_of_distance_temperature", "lr",
                     "backbone_lr_scale"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", self.device):
            raise ValueError(f"device must be auto, cpu, cuda, cuda:N or mps, got {self.device!r}")

    def replace(self, **changes: Any) -> "UCDIRConfig":
        """A copy with ``changes`` applied (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "UCDIRConfig":
        """The config a dict describes (as ``to_dict`` or ``config.json`` holds it). Keys written
        under their old names (:data:`LEGACY_KEYS`) are read under the new ones, so run folders
        and results files written before the rename load unchanged.

        Raises:
            ValueError: an unknown key, or a value the validation refuses.
        """
        known = {f.name for f in fields(cls)}
        data = {LEGACY_KEYS.get(k, k): v for k, v in data.items()}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown config keys: {', '.join(unknown)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})

    def with_overrides(self, overrides: list[str]) -> "UCDIRConfig":
        """Apply ``key=value`` strings, e.g. ``["epochs=5", "num_clusters=7,14"]``."""
        known = {f.name: f for f in fields(self)}
        changes: dict[str, Any] = {}
        for item in overrides:
            if "=" not in item:
                raise ValueError(f"override {item!r} is not of the form key=value")
            key, raw = override_key(item), item.split("=", 1)[1]
            if key not in known:
                raise ValueError(f"unknown config key {key!r}; known: {', '.join(sorted(known))}")
            try:
                changes[key] = _parse(known[key].type, raw.strip())
            except ValueError as exc:
                raise ValueError(f"config key {key}: {exc}") from None
        return self.replace(**changes)


def config_differences(saved: Any, cfg: UCDIRConfig, ignore: tuple[str, ...] = ()) -> list[str]:
    """The keys, sorted, in which ``saved`` (a config as written to a file: a dict) differs from
    ``cfg``; keys added since it was written take their defaults, keys in ``ignore`` are not
    compared. ``["config (unreadable: ...)"]`` when ``saved`` is no readable config."""
    try:
        old = UCDIRConfig.from_dict({**saved, **{k: getattr(cfg, k) for k in ignore}})
    except (TypeError, ValueError) as e:
        return [f"config (unreadable: {e})"]
    return sorted(k for k in cfg.to_dict() if getattr(old, k) != getattr(cfg, k))


def override_key(item: str) -> str:
    """The config key a ``key=value`` override names (dashes read as underscores, an old name
    read as its new one, :data:`LEGACY_KEYS`)."""
    key = item.split("=", 1)[0].strip().replace("-", "_")
    return LEGACY_KEYS.get(key, key)


#: Keys that ``ucdir train --resume --set KEY=VALUE`` may change in a run that continues (optimisation
#: and evaluation settings: the data, the model's shapes and the method stay as they were).
RESUMABLE_KEYS = ("lr", "weight_decay", "sgd_momentum", "backbone_lr_scale", "temperature", "epochs", "eval_every",
                  "eval_batch_size", "workers", "device", "amp")

#: Config keys renamed to the paper's loss names (one vocabulary in code, config, history and
#: tables); a config written with the old key is read under the new one.
LEGACY_KEYS: dict[str, str] = {
    "inst_weight": "instance_contrastive_weight",
    "warmup_epochs": "clustering_start",
    "cw_start": "cluster_contrastive_start",
    "cw_sat": "cluster_contrastive_sat",
    "cw_weight_start": "cluster_contrastive_weight_start",
    "cw_weight_sat": "cluster_contrastive_weight_sat",
    "se_temperature": "self_entropy_temperature",
    "se_weight": "self_entropy_weight",
    "se_start": "self_entropy_start",
    "se_center": "self_entropy_center",
    "dod_temperature": "distance_of_distance_temperature",
    "dod_weight": "distance_of_distance_weight",
    "dod_start": "distance_of_distance_start",
    "dod_center": "distance_of_distance_center",
}


def _parse(type_str: Any, raw: str) -> Any:
    t = str(type_str)
    if raw.lower() in ("none", "null") and "None" in t:
        return None
    if t.startswith("tuple[int"):
        return tuple(_int(v) for v in raw.split(",") if v)
    if t.startswith("tuple[str"):
        return tuple(v for v in raw.split(",") if v)
    if t.startswith("bool"):
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"not a boolean: {raw!r}")
    if t.startswith("int"):
        return _int(raw)
    if t.startswith("float"):
        try:
            return float(raw)
        except ValueError:
            raise ValueError(f"not a number: {raw!r}") from None
    return raw


def _int(raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"not an integer: {raw!r}") from None


#: The paper's setting: ResNet-50 from MoCo v2 (``--checkpoint FILE``; without one the command stops
#: and says so), 224 px, the shipped scripts' schedule.
_PAPER_COMMON = dict(
    backbone="resnet50_moco", clustering_start=20, temperature=0.2, threshold=0.2, momentum=0.999, lr=2e-4,
    batch_size=64, epochs=200, mlp=True, feature_dim=128, cluster_contrastive_start=20, cluster_contrastive_sat=100,
    cluster_contrastive_weight_start=0.0,
)

#: ProtoOT's released training values (``protoot-spec.md`` section 6): Adam with AMSGrad, lr
#: 0.00025 constant, weight decay 5e-4, 200 epochs, the cross-domain loss at 0.01 from epoch 100,
#: k-means with 50 iterations and 20 restarts; the model, batch, momentum and temperature are UCDIR's.
_PROTOOT_RELEASED = dict(
    method="protoot", backbone="resnet50_moco", optimizer="adam", lr=2.5e-4, lr_schedule="constant",
    weight_decay=5e-4, epochs=200, cross_domain_weight=0.01, cross_domain_start=100, momentum=0.999,
    temperature=0.2, batch_size=64, mlp=True, feature_dim=128, kmeans_iters=50, kmeans_restarts=20,
)

#: ProtoOT in this project's CPU regime (applied on top of a CPU preset): the released optimiser,
#: learning rate and weight decay (Adam beat the CPU regime's SGD on both tuning pairs), and the
#: released proportions of the schedule: the cross-domain loss from half of training (epoch 2 of 5,
#: as 100 of 200). One deviation: the cross-domain weight is 1.0, not 0.01; in 5 epochs the
#: released weight moves little (mean P@1 of photo<->sketch and art_painting<->sketch, the tuning
#: pairs: 0.01 -> 50.0, 0.1 -> 52.4, 1.0 -> 58.3). docs/protoot.md, docs/results.md.
PROTOOT_CPU = dict(
    method="protoot", optimizer="adam", lr=2.5e-4, lr_schedule="constant", weight_decay=5e-4,
    cross_domain_weight=1.0, cross_domain_start=2,
)

#: The CPU regime shared by the pacs and digits presets (see the pacs preset's comment).
_CPU_REGIME = dict(
    backbone="efficientnet_lite0", trunk_blocks=6, cached_views=6, freeze_bn=True, head_init="pca",
    epochs=5, clustering_start=1, cluster_contrastive_start=1, cluster_contrastive_sat=3,
    cluster_contrastive_weight_start=0.0, cluster_contrastive_weight_sat=1.0,
    self_entropy_temperature=0.1, self_entropy_weight=0.05, self_entropy_start=2,
    distance_of_distance_weight=0.0003, distance_of_distance_start=2, lr=0.02, momentum=0.99,
    eval_ks=(1, 5, 15), kmeans_restarts=1, workers=0,
)

#: Named presets. ``office_home`` and ``domainnet`` are the spec's table, pinned by a test.
PRESETS: dict[str, UCDIRConfig] = {
    "office_home": UCDIRConfig(
        dataset="office_home", domains=("Clipart", "Product"), num_clusters=(65,),
        cluster_contrastive_weight_sat=0.5, self_entropy_temperature=0.01, self_entropy_weight=1.0,
        self_entropy_start=100,
        distance_of_distance_weight=0.5, distance_of_distance_start=100, eval_ks=(1, 5, 15), **_PAPER_COMMON,
    ),
    "domainnet": UCDIRConfig(
        dataset="domainnet", domains=("clipart", "sketch"), num_clusters=(7,),
        cluster_contrastive_weight_sat=1.0, self_entropy_temperature=0.1, self_entropy_weight=0.5,
        self_entropy_start=100,
        distance_of_distance_weight=0.1, distance_of_distance_start=100, eval_ks=(50, 100, 200), **_PAPER_COMMON,
    ),
    # PACS (7 classes, 128 px images) on 2 CPU cores: the CPU regime of the PACS benchmark (docs/results.md).
    # EfficientNet-Lite0 ImageNet weights, 128 px; stem and stages 0-5 frozen and run once per
    # cached augmented view (6 per image); stage 6, the head conv and the MLP head train, with the
    # backbone's BatchNorm statistics frozen and the head initialised as identity + PCA. The
    # 200-epoch schedule is compressed to 5 epochs (about 300 steps on a sketch pair): clustering
    # from epoch 1, cluster-wise weight ramping over epochs 1-3, self-entropy and
    # distance-of-distance from epoch 2; lr 0.02 (2e-4 moves nothing in 5 epochs). The key-encoder
    # momentum is compressed with it: 0.99 (a time constant of 100 steps) instead of 0.999 (1,000
    # steps, which over 300 steps moves the key encoder, the one evaluated, only 26 % of the way to
    # the trained query encoder). K = 7 and the self-entropy temperature 0.1 are the DomainNet
    # subset's (also 7 classes); the self-entropy and distance-of-distance weights, 0.05 and
    # 0.0003 (the subset's are 0.5 and 0.1), are the best of a sweep on photo<->sketch and
    # art_painting<->sketch: in this regime both losses lower P@1 at every weight tried, the more
    # the larger the weight (docs/results.md, "PACS benchmark").
    "pacs": UCDIRConfig(
        dataset="pacs", domains=("photo", "sketch"), num_clusters=(7,), image_size=128, resize_size=128,
        eval_every=1, **_CPU_REGIME,
    ),
    # Digits (embedded default; 10 classes, 32 px images upscaled to 64): the PACS CPU regime
    # (frozen Lite0 stages, cached views, PCA head, 5 epochs) at 64 px with K = 10. Evaluated every
    # epoch (cheap here).
    "digits": UCDIRConfig(
        dataset="digits", domains=("handwritten", "printed"), num_clusters=(10,), image_size=64, resize_size=64,
        eval_every=1, **_CPU_REGIME,
    ),
    # Any folder of images (``ucdir train --root DIR --domains A B`` without --preset): the CPU
    # regime at 128 px. K is set by the command line to the number of class folders the two domains
    # share (``data.folders.shared_class_count``), as the paper sets K to its benchmarks' class counts.
    # On small folders the batch shrinks so that every epoch has at least 10 steps.
    "folder": UCDIRConfig(
        dataset="folder", domains=("A", "B"), num_clusters=(7,), image_size=128, resize_size=128,
        eval_every=1, min_steps_per_epoch=10, **_CPU_REGIME,
    ),
    # ProtoOT's released values at GPU scale (spec section 6), on the two benchmarks it reports.
    "protoot_office_home": UCDIRConfig(
        dataset="office_home", domains=("Clipart", "Product"), num_clusters=(65,), eval_ks=(1, 5, 15),
        **_PROTOOT_RELEASED,
    ),
    "protoot_domainnet": UCDIRConfig(
        dataset="domainnet", domains=("clipart", "sketch"), num_clusters=(7,), eval_ks=(50, 100, 200),
        **_PROTOOT_RELEASED,
    ),
    # Digits from scratch: a small CNN end to end, 32 px (fast; used by the tests). It does not
    # learn cross-domain retrieval in 12 epochs (P@1 stays near chance, 10 %).
    "digits_scratch": UCDIRConfig(
        dataset="digits", domains=("handwritten", "printed"), backbone="small_cnn", image_size=32,
        resize_size=32, num_clusters=(10,), epochs=12, clustering_start=3, cluster_contrastive_start=3,
        cluster_contrastive_sat=6, cluster_contrastive_weight_start=0.0, cluster_contrastive_weight_sat=1.0,
        self_entropy_temperature=0.1, self_entropy_weight=0.5, self_entropy_start=6, distance_of_distance_weight=0.1,
        distance_of_distance_start=6, lr=0.03, momentum=0.99, batch_size=64, eval_ks=(1, 5, 15),
        workers=0,
    ),
}


# ProtoOT in the CPU regime, on the same data as the CPU presets it is built on.
PRESETS.update({f"protoot_{name}": PRESETS[name].replace(**PROTOOT_CPU) for name in ("pacs", "digits", "folder")})


def get_preset(name: str) -> UCDIRConfig:
    """The preset called ``name``; a ``ValueError`` naming the known presets otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(sorted(PRESETS))}") from None
