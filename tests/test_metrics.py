"""Retrieval metrics on hand-worked cases and against a naive full-sort implementation."""

import math

import numpy as np
import pytest
import torch

from ucdir_core.evaluation import metrics
from ucdir_core.evaluation.metrics import retrieval_metrics, retrieval_report, selection_score


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
    got = retrieval_metrics(*hand_case, ks=(1, 5), with_map=False)
    assert got == pytest.approx({"P@1": 50.0, "P@5": 50.0})


def test_precision_k_larger_than_relevant_is_capped():
    gallery = np.array([angle(0), angle(5), angle(90)])
    gl = np.array([0, 1, 1])
    query = np.array([angle(0)])
    # r = 1 for label 0: P@3 uses k_i = 1, and g0 is first -> 100 (textbook P@3 would be 33.3)
    assert retrieval_metrics(query, [0], gallery, gl, ks=(3,), with_map=False)["P@3"] == pytest.approx(100.0)
    # label 1 has r = 2: top-2 are g0 (0), g1 (1) -> 1 / 2
    assert retrieval_metrics(query, [1], gallery, gl, ks=(3,), with_map=False)["P@3"] == pytest.approx(50.0)


def test_precision_nan_when_no_query_has_relevant_items():
    got = retrieval_metrics([[1.0, 0.0]], [5], [[1.0, 0.0]], [0], ks=(1,))
    assert math.isnan(got["P@1"]) and math.isnan(got["mAP"])


def test_map_hand_worked(hand_case):
    # query 0: relevant at ranks 2, 3 -> (1/2 + 2/3) / 2; query 1: ranks 1, 4 -> (1 + 2/4) / 2; query 2 left out
    expected = 100 * ((1 / 2 + 2 / 3) / 2 + (1 + 2 / 4) / 2) / 2
    assert retrieval_metrics(*hand_case, ks=())["mAP"] == pytest.approx(expected)


def test_map_ties_rank_irrelevant_first():
    # relevant g0 and irrelevant g1 score the same: the pessimistic order puts g1 first -> AP = 1/2
    assert retrieval_metrics([[1.0, 0.0]], [0], [[1.0, 0.0], [1.0, 0.0]], [0, 1], ks=())["mAP"] == pytest.approx(50.0)
    # among relevant items a tie changes nothing: AP = 1
    assert retrieval_metrics([[1.0, 0.0]], [0], [[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], [0, 0, 1], ks=())["mAP"] == \
        pytest.approx(100.0)


def test_gallery_of_one_class_and_label_gaps():
    rng = np.random.default_rng(3)
    q, g = rng.normal(size=(5, 4)), rng.normal(size=(9, 4))
    assert retrieval_metrics(q, [7] * 5, g, [7] * 9, ks=())["mAP"] == pytest.approx(100.0)  # every item relevant
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
    got_p = retrieval_metrics(query, ql, gallery, gl, ks=(1, 5, 15, 100), with_map=False, block_size=block)
    assert got_p == pytest.approx({f"P@{k}": v for k, v in want_p.items()})
    got_map = retrieval_metrics(query, ql, gallery, gl, ks=(), block_size=block)
    assert got_map == pytest.approx({"mAP": want_map})
    one_pass = retrieval_metrics(query, ql, gallery, gl, ks=(1, 5, 15, 100), block_size=block)
    assert one_pass == pytest.approx({**{f"P@{k}": v for k, v in want_p.items()}, "mAP": want_map})


def test_tensors_and_arrays_agree_and_report_shape():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(20, 8)).astype(np.float32), rng.normal(size=(30, 8)).astype(np.float32)
    la, lb = rng.integers(0, 3, 20), rng.integers(0, 3, 30)
    assert retrieval_metrics(torch.from_numpy(a), torch.from_numpy(la), torch.from_numpy(b), torch.from_numpy(lb)) == \
        pytest.approx(retrieval_metrics(a, la, b, lb))
    rep = retrieval_report(a, la, b, lb, ks=(1, 5), names=("x", "y"))
    assert set(rep) == {"x->y", "y->x"} and set(rep["x->y"]) == {"P@1", "P@5", "mAP"}
    assert selection_score(rep, 1) == pytest.approx((rep["x->y"]["P@1"] + rep["y->x"]["P@1"]) / 2)


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError):
        retrieval_metrics(np.zeros((2, 3)), [0, 1], np.zeros((2, 4)), [0, 1])
    with pytest.raises(ValueError):
        retrieval_metrics(np.zeros((2, 3)), [0], np.zeros((2, 3)), [0, 1])
    with pytest.raises(ValueError):
        retrieval_metrics(np.ones((2, 3)), [0, 1], np.ones((2, 3)), [0, 1], ks=(0,))
    with pytest.raises(ValueError):
        retrieval_metrics(np.ones((2, 3)), [0, 1], np.ones((2, 3)), [0, 1], ks=(), with_map=False)
    with pytest.raises(ValueError):
        retrieval_metrics(np.ones((2, 3)), [0, 1], np.ones((2, 3)), [0, 1], block_size=0)
    with pytest.raises(ValueError):
        retrieval_metrics(np.ones((2, 3)), [0, -1], np.ones((2, 3)), [0, 1])


def loop_average_precision(scores, relevant):
    """AP of one row by its definition, ties pessimistic: the j-th relevant item from the top (by score)
    ranks j + (irrelevant items scoring at least as high)."""
    rel = sorted((s for s, r in zip(scores, relevant) if r), reverse=True)
    irr = [s for s, r in zip(scores, relevant) if not r]
    return sum(j / (j + sum(x >= s for x in irr)) for j, s in enumerate(rel, 1)) / len(rel)


def two_hot(rng, n, d=6):
    """Rows with two ones each: every cosine is 0, 1/2 or 1, exactly, in any summation order (many ties)."""
    out = np.zeros((n, d), np.float32)
    for row in out:
        row[rng.choice(d, 2, replace=False)] = 1.0
    return out


@pytest.mark.parametrize("block", [1, 5, 256])
def test_many_ties_map_by_definition_and_the_same_top_k_with_and_without_map(block):
    rng = np.random.default_rng(4)
    q, g = two_hot(rng, 40), two_hot(rng, 90)
    ql, gl = rng.integers(0, 4, 40), rng.integers(0, 3, 90)  # label 3 absent from the gallery
    sims = (q @ g.T) / 2
    want = np.mean([loop_average_precision(sims[i], gl == ql[i]) for i in range(len(ql)) if ql[i] < 3])
    ks = (1, 2, 5, 200)  # k = 200 > 90 gallery items
    got = retrieval_metrics(q, ql, g, gl, ks=ks, block_size=block)
    assert got["mAP"] == pytest.approx(100 * want, rel=1e-12)
    # with mAP, P@k reads the sort, and a top-k where the k-th score ties the next: the same items as without
    assert {k: v for k, v in got.items() if k != "mAP"} == retrieval_metrics(q, ql, g, gl, ks=ks, with_map=False,
                                                                             block_size=block)


def ranked_rows(scores, start, end, kcs=(), **kw):
    """(ap, hits, split) of each path of the implementation: numpy, numpy in parts on threads, torch."""
    from concurrent.futures import ThreadPoolExecutor

    x = torch.tensor(np.asarray(scores), dtype=torch.float32)
    with ThreadPoolExecutor(3) as pool:
        out = [metrics._ranked_rows(x, start, end, kcs, **kw), metrics._ranked_rows(x, start, end, kcs, pool, 3, **kw),
               metrics._ranked_rows_torch(x, start, end, kcs, **kw)]
    assert torch.equal(x, torch.tensor(np.asarray(scores), dtype=torch.float32))  # the scores are left alone
    return [[t.tolist() for t in res] for res in out]


def test_ranked_rows_ties_and_signed_zeros():
    # columns 1:3 relevant. Row 0: 0.9 (irrelevant), then relevant 0.5 after the irrelevant 0.5 it ties with,
    # then 0.2 -> ranks 3, 4: (1/3 + 2/4) / 2. Row 1: relevant -0.0 ties irrelevant +0.0 (equal scores):
    # ranks 1 (0.25) and 3 -> (1 + 2/3) / 2. Row 2: three scores equal, one irrelevant -> ranks 2, 3
    scores = [[0.9, 0.5, 0.2, 0.5], [0.0, -0.0, 0.25, -0.5], [-0.3, 0.7, 0.7, 0.7]]
    want = [(1 / 3 + 2 / 4) / 2, (1 + 2 / 3) / 2, (1 / 2 + 2 / 3) / 2]
    for ap, hits, split in ranked_rows(scores, 1, 3, kcs=(1, 2)):
        assert ap == pytest.approx(want, rel=1e-15)
        # top 1 and top 2: row 0 has 0.9 alone, then 0.5 twice (a tie at k = 2); row 1: 0.25, then +0.0 and -0.0
        # (a tie at k = 2); row 2: three times 0.7 (ties at k = 1 and 2)
        assert split == [True, True, True]
        assert [h[0] for h in hits[:2]] == [0, 1]  # the rows without a tie at k = 1


def test_ranked_rows_top_k_without_ties_is_the_definition():
    rng = np.random.default_rng(8)
    scores = rng.permutation(np.arange(60, dtype=np.float32)).reshape(3, 20) / 64  # distinct scores
    want = [[sum(5 <= i < 12 for i in np.argsort(-row)[:k]) for k in (1, 4, 7)] for row in scores]
    for _, hits, split in ranked_rows(scores, 5, 12, kcs=(1, 4, 7)):
        assert hits == want and split == [False] * 3


def test_ranked_rows_wide_scores_and_forced_wide_keys():
    # scores of 2 or more, or inf, do not fit the int32 keys: the int64 ones give the same ranks
    scores = [[3.0, -5.0, 2.0, float("inf")], [-2.0, 7.5, -3.0, 1.0]]
    want = [loop_average_precision(row, [False, True, True, False]) for row in scores]
    for ap, _, _ in ranked_rows(scores, 1, 3):
        assert ap == pytest.approx(want, rel=1e-15)
    x = np.random.default_rng(5).uniform(-1, 1, (7, 50)).astype(np.float32)
    x[:3, 8:12] = [np.nextafter(np.float32(1.5), 0), -np.nextafter(np.float32(1.5), 0), 0.0, -0.0]  # the int32 range
    assert ranked_rows(x, 10, 30, (3,), wide=False) == ranked_rows(x, 10, 30, (3,), wide=True) == \
        ranked_rows(x, 10, 30, (3,))


def test_parts_on_threads_and_the_torch_sort_agree_with_the_definition(monkeypatch):
    rng = np.random.default_rng(6)
    scores = np.round(rng.uniform(-1, 1, (23, 40)), 1)  # ties between and within the two sets
    want = [loop_average_precision(row, np.arange(40) >= 31) for row in scores.astype(np.float32)]
    monkeypatch.setattr(metrics, "_SORT_CHUNK", 100)  # 2 rows a part: 12 parts, 3 threads, a part of 1 row
    results = ranked_rows(scores, 31, 40, (2, 9))
    for ap, hits, split in results:
        assert ap == pytest.approx(want, rel=1e-12)
        assert hits == results[0][1] and split == results[0][2]
    a, ql, b, gl = rng.normal(size=(30, 8)), rng.integers(0, 3, 30), rng.normal(size=(41, 8)), rng.integers(0, 3, 41)
    parts = retrieval_metrics(a, ql, b, gl, ks=(1, 5), block_size=7)
    monkeypatch.setattr(metrics, "_SORT_CHUNK", 1 << 19)
    for group in (0, 7 * 41 * 2, 1 << 24):  # blocks sorted one by one, two by two (across classes), all at once
        monkeypatch.setattr(metrics, "_SORT_GROUP", group)
        assert retrieval_metrics(a, ql, b, gl, ks=(1, 5), block_size=7) == pytest.approx(parts, rel=1e-12)


def test_inputs_that_require_grad_are_evaluated():
    rng = np.random.default_rng(7)
    a = torch.tensor(rng.normal(size=(12, 4)), requires_grad=True)
    b = torch.tensor(rng.normal(size=(15, 4)), requires_grad=True)
    la, lb = rng.integers(0, 2, 12), rng.integers(0, 2, 15)
    want = retrieval_metrics(a.detach().numpy(), la, b.detach().numpy(), lb)
    assert retrieval_metrics(a, la, b, lb) == pytest.approx(want)
