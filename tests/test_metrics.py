"""Retrieval metrics on hand-worked cases and against a naive full-sort implementation."""

import math

import numpy as np
import pytest
import torch

from ucdir_core.evaluation.metrics import mean_average_precision, precision_at_k, retrieval_metrics, retrieval_report, selection_score


def angle(deg):
    r = math.radians(deg)
    return [math.cos(r), math.sin(r)]


@pytest.fixture
def hand_case():
    gallery = np.array([angle(0), angle(10), angle(20), angle(30)])
    gallery_labels = np.array([1, 0, 0, 1])
    query = np.array([angle(0), angle(30), angle(15)])
    query_labels = np.array([0, 1, 2])  # class 2 is absent from the gallery
    return query, query_labels, gallery, gallery_labels


def test_precision_hand_worked(hand_case):
    # query 0 (label 0, r=2) ranks g0(1) g1(0) g2(0) g3(1); query 1 (label 1, r=2) ranks g3(1) g2(0) g1(0) g0(1)
    # P@1: hits 0 + 1 over k_i 1 + 1; P@5: k_i = min(5, 2) = 2 -> hits 1 + 1 over 2 + 2; query 2 counts nowhere
    got = precision_at_k(*hand_case, ks=(1, 5))
    assert got[1] == pytest.approx(50.0)
    assert got[5] == pytest.approx(50.0)


def test_precision_k_larger_than_relevant_is_capped():
    gallery = np.array([angle(0), angle(5), angle(90)])
    gl = np.array([0, 1, 1])
    query = np.array([angle(0)])
    # r = 1 for label 0: P@3 uses k_i = 1, and g0 is first -> 100 (textbook P@3 would be 33.3)
    assert precision_at_k(query, [0], gallery, gl, ks=(3,))[3] == pytest.approx(100.0)
    # label 1 has r = 2: top-2 are g0 (0), g1 (1) -> 1 / 2
    assert precision_at_k(query, [1], gallery, gl, ks=(3,))[3] == pytest.approx(50.0)


def test_precision_nan_when_no_query_has_relevant_items():
    assert math.isnan(precision_at_k([[1.0, 0.0]], [5], [[1.0, 0.0]], [0], ks=(1,))[1])


def test_map_hand_worked(hand_case):
    # query 0: relevant at ranks 2, 3 -> (1/2 + 2/3) / 2; query 1: ranks 1, 4 -> (1 + 2/4) / 2; query 2 left out
    expected = 100 * ((1 / 2 + 2 / 3) / 2 + (1 + 2 / 4) / 2) / 2
    assert mean_average_precision(*hand_case) == pytest.approx(expected)


def test_map_ties_rank_irrelevant_first():
    # relevant g0 and irrelevant g1 score the same: the pessimistic order puts g1 first -> AP = 1/2
    assert mean_average_precision([[1.0, 0.0]], [0], [[1.0, 0.0], [1.0, 0.0]], [0, 1]) == pytest.approx(50.0)
    # among relevant items a tie changes nothing: AP = 1
    assert mean_average_precision([[1.0, 0.0]], [0], [[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], [0, 0, 1]) == \
        pytest.approx(100.0)


def test_gallery_of_one_class_and_label_gaps():
    rng = np.random.default_rng(3)
    q, g = rng.normal(size=(5, 4)), rng.normal(size=(9, 4))
    assert mean_average_precision(q, [7] * 5, g, [7] * 9) == pytest.approx(100.0)  # every item relevant
    ql, gl = np.array([0, 9, 9, 4, 0]), np.array([9, 0, 9, 9, 2, 0, 0, 9, 2])  # labels 2 and 9, 4 absent
    want_p, want_map = naive(q, ql, g, gl, (1, 3))
    got = retrieval_metrics(q, ql, g, gl, ks=(1, 3))
    assert got == pytest.approx({"P@1": want_p[1], "P@3": want_p[3], "mAP": want_map})


def naive(query, ql, gallery, gl, ks):
    q = query / np.linalg.norm(query, axis=1, keepdims=True)
    g = gallery / np.linalg.norm(gallery, axis=1, keepdims=True)
    order = np.argsort(-(q @ g.T), axis=1, kind="stable")
    rel = gl[order] == ql[:, None]
    r = np.array([(gl == y).sum() for y in ql])
    out = {}
    for k in ks:
        kk = np.minimum(k, r)
        hits = sum(rel[i, :kk[i]].sum() for i in range(len(ql)))
        out[k] = 100 * hits / kk.sum()
    aps = []
    for i in range(len(ql)):
        if r[i] == 0:
            continue
        pos = np.flatnonzero(rel[i]) + 1
        aps.append(np.mean(np.arange(1, len(pos) + 1) / pos))
    return out, 100 * np.mean(aps)


@pytest.mark.parametrize("block", [1, 7, 1000])
def test_blocked_equals_naive(block):
    rng = np.random.default_rng(0)
    query, gallery = rng.normal(size=(53, 16)), rng.normal(size=(71, 16))
    ql, gl = rng.integers(0, 6, 53), rng.integers(0, 5, 71)  # label 5 absent from the gallery
    want_p, want_map = naive(query, ql, gallery, gl, (1, 5, 15, 100))
    got_p = precision_at_k(query, ql, gallery, gl, ks=(1, 5, 15, 100), block_size=block)
    for k in want_p:
        assert got_p[k] == pytest.approx(want_p[k])
    assert mean_average_precision(query, ql, gallery, gl, block_size=block) == pytest.approx(want_map)
    one_pass = retrieval_metrics(query, ql, gallery, gl, ks=(1, 5, 15, 100), block_size=block)
    assert one_pass == pytest.approx({**{f"P@{k}": v for k, v in want_p.items()}, "mAP": want_map})


def test_tensors_and_arrays_agree_and_report_shape():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(20, 8)).astype(np.float32), rng.normal(size=(30, 8)).astype(np.float32)
    la, lb = rng.integers(0, 3, 20), rng.integers(0, 3, 30)
    assert precision_at_k(torch.from_numpy(a), torch.from_numpy(la), torch.from_numpy(b), torch.from_numpy(lb)) == \
        pytest.approx(precision_at_k(a, la, b, lb))
    rep = retrieval_report(a, la, b, lb, ks=(1, 5), names=("x", "y"))
    assert set(rep) == {"x->y", "y->x"} and set(rep["x->y"]) == {"P@1", "P@5", "mAP"}
    assert selection_score(rep, 1) == pytest.approx((rep["x->y"]["P@1"] + rep["y->x"]["P@1"]) / 2)


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError):
        precision_at_k(np.zeros((2, 3)), [0, 1], np.zeros((2, 4)), [0, 1])
    with pytest.raises(ValueError):
        precision_at_k(np.zeros((2, 3)), [0], np.zeros((2, 3)), [0, 1])
    with pytest.raises(ValueError):
        precision_at_k(np.ones((2, 3)), [0, 1], np.ones((2, 3)), [0, 1], ks=(0,))
    with pytest.raises(ValueError):
        precision_at_k(np.ones((2, 3)), [0, 1], np.ones((2, 3)), [0, 1], ks=())
