"""How well two domains mix and how well classes separate in an embedding."""

from __future__ import annotations

import numpy as np

from ucdir_core.base.arrays import unit_rows
from ucdir_core.method.clustering import kmeans


def _knn(x: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k nearest neighbours (cosine) of every row, itself excluded. Shape: (N, k)."""
    import faiss

    x = np.ascontiguousarray(unit_rows(x))
    k = min(k, x.shape[0] - 1)  # faiss pads missing neighbours with -1
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    _, idx = index.search(x, k + 1)
    out = np.empty((x.shape[0], k), dtype=np.int64)
    for i, row in enumerate(idx):
        row = row[row != i][:k]
        out[i] = row
    return out


def mixing_and_agreement(emb_a: np.ndarray, labels_a: np.ndarray, emb_b: np.ndarray, labels_b: np.ndarray,
                         k: int = 10) -> dict[str, float]:
    """Domain mixing and class agreement from one k-NN search (cosine, A and B together, each
    image's ``k`` nearest neighbours, itself excluded): ``{"domain_mixing", "class_agreement"}``.

    - ``domain_mixing``: the share of each image's neighbours from the other domain, divided by
      the share expected if the domains were perfectly mixed, averaged over both domains with
      equal weight. 0 = domains fully apart, about 1 = indistinguishable.
    - ``class_agreement``: the share, in percent, of each image's neighbours that have its class
      (labels are read here only).

    Shape:
        emb_a: (N_a, d); labels_a: (N_a,); emb_b: (N_b, d); labels_b: (N_b,).
    """
    nn = _knn(np.concatenate([emb_a, emb_b]), k)
    return {"domain_mixing": _mixing(nn, len(emb_a), len(emb_b)),
            "class_agreement": _agreement(nn, np.r_[labels_a, labels_b])}


def _mixing(nn: np.ndarray, n_a: int, n_b: int) -> float:
    dom = np.r_[np.zeros(n_a, int), np.ones(n_b, int)]
    other = (dom[nn] != dom[:, None]).mean(axis=1)
    n = n_a + n_b - 1
    ratio = other / np.where(dom == 0, n_b / n, n_a / n)
    return float((ratio[dom == 0].mean() + ratio[dom == 1].mean()) / 2)


def _agreement(nn: np.ndarray, y: np.ndarray) -> float:
    return float(100 * (y[nn] == y[:, None]).mean())


def class_discovery(emb_a: np.ndarray, emb_b: np.ndarray, labels_a: np.ndarray, labels_b: np.ndarray, k: int,
                    seed: int = 0) -> dict[str, float]:
    """How well unsupervised clusters of both domains together find the classes: k-means (faiss,
    ``k`` clusters, the best of 5 starts, on both domains' embeddings pooled, no label) scored by
    the adjusted Rand index against the classes (labels read here only), and how evenly its
    clusters hold both domains.

    - ``adjusted_rand``: scikit-learn's adjusted Rand index of clusters vs classes (1 = the
      classes exactly, about 0 = chance).
    - ``balance``: per cluster, ``min(share_A, share_B) / max(share_A, share_B)`` of its images'
      domains, each share relative to its domain's size; averaged over clusters weighted by size
      (1 = every cluster holds both domains in proportion, 0 = every cluster is one domain).

    Shape:
        emb_a: (N_a, d); emb_b: (N_b, d); labels_a: (N_a,); labels_b: (N_b,).
    """
    from sklearn.metrics import adjusted_rand_score

    x = np.concatenate([unit_rows(_numpy(emb_a)), unit_rows(_numpy(emb_b))]).astype(np.float32)
    n_a = len(emb_a)
    assign, _, _ = kmeans(x, k, seed=seed, niter=20, nredo=5)  # the best of 5 starts (lowest inertia)
    ari = float(adjusted_rand_score(np.r_[labels_a, labels_b], assign))
    balance, total = 0.0, 0
    for c in range(k):
        members = assign == c
        share_a, share_b = members[:n_a].sum() / n_a, members[n_a:].sum() / (len(x) - n_a)
        if members.any():
            balance += members.sum() * min(share_a, share_b) / max(share_a, share_b)
            total += int(members.sum())
    return {"adjusted_rand": ari, "balance": float(balance / total)}


def umap_2d(x: np.ndarray, seed: int = 0, n_neighbors: int = 15) -> np.ndarray:
    """UMAP to 2-D with cosine distance. Shape: (N, d) -> (N, 2)."""
    import umap

    return umap.UMAP(n_neighbors=min(n_neighbors, len(x) - 1), metric="cosine", random_state=seed,
                     n_jobs=1).fit_transform(x)


def prototype_spread(x: np.ndarray, prototypes: np.ndarray, min_share: float = 0.05) -> dict[str, float]:
    """How a set of embeddings spreads over a set of prototypes.

    Each row of ``x`` goes to its nearest prototype (cosine; the argmax of the soft assignment that
    distance-of-distance and self-entropy use, whatever their temperature). Returns the entropy (nats)
    of the resulting histogram, at most ``log K`` (every prototype equally used) and 0 when all rows
    fall on one prototype, and ``prototypes_5pct``: how many prototypes receive at least
    ``min_share`` of the rows.

    Shape:
        x: (N, d); prototypes: (K, d).
    """
    x = np.asarray(x, dtype=np.float64)
    p = unit_rows(prototypes, np.float64)
    nearest = np.argmax(x @ p.T, axis=1)
    share = np.bincount(nearest, minlength=len(p)) / len(x)
    nz = share[share > 0]
    return {"entropy": float(-(nz * np.log(nz)).sum()), "prototypes_5pct": int((share >= min_share).sum())}


def alignment_diagnostics(test_emb, test_labels, train_emb, names: tuple[str, str], num_clusters: int,
                          k: int = 10) -> dict:
    """Per-epoch alignment record of a pair of domains (stored in every evaluated history row).

    - ``domain_mixing`` and ``class_agreement`` (:func:`mixing_and_agreement`) on the evaluated
      images; labels enter class agreement only.
    - ``prototype_spread["<F>-><E>"]``: :func:`prototype_spread` of domain F's training embeddings
      over the ``num_clusters`` k-means prototypes of domain E's training embeddings (faiss, seed 0,
      one start), for all four (F, E): the cross-domain entries show how one domain's images fall
      on the other's clusters, which is what distance-of-distance and self-entropy act on.
    - ``partition_agreement[F]``: :func:`partition_agreement` of domain F's training embeddings
      under A's and B's prototypes: what distance-of-distance compares.

    Shape:
        test_emb, train_emb: pairs of (N_d, d) tensors or arrays; test_labels: pair of (N_d,).
    """
    test = [_numpy(e) for e in test_emb]
    train = [_numpy(e) for e in train_emb]
    labels = [np.asarray(y) for y in test_labels]
    protos = [kmeans(e, min(num_clusters, len(e)), seed=0, nredo=1, min_points_per_centroid=1)[1] for e in train]
    spread = {f"{names[f]}->{names[e]}": prototype_spread(train[f], protos[e]) for f in (0, 1) for e in (0, 1)}
    partitions = {names[f]: partition_agreement(train[f], protos[0], protos[1]) for f in (0, 1)}
    return {**mixing_and_agreement(test[0], labels[0], test[1], labels[1], k),
            "prototype_spread": spread, "partition_agreement": partitions}


def partition_agreement(x: np.ndarray, prototypes_a: np.ndarray, prototypes_b: np.ndarray) -> float:
    """Normalised mutual information (0-1) between two partitions of the same embeddings: by nearest
    prototype of A and by nearest prototype of B.

    Distance-of-distance compares, within a batch, the distances between soft assignments to A's
    prototypes with those between assignments to B's; at its temperature (0.01) the assignments
    are nearly one-hot, so the loss is close to the share of pairs that one partition puts together
    and the other apart. NMI 1 = the two partitions are the same up to relabelling (nothing left
    for the loss to do); low = one domain's clusters cut across the other's.

    Shape:
        x: (N, d); prototypes_a: (K_A, d); prototypes_b: (K_B, d).
    """
    from sklearn.metrics import normalized_mutual_info_score

    near = [np.argmax(np.asarray(x, dtype=np.float64) @ unit_rows(p, np.float64).T, axis=1)
            for p in (prototypes_a, prototypes_b)]
    return float(normalized_mutual_info_score(near[0], near[1]))


def _numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float32)
