"""Small numpy helpers shared by the evaluation and companion layers."""

from __future__ import annotations

import numpy as np


def unit_rows(x, dtype=np.float32) -> np.ndarray:
    """``x`` with every row scaled to unit L2 norm (rows of norm 0 stay 0), as ``dtype``.

    Shape:
        (N, d) -> (N, d).
    """
    x = np.asarray(x, dtype=dtype)
    return x / np.linalg.norm(x, axis=1, keepdims=True).clip(min=1e-12)
