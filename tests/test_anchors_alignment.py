"""Anchor rows (baseline, centred, oracle), alignment diagnostics, and the two input pipelines."""

import numpy as np
import pytest
import torch

from ucdir_core.base.pair import DomainPair
from ucdir_core.evaluation.alignment import alignment_diagnostics, prototype_spread
from ucdir_core.evaluation.anchors import anchor_embeddings, centred, oracle
from ucdir_core.evaluation.metrics import retrieval_metrics


def _two_domains(seed=0, n=40, d=16, shift=5.0, across_classes=False):
    """Two classes; domain B = domain A's class structure plus a large offset along one axis, or
    (``across_classes``) by the difference of the class centres, which puts B's class 0 where A's
    class 1 lies."""
    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1], n // 2)
    centres = rng.normal(0, 1, (2, d))
    a = centres[y] + 0.3 * rng.normal(0, 1, (n, d))
    offset = np.zeros(d)
    offset[0] = shift
    if across_classes:
        offset = centres[1] - centres[0]
    b = centres[y] + 0.3 * rng.normal(0, 1, (n, d)) + offset
    return DomainPair(a, b), DomainPair(y, y)


def test_centred_subtracts_each_domains_training_mean_and_normalises():
    train = DomainPair(np.array([[1.0, 0.0], [3.0, 0.0]]), np.array([[0.0, 2.0], [0.0, 4.0]]))
    test = DomainPair(np.array([[4.0, 1.0]]), np.array([[1.0, 3.0]]))
    out = centred(train, test)
    np.testing.assert_allclose(out.a, [[2 / np.sqrt(5), 1 / np.sqrt(5)]], rtol=1e-6)
    np.testing.assert_allclose(out.b, [[1.0, 0.0]], rtol=1e-6)


def test_centring_removes_a_domain_offset_that_hurts_the_raw_features():
    feats, labels = _two_domains(across_classes=True)
    anchors = anchor_embeddings(feats, labels, feats)
    p1 = {name: retrieval_metrics(e.a, labels.a, e.b, labels.b, (1,), with_map=False)["P@1"]
          for name, e in anchors.items()}
    assert p1["centred"] == 100.0 and p1["oracle"] > p1["baseline"]
    assert p1["baseline"] < 90  # the offset hides the classes from raw cosine
    assert set(anchors) == {"baseline", "centred", "oracle"}
    for e in anchors.values():
        np.testing.assert_allclose(np.linalg.norm(e.a, axis=1), 1.0, rtol=1e-5)


def test_oracle_has_one_dimension_fewer_than_classes():
    feats, labels = _two_domains()
    out = oracle(feats, labels, feats)
    assert out.a.shape == (40, 1) and out.b.shape == (40, 1)


def test_prototype_spread_by_hand():
    protos = np.eye(3)
    x = np.array([[1, 0, 0], [1, 0.1, 0], [0, 1, 0], [0.9, 0, 0.1]], dtype=float)  # 3 on p0, 1 on p1
    s = prototype_spread(x, protos, min_share=0.3)
    assert s["entropy"] == pytest.approx(-(0.75 * np.log(0.75) + 0.25 * np.log(0.25)))
    assert s["prototypes_5pct"] == 1  # only p0 gets at least 30 %
    assert prototype_spread(x[:1], protos)["entropy"] == 0.0


def test_alignment_diagnostics_names_every_combination_and_sees_the_gap():
    feats, labels = _two_domains(n=60)
    unit = lambda t: t / np.linalg.norm(t, axis=1, keepdims=True)  # noqa: E731
    apart = feats.map(unit)
    diag = alignment_diagnostics(apart, labels, apart, ("p", "s"), num_clusters=2)
    assert set(diag["prototype_spread"]) == {"p->p", "p->s", "s->p", "s->s"}
    mixed = centred(feats, feats)
    diag_mixed = alignment_diagnostics(mixed, labels, mixed, ("p", "s"), num_clusters=2)
    assert diag["domain_mixing"] < 0.1 < diag_mixed["domain_mixing"]
    assert diag_mixed["class_agreement"] > 95
    # centred, both domains' images spread over both of the other domain's clusters
    assert diag_mixed["prototype_spread"]["p->s"]["prototypes_5pct"] == 2


def test_both_input_pipelines_provide_the_same_parts(digits_root, tmp_path, monkeypatch):
    monkeypatch.setenv("UCDIR_DATA", str(tmp_path))  # the view cache
    from ucdir_core.config.presets import get_preset
    from ucdir_core.data.splits import load_split_images
    from ucdir_core.data.inputs import CachedTrunk, DecodedImages, build_inputs, input_pipeline

    cfg = get_preset("digits_scratch").replace(root=str(digits_root), max_images_per_domain=20, device="cpu")
    cached = cfg.replace(backbone="tv:resnet18", trunk_blocks=3, cached_views=2, image_size=32, resize_size=32)
    assert isinstance(input_pipeline(cfg), DecodedImages) and isinstance(input_pipeline(cached), CachedTrunk)
    from PIL import Image

    img = Image.new("RGB", (32, 32), (128, 30, 200))
    for c in (cfg, cached):
        images = load_split_images(c, None, check=False, log=lambda s: None)
        inputs = build_inputs(c, images, progress=False)
        x, i = inputs.domains.a.test_eval[0]
        feats = inputs.module.eval()(x[None])
        assert feats.shape == (1, inputs.dim)
        assert inputs.to_input(img).shape == x.shape
        assert len(inputs.domains.b.train_views[0]) == 3  # (view 1, view 2, id)


def test_partition_agreement_is_one_for_a_relabelled_partition_and_low_for_a_crossing_one():
    from ucdir_core.evaluation.alignment import partition_agreement

    x = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], dtype=float)
    same = partition_agreement(x, np.eye(2), np.eye(2)[::-1])  # the same split, labels swapped
    assert same == pytest.approx(1.0)
    diagonal = np.array([[1, 1], [1, -1]]) / np.sqrt(2)  # splits {x0, x1} vs {x2, x3} differently
    x2 = np.array([[1, 0.2], [1, -0.2], [0.2, 1], [-0.2, 1]], dtype=float)
    assert partition_agreement(x2, np.eye(2), diagonal) < 0.5
    # prototypes are compared as directions (unit rows), as the losses' are: scaling one changes nothing
    assert partition_agreement(x2, np.eye(2) * [[3.0], [0.2]], diagonal) == partition_agreement(x2, np.eye(2), diagonal)


def test_class_discovery_on_hand_built_embeddings():
    from ucdir_core.evaluation.alignment import class_discovery

    rng = np.random.default_rng(0)
    centres = np.eye(8)[:3] * 5
    labels = np.repeat(np.arange(3), 20)
    a = centres[labels] + rng.normal(0, 0.05, (60, 8))
    b = centres[labels] + rng.normal(0, 0.05, (60, 8))  # the same classes, no domain offset
    found = class_discovery(a, b, labels, labels, 3)
    assert found["adjusted_rand"] == pytest.approx(1.0) and found["balance"] == pytest.approx(1.0, abs=0.05)
    # a domain offset larger than the classes' spread: clusters follow the domains
    a2 = np.eye(8)[5] * 10 + rng.normal(0, 1, (60, 8))
    b2 = np.eye(8)[6] * 10 + rng.normal(0, 1, (60, 8))
    apart = class_discovery(a2, b2, labels, labels, 2)
    assert apart["balance"] == pytest.approx(0.0, abs=0.05) and abs(apart["adjusted_rand"]) < 0.1


def test_the_alignment_answer_reads_every_number_from_its_table():
    import pandas as pd

    from ucdir_core.companion.tables import alignment_answer

    rows = ["before", "UCDIR full", "UCDIR full + Harmony", "ProtoOT", "ProtoOT + Harmony"]
    table = pd.DataFrame({"P@1": [49.0, 59.5, 59.8, 62.4, 59.0], "mAP": [31.8, 44.3, 48.6, 47.9, 49.8],
                          "domain_mixing": [0.069, 0.088, 0.304, 0.091, 0.254],
                          "class_agreement": [70.0, 77.9, 78.0, 76.2, 76.0],
                          "adjusted_rand": [0.3, 0.38, 0.40, 0.33, 0.38], "balance": [0.5, 0.66, 0.95, 0.6, 0.9]},
                         index=rows)
    text = alignment_answer(table, ("photo", "sketch"))
    for number in ("0.088", "0.091", "0.069", "0.088 -> 0.304", "0.091 -> 0.254", "59.5 -> 59.8", "62.4 -> 59.0",
                   "44.3 -> 48.6", "0.38 -> 0.40", "0.66 -> 0.95"):
        assert number in text, number
    assert "leave the two domains apart" in text and "lifts P@1 for UCDIR full" in text
    mixed = table.assign(domain_mixing=[0.1, 0.5, 0.6, 0.5, 0.6], **{"P@1": [1, 2, 1, 2, 1]})
    assert "mix the two domains" in alignment_answer(mixed, ("a", "b"))
    assert "does not lift P@1 for either method" in alignment_answer(mixed, ("a", "b"))
