"""Tiny numpy image morphology: connected components and dilation (no scipy in this project)."""
from __future__ import annotations

import numpy as np


def dilate(mask: np.ndarray, radius: int = 1) -> np.ndarray:
    """Binary dilation with a (2r+1)x(2r+1) square. mask: (H, W) bool."""
    out = mask.copy()
    for _ in range(radius):
        m = out.copy()
        m[1:, :] |= out[:-1, :]
        m[:-1, :] |= out[1:, :]
        out = m.copy()
        m[:, 1:] |= out[:, :-1]
        m[:, :-1] |= out[:, 1:]
        out = m
    return out


def label_components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """4-connected components of a boolean (H, W) mask.

    Returns (labels (H, W) int32 with -1 for background and 0..n-1 for components, n). Min-label
    propagation with pointer jumping: each pass takes the 4-neighbour minimum, then every pixel jumps to
    its label's label, so long thin components converge in O(log length) passes rather than O(length).
    """
    h, w = mask.shape
    big = np.int64(h * w)
    idx = np.arange(h * w, dtype=np.int64).reshape(h, w)
    lab = np.where(mask, idx, big)
    if not mask.any():
        return np.full((h, w), -1, np.int32), 0
    fg = mask
    while True:
        m = lab.copy()
        np.minimum(m[1:, :], lab[:-1, :], out=m[1:, :])
        np.minimum(m[:-1, :], lab[1:, :], out=m[:-1, :])
        np.minimum(m[:, 1:], lab[:, :-1], out=m[:, 1:])
        np.minimum(m[:, :-1], lab[:, 1:], out=m[:, :-1])
        m = np.where(fg, m, big)
        flat = m.ravel()
        flat[fg.ravel()] = flat[flat[fg.ravel()]]  # pointer jumping (labels always point at fg pixels)
        if np.array_equal(m, lab):
            break
        lab = m
    roots, inv = np.unique(lab[fg], return_inverse=True)
    out = np.full((h, w), -1, np.int32)
    out[fg] = inv.astype(np.int32)
    return out, len(roots)
