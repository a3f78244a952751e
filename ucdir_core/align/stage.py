"""The alignment stage: a label-free correction fitted on both domains' training embeddings, and the
small model that corrects any new embedding of either domain.

:func:`fit_alignment` reads the embeddings of the *training* images of domain A and domain B (unit
rows) and their domain, nothing else (no labels); it returns an :class:`AlignmentModel` that holds
exactly what correcting a new embedding needs, and that is saved to one small ``.npz`` file read
back without pickle.

- ``none``: the identity (unit rows).
- ``centred``: each domain's training mean; a new embedding of domain ``d`` minus that mean, then
  unit rows (as :func:`ucdir_core.evaluation.anchors.centred`).
- ``harmony``: Harmony (Korsunsky et al., "Fast, sensitive and accurate integration of single-cell
  data with Harmony", Nature Methods 16, 1289-1296, 2019), fitted with ``harmonypy`` (>= 2.1, the
  C++ port of the R "harmony2" algorithm) on the principal components of both domains'
  training embeddings, the domain as the batch variable. The stored model is:

  ``mean`` (d,) and ``components`` (P, d)
      the pooled training mean and the first P principal axes (orthonormal rows): an embedding
      ``x`` has PC coordinates ``z = (x - mean) @ components.T`` (what Harmony corrects).
  ``centroids`` (K, P)
      harmonypy's final cluster centroids ``Y`` (transposed; unit rows, in PC space). In harmony2
      a centroid is the intercept of its cluster's ridge regression, scaled to unit length.
  ``corrections`` (2, K, P)
      ``corrections[b, k]`` is domain ``b``'s coefficient in cluster ``k``'s ridge regression of
      the PC coordinates on the domain indicator (Harmony's ``W`` / beta, the intercept row left
      out); zero where harmonypy corrects no domain in that cluster (one domain absent from it).
  ``sigma`` (K,)
      the soft-assignment width of each cluster (harmonypy's ``sigma``; all equal here).

  **Correction.** harmonypy corrects a fitted image ``j`` of domain ``b`` as
  ``z_corr_j = z_j - sum_k R_jk corrections[b, k]`` (its ``apply_corrections``), with ``R`` the
  soft assignments of the last iteration. ``R`` and the coefficients are what harmonypy keeps;
  harmonypy 2.x does not expose the coefficients, so :func:`fit_alignment` solves each cluster's
  ridge system again from harmonypy's final ``R`` with harmonypy's own conventions (one row for the
  intercept, unpenalised, and one per kept domain, penalised by ``alpha * E[k, b]``,
  ``E[k, b] = sum_j R_jk * N_b / N``; a domain is kept in cluster ``k`` when
  ``sum_{j in b} R_jk / N_b > 1e-5`` and a cluster corrects only when both domains are kept), and
  checks that these coefficients with harmonypy's ``R`` reproduce ``Z_corr`` (else RuntimeError).

  **A new embedding** ``x`` of domain ``b`` (deviates from harmonypy, which only corrects the
  images it was fitted on): its soft assignment to the stored centroids uses harmonypy's distance
  and normalisation conventions, ``R_k = softmax_k(-2 (1 - <unit(z'), centroids[k]>) / sigma_k)``
  (``unit`` leaves a zero vector as it is, as harmonypy's ``scale_to_unit_length`` does), where
  ``z'`` is the embedding's *corrected* PC coordinates, as in Harmony, where every image's
  assignment is computed from its coordinates as corrected in the previous iteration. So the
  assignment and the correction are iterated :data:`ASSIGNMENT_ROUNDS` times from the uncorrected
  coordinates (``z' = z``, ``z' = z - sum_k R_k corrections[b, k]``, ...), with the stored
  centroids and coefficients held fixed; each row on its own (rows never affect each other).
  Harmony's diversity penalty (theta) is left out: it is a term of the fit that pushes a domain's
  images out of clusters where that domain is over-represented given the current assignments of
  the whole training set; for a new image it would be a fixed prior set by the training set's
  imbalance. Symphony (Kang et al., "Efficient and precise single-cell reference atlas mapping with
  Symphony", Nature Communications 12, 5890, 2021), which maps new cells onto a Harmony
  reference, leaves it out too. Applied to the fitted embeddings, this reproduces harmonypy's
  ``Z_corr`` to float32 round-off (about 1e-7 of the data's scale) when theta is 0 and Harmony is
  run to its fixed point, and to about 1e-3 of the data's scale with the defaults (harmonypy's last
  ``R`` carries the penalty and the previous iteration's centroids, and harmonypy stops early);
  ``tests/test_align.py`` states the tolerances and the values measured.

  **Back to the embedding space.** The correction moves only the PC coordinates:
  ``x_corr = unit(x - (sum_k R_k corrections[b, k]) @ components)``, i.e. the corrected PCs mapped
  back through the components, plus the mean and the part of ``x`` outside the P principal axes,
  unchanged. Retrieval then ranks by cosine in the same space, of the same dimension, as ``none``
  and ``centred`` (and the untrained anchors), so the rows of one table compare like with like, and
  nothing Harmony did not look at is dropped. Retrieval in the corrected PC space instead would
  also change the geometry by the pooled centring and the truncation to P axes, not only by the
  domain correction.

Shape:
    embeddings (n, d) float32 unit rows; ``domain`` 0 = A, 1 = B.

File format (:meth:`AlignmentModel.save`): an uncompressed ``.npz`` whose every member is a plain
array read with ``np.load(allow_pickle=False)``: ``meta`` (a 0-d unicode string: JSON with
``format``, ``version``, ``alignment``, ``dim`` and ``params``), and the float64 arrays of the
alignment (``domain_means`` for ``centred``; ``mean``, ``components``, ``centroids``,
``corrections``, ``sigma`` for ``harmony``; none for ``none``). Written whole or not at all (a
temporary file in the same folder, then ``os.replace``).
"""

from __future__ import annotations

import io
import json
import os
import secrets
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ucdir_core.align.params import AlignmentParams

#: the number of alternations of soft assignment and correction for a new embedding (see the module)
ASSIGNMENT_ROUNDS = 10
#: harmonypy's ``batch_prop_cutoff``: a domain is corrected in a cluster only above this share of its images
BATCH_PROP_CUTOFF = 1e-5
#: the largest difference, relative to the largest absolute PC coordinate, allowed between harmonypy's
#: ``Z_corr`` and the stored coefficients applied with harmonypy's own ``R`` (measured: about 1e-7)
REPRODUCTION_TOLERANCE = 1e-4
FORMAT = "ucdir-alignment"
VERSION = 1
#: the arrays each alignment stores, and their number of dimensions
ARRAYS: dict[str, dict[str, int]] = {
    "none": {},
    "centred": {"domain_means": 2},
    "harmony": {"mean": 1, "components": 2, "centroids": 2, "corrections": 3, "sigma": 1},
}


def _unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm; a zero row stays zero (harmonypy's ``scale_to_unit_length``)."""
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(norm == 0, 1.0, norm)


@dataclass(frozen=True, eq=False)
class AlignmentModel:
    """A fitted alignment: what correcting a new embedding of either domain needs (see the module).

    Fields are ``None`` where the alignment does not use them. Two models are equal when their
    alignment, parameters, dimension and arrays are (bit for bit).

    Shape:
        domain_means: (2, d); mean: (d,); components: (P, d); centroids: (K, P);
        corrections: (2, K, P); sigma: (K,).

    Raises:
        ValueError: arrays missing, extra, of the wrong shape or not finite for ``alignment``; for
            harmony, P and K other than ``harmony_pcs`` and ``harmony_clusters``, or sigma <= 0.
    """

    params: AlignmentParams
    dim: int
    domain_means: np.ndarray | None = None
    mean: np.ndarray | None = None
    components: np.ndarray | None = None
    centroids: np.ndarray | None = None
    corrections: np.ndarray | None = None
    sigma: np.ndarray | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.params, AlignmentParams):
            raise ValueError(f"params must be AlignmentParams, got {type(self.params).__name__}")
        if isinstance(self.dim, bool) or not isinstance(self.dim, int) or self.dim < 1:
            raise ValueError(f"dim must be an integer >= 1, got {self.dim!r}")
        wanted = ARRAYS[self.alignment]
        for name in ARRAYS["centred"] | ARRAYS["harmony"]:
            value = getattr(self, name)
            if (value is None) != (name not in wanted):
                state = "missing" if value is None else "not used"
                raise ValueError(f"alignment {self.alignment}: array {name} is {state}")
            if value is None:
                continue
            arr = np.asarray(value)
            if arr.dtype.kind not in "fiu" or arr.ndim != wanted[name] or not np.all(np.isfinite(arr)):
                raise ValueError(f"alignment {self.alignment}: array {name} must be {wanted[name]}-d finite "
                                 f"numbers, got {arr.dtype} of shape {arr.shape}")
            arr = np.array(arr, dtype=np.float64)  # a private, read-only copy
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)
        d = self.dim
        if self.alignment == "centred" and self.domain_means.shape != (2, d):
            raise ValueError(f"domain_means must have shape (2, {d}), got {self.domain_means.shape}")
        if self.alignment == "harmony":
            p, k = self.components.shape[0], self.centroids.shape[0]
            shapes = {"mean": (d,), "components": (p, d), "centroids": (k, p), "corrections": (2, k, p),
                      "sigma": (k,)}
            for name, shape in shapes.items():
                if getattr(self, name).shape != shape:
                    raise ValueError(f"{name} must have shape {shape} (d={d}, P={p}, K={k}), "
                                     f"got {getattr(self, name).shape}")
            if (p, k) != (self.params.harmony_pcs, self.params.harmony_clusters) or np.any(self.sigma <= 0):
                raise ValueError(f"harmony arrays must hold harmony_pcs={self.params.harmony_pcs} components, "
                                 f"harmony_clusters={self.params.harmony_clusters} clusters and sigma > 0, got "
                                 f"P={p}, K={k}, sigma min {self.sigma.min() if k else None}")

    @property
    def alignment(self) -> str:
        """``none``, ``centred`` or ``harmony``."""
        return self.params.alignment

    # ------------------------------------------------------------------ correction

    def apply(self, x: np.ndarray, domain: int | np.ndarray) -> np.ndarray:
        """Corrected embeddings: ``x`` of domain ``domain`` aligned (see the module), unit rows.

        ``domain`` is 0 (A) or 1 (B), one for all rows or one per row. Each row is corrected on its
        own: one row or many give the same result (up to float rounding).

        Shape:
            x: (n, d) or (d,); domain: int or (n,) -> float32, the shape of ``x``.

        Raises:
            ValueError: ``x`` not 1-d or 2-d of this model's dimension, not finite; ``domain`` not 0
                or 1, or not one per row.
        """
        arr, dom, single = self._inputs(x, domain)
        if self.alignment == "centred":
            out = _unit(arr - self.domain_means[dom])
        elif self.alignment == "harmony":
            out = _unit(arr - self.offsets(self._assign(arr, dom), dom) @ self.components)
        else:
            out = _unit(arr)
        out = out.astype(np.float32)
        return out[0] if single else out

    def project(self, x: np.ndarray) -> np.ndarray:
        """PC coordinates of embeddings, what Harmony corrects: ``(x - mean) @ components.T`` (harmony only).

        Shape:
            x: (n, d) -> (n, P) float64.
        """
        self._need_harmony()
        return (np.asarray(x, dtype=np.float64) - self.mean) @ self.components.T

    def offsets(self, assignments: np.ndarray, domain: np.ndarray) -> np.ndarray:
        """Harmony's correction of each row in PC space: ``sum_k R_k corrections[domain, k]`` (harmony only).

        Shape:
            assignments: (n, K) soft assignments R; domain: (n,) of 0/1 -> (n, P) float64.
        """
        self._need_harmony()
        r = np.asarray(assignments, dtype=np.float64)
        return np.einsum("nk,nkp->np", r, self.corrections[np.broadcast_to(np.asarray(domain), (len(r),))])

    def assignments(self, x: np.ndarray, domain: np.ndarray) -> np.ndarray:
        """Soft assignments of new embeddings to the stored centroids (harmony only; see the module):
        :data:`ASSIGNMENT_ROUNDS` alternations of ``R = softmax(-2 (1 - <unit(z'), Y_k>) / sigma_k)``
        and ``z' = z - offsets(R)``, from ``z' = z``.

        Shape:
            x: (n, d) or (d,) embeddings; domain: int or (n,) of 0/1 -> (n, K) float64, rows summing to 1.

        Raises:
            ValueError: as :meth:`apply`, or not a harmony alignment.
        """
        self._need_harmony()
        return self._assign(*self._inputs(x, domain)[:2])

    def _assign(self, x: np.ndarray, domain: np.ndarray) -> np.ndarray:
        """:meth:`assignments` of checked inputs: x (n, d) float64, domain (n,) int."""
        z = self.project(x)
        corrected = z
        for _ in range(ASSIGNMENT_ROUNDS):
            cosine = _unit(corrected) @ self.centroids.T
            logits = -2.0 * (1.0 - cosine) / self.sigma
            logits -= logits.max(axis=1, keepdims=True)
            r = np.exp(logits)
            r /= r.sum(axis=1, keepdims=True)
            corrected = z - self.offsets(r, domain)
        return r

    def _need_harmony(self) -> None:
        if self.alignment != "harmony":
            raise ValueError(f"only a harmony alignment has PC coordinates, this one is {self.alignment}")

    def _inputs(self, x: Any, domain: Any) -> tuple[np.ndarray, np.ndarray, bool]:
        """``x`` as (n, d) float64, ``domain`` as (n,) int, and whether ``x`` was one row."""
        arr = np.asarray(x)
        if arr.dtype.kind not in "fiu" or arr.ndim not in (1, 2) or arr.shape[-1] != self.dim:
            raise ValueError(f"embeddings must be (n, {self.dim}) or ({self.dim},) numbers, "
                             f"got {arr.dtype} of shape {arr.shape}")
        single = arr.ndim == 1
        arr = np.atleast_2d(arr).astype(np.float64)
        if not np.all(np.isfinite(arr)):
            raise ValueError("embeddings must be finite")
        dom = np.asarray(domain)
        if dom.dtype.kind not in "iu" or dom.ndim > 1 or (dom.ndim == 1 and len(dom) != len(arr)):
            raise ValueError(f"domain must be 0 or 1, one for all {len(arr)} rows or one per row, "
                             f"got {dom.dtype} of shape {dom.shape}")
        if not np.all((dom == 0) | (dom == 1)):
            raise ValueError(f"domain must be 0 (A) or 1 (B), got values {sorted(set(np.unique(dom).tolist()))}")
        return arr, np.broadcast_to(dom.astype(np.int64), (len(arr),)), single

    # ------------------------------------------------------------------ files

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays this alignment stores, by name."""
        return {name: getattr(self, name) for name in ARRAYS[self.alignment]}

    def save(self, path: str | Path) -> Path:
        """Write the model to ``path`` (an ``.npz``, see the module), whole or not at all.

        Returns:
            the path written.
        """
        path = Path(path)
        meta = {"format": FORMAT, "version": VERSION, "alignment": self.alignment, "dim": self.dim,
                "params": self.params.to_dict()}
        buf = io.BytesIO()
        np.savez(buf, meta=np.array(json.dumps(meta, sort_keys=True)), **self.arrays())
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            with os.fdopen(fd, "wb") as fh:
                fh.write(buf.getvalue())
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def load(cls, path: str | Path) -> AlignmentModel:
        """A model written by :meth:`save`, read with ``np.load(allow_pickle=False)``: nothing in the file is run.

        Raises:
            FileNotFoundError: no such file.
            ValueError: one line naming the file: not such a model (not an ``.npz``, truncated,
                object arrays, members missing or extra, a foreign format or version, parameters
                or arrays out of range or of the wrong shape).
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no alignment model {path}")
        try:
            loaded = np.load(path, allow_pickle=False)
            if not isinstance(loaded, np.lib.npyio.NpzFile):
                raise ValueError("a single array, not an .npz archive")
            with loaded as npz:
                members = {name: npz[name] for name in npz.files}
            if "meta" not in members or members["meta"].dtype.kind != "U" or members["meta"].ndim != 0:
                raise ValueError("no meta string")
            meta = json.loads(str(members.pop("meta")))
            if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("version") != VERSION:
                raise ValueError(f"not format {FORMAT} version {VERSION}")
            params = meta.get("params")
            if not isinstance(params, dict) or set(params) != set(AlignmentParams.keys()):
                raise ValueError("params missing or with unknown keys")
            params = AlignmentParams(**params)
            if meta.get("alignment") != params.alignment:
                raise ValueError("alignment and params disagree")
            if set(members) != set(ARRAYS[params.alignment]):
                raise ValueError(f"arrays {sorted(members)}, expected {sorted(ARRAYS[params.alignment])}")
            return cls(params=params, dim=meta.get("dim"), **members)
        except (ValueError, TypeError, KeyError, EOFError, OSError, zipfile.BadZipFile, json.JSONDecodeError,
                UnicodeDecodeError) as exc:
            if isinstance(exc, FileNotFoundError):
                raise
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ValueError(f"{path}: not an alignment model, truncated or corrupt; nothing in it was run "
                             f"({reason})") from None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AlignmentModel):
            return NotImplemented
        mine, theirs = self.arrays(), other.arrays()
        return (self.params == other.params and self.dim == other.dim and mine.keys() == theirs.keys()
                and all(np.array_equal(mine[k], theirs[k]) for k in mine))

    __hash__ = None  # type: ignore[assignment]


# ---------------------------------------------------------------------- fitting


def _check_embeddings(a: Any, b: Any) -> tuple[np.ndarray, np.ndarray]:
    """Both domains' embeddings as float64 (N, d) arrays of one dimension, at least one row each."""
    out = []
    for name, x in (("a", a), ("b", b)):
        arr = np.asarray(x)
        if arr.dtype.kind not in "fiu" or arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] < 1:
            raise ValueError(f"{name} must be a non-empty (N, d) array of numbers, "
                             f"got {arr.dtype} of shape {arr.shape}")
        arr = arr.astype(np.float64)
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} must be finite")
        out.append(arr)
    if out[0].shape[1] != out[1].shape[1]:
        raise ValueError(f"a and b must have the same dimension, got {out[0].shape[1]} and {out[1].shape[1]}")
    return out[0], out[1]


def require_alignment(params: AlignmentParams) -> None:
    """Refuse, before any work, an alignment whose package is not installed.

    Raises:
        ValueError: ``harmony`` without the harmonypy package (one line: how to install it, or
            ``--set alignment=none``).
    """
    import importlib.util

    if params.alignment == "harmony" and importlib.util.find_spec("harmonypy") is None:
        raise ValueError("alignment=harmony needs the harmonypy package (GPL-3.0-or-later): pip install "
                         "'ucdir[harmony]', or train without it with --set alignment=none")


def fit_alignment(params: AlignmentParams, a: np.ndarray, b: np.ndarray) -> AlignmentModel:
    """The alignment ``params.alignment`` fitted on the training images' embeddings of both domains
    (the domain is the only covariate; labels are never read). See the module for each alignment.

    Shape:
        a: (N_A, d), b: (N_B, d) float32 unit rows.

    Raises:
        ValueError: embeddings not 2-d, empty, of different dimensions or not finite; for harmony,
            ``harmony_pcs`` above ``min(d, N_A + N_B - 1)`` or ``harmony_clusters`` above
            ``N_A + N_B``.
        RuntimeError: harmonypy's corrected coordinates do not follow from the stored model (a
            harmonypy whose conventions differ from 2.1's), or harmonypy's own numerical errors.
    """
    if params.alignment == "harmony":
        return fit_harmony(params, a, b)[0]
    xa, xb = _check_embeddings(a, b)
    d = xa.shape[1]
    if params.alignment == "centred":
        return AlignmentModel(params=params, dim=d, domain_means=np.stack([xa.mean(0), xb.mean(0)]))
    return AlignmentModel(params=params, dim=d)


def fit_stage(params: AlignmentParams, a: np.ndarray, b: np.ndarray) -> AlignmentModel:
    """:func:`fit_alignment` as a run fits its stage: Harmony's settings capped at what the number of
    images allows (:meth:`~ucdir_core.align.params.AlignmentParams.for_data`; the model records what
    it used), and the global random generators left as they were (harmonypy draws from numpy's).

    Shape, raises: as :func:`fit_alignment`.
    """
    from ucdir_core.base.seeding import forked_rng

    with forked_rng(params.harmony_seed):
        return fit_alignment(params.for_data(len(a) + len(b), np.shape(a)[-1]), a, b)


def fit_harmony(params: AlignmentParams, a: np.ndarray, b: np.ndarray) -> tuple[AlignmentModel, Any]:
    """Harmony fitted on both domains' training embeddings: the stored model and harmonypy's result
    (its ``Harmony`` object, for checks against it; ``Z_orig`` are the PC coordinates of ``a``
    then ``b``).

    The PC axes are the principal axes of both domains' embeddings centred by their pooled mean
    (:func:`principal_axes`; no scaling, as in the usual PCA before Harmony). harmonypy runs on one
    thread (its results are the same for any number, and the fit takes well under a second for
    thousands of images) with ``lamb=None`` (the ridge penalty estimated from ``harmony_alpha``),
    ``tau=0`` and ``batch_prop_cutoff`` :data:`BATCH_PROP_CUTOFF`.

    Shape:
        a: (N_A, d), b: (N_B, d) -> model with P = ``harmony_pcs``, K = ``harmony_clusters``.

    Raises:
        ValueError, RuntimeError: as :func:`fit_alignment`.
    """
    if params.alignment != "harmony":
        raise ValueError(f"fit_harmony fits alignment harmony, params ask for {params.alignment}")
    xa, xb = _check_embeddings(a, b)
    x = np.concatenate([xa, xb])
    n, d = x.shape
    p, k = params.harmony_pcs, params.harmony_clusters
    if p > min(d, n - 1):
        raise ValueError(f"harmony_pcs must be at most min(dimension {d}, images - 1 = {n - 1}), got {p}")
    if k > n:
        raise ValueError(f"harmony_clusters must be at most the number of training images ({n}), got {k}")
    domain = np.concatenate([np.zeros(len(xa), np.int64), np.ones(len(xb), np.int64)])
    mean = x.mean(axis=0)
    components = principal_axes(x - mean, p)
    z = (x - mean) @ components.T

    try:
        import harmonypy
    except ImportError:
        raise ImportError("alignment harmony needs the harmonypy package (GPL-3.0-or-later): "
                          "pip install 'ucdir[harmony]'") from None

    sigma = np.full(k, params.harmony_sigma)
    ho = harmonypy.run_harmony(
        z, {"domain": domain}, "domain", theta=params.harmony_theta, lamb=None, sigma=sigma, nclust=k, tau=0,
        block_size=params.harmony_block_size, max_iter_harmony=params.harmony_max_iter,
        max_iter_kmeans=params.harmony_max_iter_kmeans, epsilon_cluster=params.harmony_epsilon_cluster,
        epsilon_harmony=params.harmony_epsilon_harmony, alpha=params.harmony_alpha,
        batch_prop_cutoff=BATCH_PROP_CUTOFF, verbose=False, random_state=params.harmony_seed, ncores=1)
    r = np.asarray(ho.R, dtype=np.float64)
    corrections = ridge_corrections(z, r, domain, params.harmony_alpha)
    model = AlignmentModel(params=params, dim=d, mean=mean, components=components,
                           centroids=np.asarray(ho.Y, dtype=np.float64).T, corrections=corrections, sigma=sigma)
    scale = max(float(np.abs(z).max()), np.finfo(np.float64).tiny)
    error = float(np.abs(z - model.offsets(r, domain) - np.asarray(ho.Z_corr)).max()) / scale
    if not error <= REPRODUCTION_TOLERANCE:
        raise RuntimeError(f"harmonypy {getattr(harmonypy, '__version__', '?')}'s corrected coordinates differ from "
                           f"the stored model's by {error:.2g} of their scale (> {REPRODUCTION_TOLERANCE:g}): its "
                           f"correction conventions are not harmonypy 2.1's")
    return model, ho


def principal_axes(centred: np.ndarray, p: int) -> np.ndarray:
    """The first ``p`` principal axes of centred rows: eigenvectors of ``centred.T @ centred`` by
    decreasing eigenvalue (one d x d eigendecomposition rather than an SVD of all N rows), each signed
    so that its largest-magnitude entry is positive (the same axes on every platform).

    Shape:
        centred: (N, d) -> (p, d), orthonormal rows.
    """
    values, vectors = np.linalg.eigh(centred.T @ centred)
    axes = vectors[:, np.argsort(values)[::-1][:p]].T
    signs = np.sign(axes[np.arange(p), np.abs(axes).argmax(axis=1)])
    return axes * np.where(signs == 0, 1.0, signs)[:, None]


def ridge_corrections(z: np.ndarray, r: np.ndarray, domain: np.ndarray, alpha: float) -> np.ndarray:
    """Harmony's per-cluster domain coefficients ``W`` (the intercept left out), solved from the soft
    assignments as harmonypy 2.1's ``moe_correct_ridge`` does, in float64.

    For cluster ``k``: the unknowns are the intercept and one coefficient per domain;
    ``[[o_A + o_B, o_A, o_B], [o_A, o_A + l_A, 0], [o_B, 0, o_B + l_B]] [y; w_A; w_B] =
    [sum_j R_jk z_j; sum_{j in A} R_jk z_j; sum_{j in B} R_jk z_j]`` with ``o_b = sum_{j in b} R_jk``
    and ``l_b = alpha * E[k, b]``, ``E[k, b] = sum_j R_jk * N_b / N``. A cluster in which a domain's
    share ``o_b / N_b`` is not above :data:`BATCH_PROP_CUTOFF` corrects neither domain (zeros).

    Shape:
        z: (N, P); r: (N, K); domain: (N,) of 0/1 -> (2, K, P).
    """
    n_b = np.bincount(domain, minlength=2).astype(np.float64)
    prior = n_b / len(domain)
    out = np.zeros((2, r.shape[1], z.shape[1]))
    for k in range(r.shape[1]):
        rk = r[:, k]
        o = np.array([rk[domain == i].sum() for i in range(2)])
        if not np.all(o / n_b > BATCH_PROP_CUTOFF):
            continue
        penalty = alpha * rk.sum() * prior
        system = np.array([[o.sum(), o[0], o[1]],
                           [o[0], o[0] + penalty[0], 0.0],
                           [o[1], 0.0, o[1] + penalty[1]]])
        rhs = np.stack([rk @ z, rk[domain == 0] @ z[domain == 0], rk[domain == 1] @ z[domain == 1]])
        out[:, k] = np.linalg.solve(system, rhs)[1:]
    return out
