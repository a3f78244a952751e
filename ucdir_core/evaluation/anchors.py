"""Reference rows for every table: what the untrained features give without training.

Three embeddings of the same evaluated images, all from the pretrained backbone's pooled features
(no training step):

- ``baseline``: the features as they are.
- ``centred``: each domain's features minus the mean of that domain's *training* images, then
  L2-normalised. The trivial, label-free domain alignment: it needs nothing but the domain of each
  image, which UCDIR also knows.
- ``oracle``: a linear map fitted with the class labels of both domains' training images
  (linear discriminant analysis, then cosine). It uses labels, so it is a ceiling for linear maps
  of these features, not a method; under the full split it is fitted on the evaluated images
  themselves (transductive).

Retrieval ranks by cosine similarity, so every output is L2-normalised.
"""

from __future__ import annotations

import numpy as np

from ucdir_core.base.arrays import unit_rows
from ucdir_core.base.pair import DomainPair

#: the anchor rows of every table, lowest first
ANCHORS = ("baseline", "centred", "oracle")
#: the anchors that are not the untrained features themselves: reference lines below and above a method
REFERENCE_ANCHORS = ANCHORS[1:]


def centred(train: DomainPair[np.ndarray], test: DomainPair[np.ndarray]) -> DomainPair[np.ndarray]:
    """Per-domain mean centring: ``test_d - mean(train_d)``, L2-normalised.

    Shape:
        train: pair of (N_d, D) training features; test: pair of (M_d, D) -> pair of (M_d, D).
    """
    return DomainPair(*(unit_rows(te - np.asarray(tr, dtype=np.float64).mean(0)) for tr, te in zip(train, test)))


def oracle(train: DomainPair[np.ndarray], train_labels: DomainPair[np.ndarray],
           test: DomainPair[np.ndarray]) -> DomainPair[np.ndarray]:
    """LDA fitted on both domains' training features and class labels, applied to the evaluated
    features, L2-normalised (uses labels: the labelled ceiling, not a method).

    Shape:
        train: pair of (N_d, D); train_labels: pair of (N_d,); test: pair of (M_d, D)
        -> pair of (M_d, C - 1) with C classes.
    """
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    x = np.concatenate([np.asarray(t, dtype=np.float64) for t in train])
    y = np.concatenate([np.asarray(t) for t in train_labels])
    lda = LinearDiscriminantAnalysis().fit(x, y)
    return test.map(lambda t: unit_rows(lda.transform(np.asarray(t, dtype=np.float64))))


def anchor_embeddings(train: DomainPair[np.ndarray], train_labels: DomainPair[np.ndarray],
                      test: DomainPair[np.ndarray]) -> dict[str, DomainPair[np.ndarray]]:
    """``{"baseline", "centred", "oracle"}`` -> embeddings of the evaluated images (see the module)."""
    return {"baseline": test.map(unit_rows), "centred": centred(train, test), "oracle": oracle(train, train_labels, test)}
