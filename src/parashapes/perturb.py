"""Image perturbations used to calibrate the judge (and available to users for robustness checks).

"Mild" is fixed here once, so every calibration number refers to the same thing:
Gaussian blur with sigma = 0.6 px (at the image's own resolution), then additive Gaussian noise with
std 0.03 of the full range (~7.7 levels of 255), clipped.
"""
from __future__ import annotations

import numpy as np

MILD_BLUR_SIGMA = 0.6
MILD_NOISE_STD = 0.03


def gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur with edge replication. img: (H, W, C) float -> same shape float32."""
    if sigma <= 0:
        return img.astype(np.float32)
    r = max(1, int(np.ceil(3 * sigma)))
    x = np.arange(-r, r + 1, dtype=np.float32)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    k /= k.sum()
    out = img.astype(np.float32)
    for axis in (0, 1):
        pad = [(0, 0)] * out.ndim
        pad[axis] = (r, r)
        p = np.pad(out, pad, mode="edge")
        n = out.shape[axis]
        out = sum(w * np.take(p, np.arange(i, i + n), axis=axis) for i, w in enumerate(k))
    return out.astype(np.float32)


def degrade(img: np.ndarray, rng: np.random.Generator, blur_sigma: float = MILD_BLUR_SIGMA,
            noise_std: float = MILD_NOISE_STD) -> np.ndarray:
    """Blur then add noise. img: (H, W, 3) uint8 -> (H, W, 3) uint8."""
    out = gaussian_blur(img.astype(np.float32), blur_sigma)
    out = out + rng.normal(0.0, noise_std * 255.0, size=out.shape).astype(np.float32)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def pure_noise(resolution: int, rng: np.random.Generator) -> np.ndarray:
    """Uniform RGB noise, (R, R, 3) uint8."""
    return rng.integers(0, 256, size=(resolution, resolution, 3), dtype=np.uint8)
