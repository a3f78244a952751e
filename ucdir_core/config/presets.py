"""Named presets: data, each with one line of provenance (results: docs/results.md).

The paper presets are the values of the reference's shipped training scripts
(``../shared/ucdir-spec.md`` section 3), the ProtoOT ones its released scripts
(``../shared/protoot-spec.md`` section 6); both are pinned by tests. The CPU presets are this
project's regime for 2 CPU cores (docs/results.md, "PACS benchmark", Regime); their schedules are shares
of the run's epochs, so that they hold when ``--epochs`` changes.
"""

from __future__ import annotations

from typing import Any

from ucdir_core.config.run import RunConfig

#: The paper's setting: ResNet-50 from MoCo v2 (--checkpoint FILE), 224 px, the shipped scripts' schedule.
_PAPER_COMMON: dict[str, Any] = dict(
    backbone="resnet50_moco", clustering_start=20, temperature=0.2, threshold=0.2, momentum=0.999, lr=2e-4,
    batch_size=64, epochs=200, mlp=True, feature_dim=128, cluster_contrastive_ramp_after=20,
    cluster_contrastive_ramp_end=100, cluster_contrastive_weight_initial=0.0,
)

#: ProtoOT's released training values (protoot-spec section 6): Adam (AMSGrad) at a constant 0.00025,
#: weight decay 5e-4, 200 epochs, the cross-domain loss at 0.01 from half of training, k-means 50 x 20.
_PROTOOT_RELEASED: dict[str, Any] = dict(
    method="protoot", backbone="resnet50_moco", optimizer="adam", lr=2.5e-4, lr_schedule="constant",
    weight_decay=5e-4, epochs=200, cross_domain_weight=0.01, cross_domain_start=0.5, momentum=0.999,
    temperature=0.2, batch_size=64, mlp=True, feature_dim=128, kmeans_iters=50, kmeans_restarts=20,
)

#: ProtoOT in the CPU regime (on top of a CPU preset): the released optimiser and proportions, cross-domain
#: weight 1.0 (chosen on the tuning pairs; docs/protoot.md, docs/results.md "ProtoOT trials").
PROTOOT_CPU: dict[str, Any] = dict(
    method="protoot", optimizer="adam", lr=2.5e-4, lr_schedule="constant", weight_decay=5e-4,
    cross_domain_weight=1.0, cross_domain_start=0.5,
)

#: The CPU regime (docs/results.md, "PACS benchmark", Regime): frozen Lite0 stages 0-5 with 6 cached views, PCA
#: head, 5 epochs; clustering from 0.2 of training, the cluster-wise ramp over 0.2-0.6, self-entropy and
#: distance-of-distance from 0.4 (epochs 1, 1-3 and 2 of 5), weights from the sweep on the tuning pairs.
_CPU_REGIME: dict[str, Any] = dict(
    backbone="efficientnet_lite0", trunk_blocks=6, cached_views=6, freeze_bn=True, head_init="pca",
    epochs=5, clustering_start=0.2, cluster_contrastive_ramp_after=0.2, cluster_contrastive_ramp_end=0.6,
    cluster_contrastive_weight_initial=0.0, cluster_contrastive_weight=1.0,
    self_entropy_temperature=0.1, self_entropy_weight=0.05, self_entropy_start=0.4,
    distance_of_distance_weight=0.0003, distance_of_distance_start=0.4, lr=0.02, momentum=0.99,
    eval_ks=(1, 5, 15), kmeans_restarts=1, workers=0,
)


def _preset(**values: Any) -> RunConfig:
    return RunConfig().replace(**values)


#: Named presets.
PRESETS: dict[str, RunConfig] = {
    # the reference's shipped Office-Home script (spec section 3)
    "office_home": _preset(
        dataset="office_home", domains=("Clipart", "Product"), num_clusters=(65,), cluster_contrastive_weight=0.5,
        self_entropy_temperature=0.01, self_entropy_weight=1.0, self_entropy_start=100,
        distance_of_distance_weight=0.5, distance_of_distance_start=100, eval_ks=(1, 5, 15), **_PAPER_COMMON),
    # the reference's shipped DomainNet script (spec section 3)
    "domainnet": _preset(
        dataset="domainnet", domains=("clipart", "sketch"), num_clusters=(7,), cluster_contrastive_weight=1.0,
        self_entropy_temperature=0.1, self_entropy_weight=0.5, self_entropy_start=100,
        distance_of_distance_weight=0.1, distance_of_distance_start=100, eval_ks=(50, 100, 200), **_PAPER_COMMON),
    # PACS, 128 px, the CPU regime with K = 7 (the PACS benchmark's; docs/results.md "PACS benchmark")
    "pacs": _preset(dataset="pacs", domains=("photo", "sketch"), num_clusters=(7,), image_size=128, resize_size=128,
                    eval_every=1, **_CPU_REGIME),
    # the embedded digits (32 px upscaled to 64), the CPU regime with K = 10 (docs/results.md "Digits")
    "digits": _preset(dataset="digits", domains=("handwritten", "printed"), num_clusters=(10,), image_size=64,
                      resize_size=64, eval_every=1, **_CPU_REGIME),
    # any folder (ucdir train --root DIR --domains A B): the CPU regime at 128 px, K from the class folders,
    # with the alignment stage (Harmony, the defaults chosen on the PACS tuning pairs): it did not lower
    # P@1 on the 8 untouched PACS directions (both splits) nor on digits (benchmarks/alignment_default.py)
    "folder": _preset(dataset="folder", domains=("A", "B"), num_clusters=(7,), image_size=128, resize_size=128,
                      eval_every=1, min_steps_per_epoch=10, alignment="harmony", **_CPU_REGIME),
    # ProtoOT's released values on the two benchmarks it reports (protoot-spec section 6)
    "protoot_office_home": _preset(dataset="office_home", domains=("Clipart", "Product"), num_clusters=(65,),
                                   eval_ks=(1, 5, 15), **_PROTOOT_RELEASED),
    "protoot_domainnet": _preset(dataset="domainnet", domains=("clipart", "sketch"), num_clusters=(7,),
                                 eval_ks=(50, 100, 200), **_PROTOOT_RELEASED),
    # digits from scratch, a small CNN end to end at 32 px (fast; the tests' model; stays near chance)
    "digits_scratch": _preset(
        dataset="digits", domains=("handwritten", "printed"), backbone="small_cnn", image_size=32, resize_size=32,
        num_clusters=(10,), epochs=12, clustering_start=0.25, cluster_contrastive_ramp_after=0.25,
        cluster_contrastive_ramp_end=0.5, cluster_contrastive_weight_initial=0.0, cluster_contrastive_weight=1.0,
        self_entropy_temperature=0.1, self_entropy_weight=0.5, self_entropy_start=0.5, distance_of_distance_weight=0.1,
        distance_of_distance_start=0.5, lr=0.03, momentum=0.99, batch_size=64, eval_ks=(1, 5, 15), workers=0),
}
# ProtoOT in the CPU regime, on the same data as the CPU presets it is built on
PRESETS.update({f"protoot_{name}": PRESETS[name].replace(**PROTOOT_CPU) for name in ("pacs", "digits", "folder")})
# the alignment default was decided for UCDIR (the folder default); ProtoOT on a folder does not align unless asked
PRESETS["protoot_folder"] = PRESETS["protoot_folder"].replace(alignment="none")


def get_preset(name: str) -> RunConfig:
    """The preset called ``name``.

    Raises:
        ValueError: an unknown name (the message lists the presets).
    """
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(sorted(PRESETS))}") from None


def preset_for_method(name: str, method: str) -> str:
    """The preset that trains ``method`` on preset ``name``'s data and regime (``pacs`` and
    ``protoot`` give ``protoot_pacs``; ``protoot_pacs`` and ``ucdir`` give ``pacs``).

    Raises:
        ValueError: no such preset.
    """
    base = name.removeprefix("protoot_")
    found = base if get_preset(base).method == method else f"{method}_{base}"
    if get_preset(found).method != method:
        raise ValueError(f"no preset trains method {method} on preset {name}'s data")
    return found
