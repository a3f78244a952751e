"""Presets pinned to the spec's table; schedules as the spec defines them."""

import math

import pytest

from ucdir_core.base.config import PRESETS, UCDIRConfig, get_preset
from ucdir_core.method.schedules import CosineLR, LinearRamp, StepOn, UCDIRSchedule

COMMON = dict(clustering_start=20, temperature=0.2, threshold=0.2, momentum=0.999, lr=2e-4, batch_size=64,
              epochs=200, mlp=True, feature_dim=128, cluster_contrastive_start=20, cluster_contrastive_sat=100, cluster_contrastive_weight_start=0.0,
              sgd_momentum=0.9, weight_decay=1e-4, distance_of_distance_temperature=0.01)


@pytest.mark.parametrize("name,values", [
    ("office_home", dict(num_clusters=(65,), cluster_contrastive_weight_sat=0.5, self_entropy_temperature=0.01, self_entropy_weight=1.0, self_entropy_start=100,
                         distance_of_distance_weight=0.5, distance_of_distance_start=100, eval_ks=(1, 5, 15))),
    ("domainnet", dict(num_clusters=(7,), cluster_contrastive_weight_sat=1.0, self_entropy_temperature=0.1, self_entropy_weight=0.5, self_entropy_start=100,
                       distance_of_distance_weight=0.1, distance_of_distance_start=100, eval_ks=(50, 100, 200))),
])
def test_paper_presets_pinned(name, values):
    cfg = get_preset(name)
    for key, want in {**COMMON, **values}.items():
        assert getattr(cfg, key) == want, key
    assert (cfg.kmeans_iters, cfg.kmeans_restarts, cfg.kmeans_max_points_per_centroid,
            cfg.kmeans_min_points_per_centroid) == (20, 5, 2000, 2)


@pytest.mark.parametrize("name,k,ks", [("protoot_office_home", 65, (1, 5, 15)), ("protoot_domainnet", 7, (50, 100, 200))])
def test_protoot_presets_pinned_to_the_released_values(name, k, ks):
    cfg = get_preset(name)
    released = dict(method="protoot", backbone="resnet50_moco", optimizer="adam", lr=2.5e-4, lr_schedule="constant",
                    weight_decay=5e-4, epochs=200, cross_domain_weight=0.01, cross_domain_start=100, momentum=0.999,
                    temperature=0.2, batch_size=64, mlp=True, feature_dim=128, kmeans_iters=50, kmeans_restarts=20,
                    kmeans_max_points_per_centroid=2000, kmeans_min_points_per_centroid=2, sinkhorn_epsilon=0.05,
                    sinkhorn_iterations=3, in_domain_neighbour_weight=0.5, in_domain_prototype_weight=0.1,
                    transport_similarity="normalised", cross_domain_negatives="normalised", marginal_order="kmeans",
                    num_clusters=(k,), eval_ks=ks, image_size=224)
    for key, want in released.items():
        assert getattr(cfg, key) == want, key


def test_protoot_cpu_presets_keep_the_released_proportions():
    for data in ("pacs", "digits", "folder"):
        cpu, ucdir = get_preset(f"protoot_{data}"), get_preset(data)
        assert cpu.method == "protoot" and cpu.optimizer == "adam" and cpu.lr_schedule == "constant"
        assert cpu.cross_domain_start == cpu.epochs // 2  # from half of training, as 100 of 200
        assert (cpu.trunk_blocks, cpu.image_size, cpu.epochs, cpu.num_clusters) == \
            (ucdir.trunk_blocks, ucdir.image_size, ucdir.epochs, ucdir.num_clusters)


def test_every_preset_is_valid_and_round_trips():
    for name, cfg in PRESETS.items():
        assert UCDIRConfig.from_dict(cfg.to_dict()) == cfg, name


def test_overrides_and_errors():
    cfg = get_preset("digits").with_overrides(["epochs=5", "num_clusters=7,14", "amp=false", "root=none", "lr=0.1"])
    assert (cfg.epochs, cfg.num_clusters, cfg.amp, cfg.root, cfg.lr) == (5, (7, 14), False, None, 0.1)
    with pytest.raises(ValueError, match="unknown config key"):
        cfg.with_overrides(["nope=1"])
    with pytest.raises(ValueError):
        cfg.with_overrides(["epochs"])
    with pytest.raises(ValueError):
        cfg.replace(split="train")
    with pytest.raises(ValueError):
        cfg.replace(domains=("a", "a"))
    with pytest.raises(ValueError, match="unknown preset"):
        get_preset("imagenet")
    for bad in ("cross_domain_weight=-1", "self_entropy_weight=nan", "cross_domain_neighbour_weight=inf"):
        with pytest.raises(ValueError, match=bad.split("=")[0] + " must be a finite number >= 0"):
            cfg.with_overrides([bad])


def test_cosine_lr():
    lr = CosineLR(2e-4, 200)
    assert lr(0) == pytest.approx(2e-4)
    assert lr(100) == pytest.approx(1e-4)
    assert lr(50) == pytest.approx(2e-4 * 0.5 * (1 + math.cos(math.pi / 4)))


def test_linear_ramp_edges():
    ramp = LinearRamp(20, 100, 0.0, 0.5)
    assert ramp(0) == ramp(20) == 0.0
    assert ramp(60) == pytest.approx(0.25)
    assert ramp(21) == pytest.approx(0.5 / 80)
    assert ramp(100) == ramp(199) == 0.5


def test_step_on_and_full_schedule():
    assert StepOn(100, 0.5)(99) == 0.0 and StepOn(100, 0.5)(100) == 0.5
    sched = UCDIRSchedule.from_config(get_preset("office_home"))
    w19, w20, w60, w100 = (sched.weights(e) for e in (19, 20, 60, 100))
    assert not w19.clustering and w20.clustering
    assert w20.cluster_contrastive == 0.0 and w60.cluster_contrastive == pytest.approx(0.25)
    assert w60.self_entropy == 0.0 and w100.self_entropy == 1.0 and w100.distance_of_distance == 0.5
    assert sched.switch_on_epochs(200) == {"cluster_contrastive": 21, "self_entropy": 100, "distance_of_distance": 100}


def test_cluster_terms_wait_for_warmup():
    sched = UCDIRSchedule.from_config(get_preset("digits").replace(clustering_start=5, self_entropy_start=0, distance_of_distance_start=0, cluster_contrastive_start=0,
                                                                    cluster_contrastive_weight_start=1.0))
    assert sched.weights(4).self_entropy == sched.weights(4).cluster_contrastive == 0.0
    assert sched.weights(5).self_entropy > 0


def test_config_differences_fill_new_keys_with_defaults_and_name_what_differs():
    from ucdir_core.base.config import config_differences

    cfg = get_preset("pacs")
    saved = cfg.to_dict()
    del saved["backbone_lr_scale"]  # written before the key existed: its default
    assert config_differences(saved, cfg) == []
    assert config_differences({**saved, "lr": 1.0, "seed": 3}, cfg) == ["lr", "seed"]
    assert config_differences({**saved, "root": "elsewhere"}, cfg, ignore=("root",)) == []
    assert config_differences(None, cfg)[0].startswith("config (unreadable")
    assert config_differences({**saved, "no_such_key": 1}, cfg)[0].startswith("config (unreadable")
