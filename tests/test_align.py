"""The alignment stage (ucdir_core.align): parameters, ``none``/``centred``/``harmony`` fitted on two
domains' embeddings without labels, the stored model checked against harmonypy, and its file.

Tolerances against harmonypy (``tol`` below is relative to the data's scale, the largest absolute
PC coordinate; "measured" is what these data gave with harmonypy 2.1.0):

- the stored coefficients with harmonypy's own last soft assignments ``ho.R`` reproduce
  ``ho.Z_corr`` to 1e-6 (measured 8e-8: float32 round-off, harmonypy works in float32);
- the stored model's own soft assignment of the fitted embeddings (as for any new embedding)
  reproduces ``ho.Z_corr`` to 1e-6 when Harmony has no diversity penalty (theta 0) and is run to
  its fixed point (30 iterations, no early stop) (measured 6e-8 to 8e-8);
- with theta 4 (a stronger diversity penalty than the default 1) and harmonypy's early stop to 5e-3 (measured 7e-4, about 0.3%
  of the largest correction; 3e-4 in unit-row coordinates): harmonypy's last ``R`` carries the
  diversity penalty, which a new embedding's assignment leaves out (see ucdir_core.align.stage),
  and the previous iteration's centroids.
"""

from __future__ import annotations

import ast
import inspect
import io
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ucdir_core.align.params import AlignmentParams
from ucdir_core.align.stage import ASSIGNMENT_ROUNDS, AlignmentModel, fit_alignment, fit_harmony

pytest.importorskip("harmonypy")

ALIGN = Path(__file__).resolve().parents[1] / "ucdir_core" / "align"


def unit(x):
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


@pytest.fixture(scope="module")
def domains():
    """Two domains of 16-d unit rows: five shared classes, domain B shifted by a fixed offset."""
    rng = np.random.default_rng(0)
    d, classes = 16, 5
    centres = rng.normal(size=(classes, d))
    offset = rng.normal(size=d) * 0.8

    def make(n, shift):
        y = rng.integers(0, classes, n)
        return unit(centres[y] + rng.normal(size=(n, d)) * 0.4 + shift).astype(np.float32)

    return make(240, 0.0), make(200, offset)


HARMONY = dict(alignment="harmony", harmony_pcs=8, harmony_clusters=6, harmony_theta=4.0)


@pytest.fixture(scope="module")
def harmony_fit(domains):
    return fit_harmony(AlignmentParams(**HARMONY), *domains)


def stacked(domains):
    a, b = domains
    return np.concatenate([a, b]), np.r_[np.zeros(len(a), np.int64), np.ones(len(b), np.int64)]


# ---------------------------------------------------------------------- parameters


def test_params_defaults():
    p = AlignmentParams()
    assert (p.alignment, p.harmony_theta, p.harmony_clusters, p.harmony_pcs, p.harmony_seed) == ("none", 1.0, 30, 20, 0)
    assert (p.harmony_sigma, p.harmony_alpha, p.harmony_max_iter, p.harmony_max_iter_kmeans) == (0.1, 0.2, 10, 4)
    assert AlignmentParams.owner == "alignment"
    assert AlignmentParams.ranges()["alignment"] == "none | centred | harmony"


@pytest.mark.parametrize("change, key", [
    (dict(harmony_theta=-1), "harmony_theta"), (dict(alignment="procrustes"), "alignment"),
    (dict(harmony_clusters=0), "harmony_clusters"), (dict(harmony_pcs=2.5), "harmony_pcs"),
    (dict(harmony_sigma=0.0), "harmony_sigma"), (dict(harmony_block_size=1.5), "harmony_block_size"),
    (dict(harmony_seed=-1), "harmony_seed"), (dict(harmony_alpha=float("nan")), "harmony_alpha"),
])
def test_params_out_of_range_are_refused_in_one_line(change, key):
    with pytest.raises(ValueError) as err:
        AlignmentParams(**change)
    assert str(err.value).startswith(key) and "\n" not in str(err.value)
    with pytest.raises(ValueError):
        AlignmentParams().replace(**change)


# ---------------------------------------------------------------------- none and centred


def test_none_is_the_identity(domains):
    model = fit_alignment(AlignmentParams(), *domains)
    for dom, x in enumerate(domains):
        out = model.apply(x, dom)
        assert out.dtype == np.float32 and out.shape == x.shape
        np.testing.assert_allclose(out, x, rtol=0, atol=1e-6)


def test_centred_against_a_hand_computation():
    a = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)  # mean (0.5, 0.5)
    b = np.array([[0.6, 0.8], [0.6, -0.8]], np.float32)  # mean (0.6, 0)
    model = fit_alignment(AlignmentParams(alignment="centred"), a, b)
    np.testing.assert_allclose(model.domain_means, [[0.5, 0.5], [0.6, 0.0]], atol=1e-7)
    x = np.array([[0.0, 1.0], [1.0, 0.0]], np.float32)
    # [0, 1] of B: (-0.6, 1) / sqrt(1.36); [1, 0] of A: (0.5, -0.5) / sqrt(0.5)
    out = model.apply(x, np.array([1, 0]))
    np.testing.assert_allclose(out, [[-0.6 / 1.36 ** 0.5, 1 / 1.36 ** 0.5], [0.5 ** 0.5, -(0.5 ** 0.5)]], atol=1e-6)


# ---------------------------------------------------------------------- harmony against harmonypy


def test_stored_coefficients_with_harmonypys_assignments_reproduce_its_output(domains, harmony_fit):
    model, ho = harmony_fit
    x, dom = stacked(domains)
    z = model.project(x)
    np.testing.assert_allclose(z, ho.Z_orig, atol=1e-6)  # harmonypy corrected exactly these coordinates
    scale = np.abs(z).max()
    error = np.abs(z - model.offsets(ho.R, dom) - ho.Z_corr).max() / scale
    assert error < 1e-6, error  # measured 8e-8
    np.testing.assert_allclose(model.centroids, np.asarray(ho.Y).T)
    assert np.abs(np.asarray(ho.Z_corr) - z).max() / scale > 0.1  # the correction is not trivially small


def test_new_point_assignment_reproduces_harmonypy_at_its_fixed_point(domains):
    """With theta 0 and Harmony run to its fixed point, harmonypy's last assignments are exactly the
    stored model's (same centroids, distance, normalisation, sigma, from the corrected coordinates)."""
    x, dom = stacked(domains)
    for seed in (0, 1):
        params = AlignmentParams(**{**HARMONY, "harmony_theta": 0.0}, harmony_max_iter=30, harmony_epsilon_harmony=0.0,
                                 harmony_seed=seed)
        model, ho = fit_harmony(params, *domains)
        z = model.project(x)
        error = np.abs(z - model.offsets(model.assignments(x, dom), dom) - ho.Z_corr).max() / np.abs(z).max()
        assert error < 1e-6, (seed, error)  # measured 6e-8 to 8e-8
        expected = unit(x - (z - ho.Z_corr) @ model.components)
        np.testing.assert_allclose(model.apply(x, dom), expected, rtol=0, atol=1e-6)


def test_harmony_with_a_penalty_applied_to_its_training_embeddings_is_close_to_harmonypy(domains, harmony_fit):
    model, ho = harmony_fit
    x, dom = stacked(domains)
    z = model.project(x)
    corrected = z - model.offsets(model.assignments(x, dom), dom)
    error = np.abs(corrected - ho.Z_corr).max() / np.abs(z).max()
    assert error < 5e-3, error  # measured 7e-4 (the diversity penalty, left out for new embeddings)
    # in the embedding space: harmonypy's corrected PCs mapped back, residual kept, unit rows
    expected = unit(x - (z - ho.Z_corr) @ model.components)
    assert np.abs(model.apply(x, dom) - expected).max() < 2e-3  # measured 3e-4


def test_harmony_brings_the_domains_together(domains, harmony_fit):
    model, _ = harmony_fit
    a, b = domains
    before = np.linalg.norm(a.mean(0) - b.mean(0))
    after = np.linalg.norm(model.apply(a, 0).mean(0) - model.apply(b, 1).mean(0))
    assert after < 0.5 * before


def hand_built_model(sigma=0.01):
    """d = 4, P = 3 (the first three axes, mean 0), two clusters on axes 0 and 1; domain A
    uncorrected, domain B offset by (0, 0, 0.64) in cluster 1 and (0, 0.5, 0) in cluster 0."""
    corrections = np.zeros((2, 2, 3))
    corrections[1, 0] = [0.0, 0.5, 0.0]
    corrections[1, 1] = [0.0, 0.0, 0.64]
    params = AlignmentParams(alignment="harmony", harmony_pcs=3, harmony_clusters=2, harmony_sigma=sigma)
    return AlignmentModel(params=params, dim=4, mean=np.zeros(4), components=np.eye(4)[:3],
                          centroids=np.eye(3)[:2], corrections=corrections, sigma=np.full(2, sigma))


def test_a_new_point_near_a_cluster_gets_that_clusters_offset_removed():
    model = hand_built_model()
    x = np.array([0.0, 0.48, 0.64, 0.6])  # unit; PCs (0, .48, .64): cosine .6 to cluster 1, 0 to cluster 0
    # round 1: distances 0.8 and 2, logits -80 and -200: all of cluster 1; corrected PCs (0, .48, 0),
    # cosine 1 to cluster 1: it stays. Back: (0, .48, 0, .6), the 4th axis (outside the PCs) kept.
    expected = np.array([0.0, 0.48, 0.0, 0.6]) / np.sqrt(0.48 ** 2 + 0.6 ** 2)
    np.testing.assert_allclose(model.apply(x, 1), expected, atol=1e-6)
    np.testing.assert_allclose(model.assignments(x[None], np.array([1])), [[0.0, 1.0]], atol=1e-12)
    np.testing.assert_allclose(model.apply(x, 0), x, atol=1e-6)  # domain A: no offset


def test_a_new_point_between_two_clusters_gets_the_mean_of_their_offsets():
    model = hand_built_model(sigma=0.1)
    model = AlignmentModel(params=model.params, dim=4, mean=model.mean, components=model.components,
                           centroids=model.centroids, corrections=np.array([np.zeros((2, 3)),
                                                                            [[0, 0, 0.1], [0, 0, 0.3]]]),
                           sigma=model.sigma)
    x = unit([1.0, 1.0, 0.0, 0.0])  # equidistant; the offsets move it along axis 2 only: it stays so
    expected = unit([0.5 ** 0.5, 0.5 ** 0.5, -0.2, 0.0])
    np.testing.assert_allclose(model.assignments(x[None], np.array([1])), [[0.5, 0.5]], atol=1e-12)
    np.testing.assert_allclose(model.apply(x, 1), expected, atol=1e-6)


def test_assignment_rounds_are_enough_on_the_fitted_data(domains, harmony_fit):
    model, _ = harmony_fit
    x, dom = stacked(domains)
    r = model.assignments(x, dom)
    z = model.project(x)
    again = model.offsets(r, dom)
    # one more round moves nothing: the rounds reached the fixed point
    cosine = unit(z - again) @ model.centroids.T
    logits = -2 * (1 - cosine) / model.sigma
    nxt = np.exp(logits - logits.max(1, keepdims=True))
    nxt /= nxt.sum(1, keepdims=True)
    assert ASSIGNMENT_ROUNDS >= 2 and np.abs(nxt - r).max() < 1e-6


# ---------------------------------------------------------------------- shapes, inputs, files


@pytest.mark.parametrize("alignment", ["none", "centred", "harmony"])
def test_one_row_or_many_give_the_same_result(domains, harmony_fit, alignment):
    model = harmony_fit[0] if alignment == "harmony" else fit_alignment(AlignmentParams(alignment=alignment), *domains)
    x, dom = stacked(domains)
    x, dom = x[::20], dom[::20]
    many = model.apply(x, dom)
    one = np.stack([model.apply(row, int(d)) for row, d in zip(x, dom)])
    np.testing.assert_allclose(one, many, rtol=0, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(many, axis=1), 1.0, atol=1e-6)
    a = domains[0][:5]
    np.testing.assert_array_equal(model.apply(a, 0), model.apply(a, np.zeros(5, np.int64)))


def test_bad_inputs_are_refused(domains, harmony_fit):
    model = harmony_fit[0]
    a, b = domains
    for x, dom in [(a[:, :8], 0), (a, 2), (a, np.zeros(3, np.int64)), (a, True), (np.full(16, np.nan), 0)]:
        with pytest.raises(ValueError):
            model.apply(x, dom)
    with pytest.raises(ValueError, match="harmony_pcs"):
        fit_alignment(AlignmentParams(**dict(HARMONY, harmony_pcs=17)), a, b)
    with pytest.raises(ValueError, match="same dimension"):
        fit_alignment(AlignmentParams(alignment="centred"), a, b[:, :8])
    with pytest.raises(ValueError):
        fit_alignment(AlignmentParams(alignment="centred"), a, b[:0])


@pytest.mark.parametrize("alignment", ["none", "centred", "harmony"])
def test_save_load_round_trip(tmp_path, domains, harmony_fit, alignment):
    model = harmony_fit[0] if alignment == "harmony" else fit_alignment(AlignmentParams(alignment=alignment), *domains)
    path = tmp_path / "sub" / "alignment.npz"
    model.save(path)
    model.save(path)  # over an existing file
    assert sorted(p.name for p in path.parent.iterdir()) == ["alignment.npz"]  # no temporary file left
    loaded = AlignmentModel.load(path)
    assert loaded == model and loaded.params == model.params
    x, dom = stacked(domains)
    np.testing.assert_array_equal(loaded.apply(x, dom), model.apply(x, dom))
    assert path.stat().st_size < 20_000


def _npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _meta(**changes) -> np.ndarray:
    meta = {"format": "ucdir-alignment", "version": 1, "alignment": "centred", "dim": 2,
            "params": AlignmentParams(alignment="centred").to_dict()}
    return np.array(json.dumps({**meta, **changes}))


def crafted(good: bytes) -> dict[str, bytes]:
    npy = io.BytesIO()
    np.save(npy, np.zeros(3))
    return {
        "truncated": good[: len(good) // 2],
        "empty": b"",
        "pickle": pickle.dumps({"domain_means": np.zeros((2, 2))}),
        "object array": _npz(meta=_meta(), domain_means=np.array([None, 1.0], dtype=object)),
        "one array": npy.getvalue(),
        "no meta": _npz(domain_means=np.zeros((2, 2))),
        "foreign format": _npz(meta=_meta(format="other"), domain_means=np.zeros((2, 2))),
        "bad params": _npz(meta=_meta(params={**AlignmentParams().to_dict(), "harmony_theta": -1,
                                              "alignment": "centred"}), domain_means=np.zeros((2, 2))),
        "extra array": _npz(meta=_meta(), domain_means=np.zeros((2, 2)), more=np.zeros(2)),
        "wrong shape": _npz(meta=_meta(), domain_means=np.zeros((3, 2))),
        "not finite": _npz(meta=_meta(), domain_means=np.full((2, 2), np.inf)),
    }


@pytest.mark.parametrize("case", list(crafted(b"x")))
def test_crafted_files_are_refused_in_one_line(tmp_path, case):
    good = tmp_path / "good.npz"
    eye = np.eye(2, dtype=np.float32)
    fit_alignment(AlignmentParams(alignment="centred"), eye, eye).save(good)
    assert AlignmentModel.load(good).dim == 2
    bad = tmp_path / "bad.npz"
    bad.write_bytes(crafted(good.read_bytes())[case])
    with pytest.raises(ValueError) as err:
        AlignmentModel.load(bad)
    assert "\n" not in str(err.value) and str(bad) in str(err.value)
    with pytest.raises(FileNotFoundError):
        AlignmentModel.load(tmp_path / "missing.npz")


# ---------------------------------------------------------------------- no labels, layers


def test_labels_are_not_an_argument_anywhere():
    import dataclasses

    from ucdir_core.align import stage

    names = set(AlignmentParams.keys()) | {f.name for f in dataclasses.fields(AlignmentModel)}
    for fn in (stage.fit_alignment, stage.fit_harmony, stage.ridge_corrections, AlignmentModel.apply,
               AlignmentModel.assignments, AlignmentModel.offsets, AlignmentModel.project):
        names |= set(inspect.signature(fn).parameters)
    words = {w for n in names for w in n.lower().split("_")}
    assert not words & {"label", "labels", "class", "classes", "target", "targets", "y"}
    assert list(inspect.signature(stage.fit_alignment).parameters) == ["params", "a", "b"]
    assert list(inspect.signature(AlignmentModel.apply).parameters) == ["self", "x", "domain"]


def test_align_imports_only_the_base_and_loads_neither_torch_nor_harmonypy():
    for path in ALIGN.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ucdir_core"):
                assert node.module.split(".")[1] in ("base", "align"), (path.name, node.module)
    code = ("import sys, ucdir_core.align.stage, ucdir_core.align.params; "
            "print(sorted({'torch', 'harmonypy'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(ALIGN.parents[1])})
    assert out.stdout.strip() == "[]"
