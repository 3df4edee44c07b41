"""Sampling images for paragraphs, image grids and files, and the text-use probe. No Lightning import.

Shared by ``paradiffusion generate``, the callbacks and the benchmarks built on the library (e.g. ParaShapes), so
every image the project scores is drawn by one code path.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from PIL import Image


@dataclass
class SamplingSettings:
    """How validation/evaluation images are drawn."""

    num_inference_steps: int = 20
    guidance_scale: float = 3.0
    sampler: str = "dpm"
    batch_size: int = 32


def make_grid(images: torch.Tensor, nrow: int | None = None, pad: int = 2) -> torch.Tensor:
    """Tile ``(B, 3, H, W)`` images into one ``(3, H', W')`` grid (white padding)."""
    b, c, h, w = images.shape
    nrow = nrow or math.ceil(math.sqrt(b))
    ncol = math.ceil(b / nrow)
    grid = torch.ones(c, ncol * (h + pad) + pad, nrow * (w + pad) + pad, dtype=images.dtype)
    for i in range(b):
        r, col = divmod(i, nrow)
        top, left = pad + r * (h + pad), pad + col * (w + pad)
        grid[:, top : top + h, left : left + w] = images[i]
    return grid


def to_pil(image: torch.Tensor) -> Image.Image:
    """``(3, H, W)`` in [0, 1] -> PIL RGB."""
    array = (image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255.0).round().astype(np.uint8)
    return Image.fromarray(array)


def save_images(images: torch.Tensor, ids: Sequence[str], out_dir: str | Path) -> list[Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for image, key in zip(images, ids):
        path = out / f"{key}.png"
        to_pil(image).save(path)
        paths.append(path)
    return paths


@torch.no_grad()
def sample(pipeline: Any, paragraphs: Sequence[str], settings: SamplingSettings, seed: int) -> torch.Tensor:
    """Images ``(B, 3, H, W)`` in [0, 1]; image ``i`` uses seed ``seed + i`` whatever the batching."""
    return pipeline(
        list(paragraphs),
        num_inference_steps=settings.num_inference_steps,
        guidance_scale=settings.guidance_scale,
        sampler=settings.sampler,
        seed=seed,
        batch_size=settings.batch_size,
    )


@torch.no_grad()
def text_dependence(
    model: Any,
    items: Sequence[Mapping[str, Any]],
    timesteps: Sequence[int] = (100, 300, 500, 700, 900),
    seed: int = 0,
    batch_size: int = 16,
) -> dict[str, float]:
    """Does the denoiser use its text? The diffusion loss on the images of ``items`` (``{"image": (3, R, R) in
    [0, 1], "text": str}`` each, e.g. a dataset's items) at fixed noise and fixed timesteps, conditioned on (a) each
    image's own text, (b) another image's text (rolled by one), and (c) the empty text. A model that reads its
    paragraphs has ``loss_true`` clearly below ``loss_shuffled``; equal losses mean it draws from its image prior
    alone, whatever a benchmark's attribute scores say.

    ``model`` is a :class:`~paradiffusion.module.ParaDiffusion` (anything with ``text_encoder``,
    ``noise_scheduler``, ``to_diffusion_space`` and ``forward(x_t, t, context, mask)``). Images go through the
    model ``batch_size`` at a time (the result does not depend on it beyond float rounding), so the probe fits
    wherever training does. Returns the three losses averaged over ``timesteps``, per-timestep values
    (``loss_true/t=…``) and ``shuffled_over_true``.
    """
    from paradiffusion.diffusion.schedule import training_target
    from paradiffusion.pipeline import encode_text

    n = len(items)
    if n == 0:
        raise ValueError("text_dependence: no items")
    device = next(model.unet.parameters()).device
    texts = [it["text"] for it in items]
    conditions = {"true": texts, "shuffled": texts[1:] + texts[:1], "empty": [""] * n}
    pixels = torch.stack([it["image"] for it in items]) * 2 - 1  # (N, 3, R, R) in [-1, 1]
    # the same noise whatever batch_size: drawn for all n images at once
    noise_gen = torch.Generator().manual_seed(seed)
    sq_err = {(name, t): 0.0 for name in conditions for t in timesteps}
    count = 0
    noise_all = None
    for start in range(0, n, batch_size):
        stop = min(n, start + batch_size)
        x0 = model.to_diffusion_space(pixels[start:stop].to(device))  # (b, C, h, w)
        if noise_all is None:
            noise_all = torch.randn((n, *x0.shape[1:]), generator=noise_gen)  # (N, C, h, w)
        noise = noise_all[start:stop].to(x0)
        for name, paragraphs in conditions.items():
            tok = model.text_encoder.tokenize(paragraphs[start:stop])
            context, mask = encode_text(model.text_encoder, tok["input_ids"], tok["attention_mask"],
                                        dtype=x0.dtype)  # (b, T, D), (b, T)
            for t_value in timesteps:
                t = torch.full((stop - start,), int(t_value), device=device, dtype=torch.long)  # (b,)
                x_t = model.noise_scheduler.add_noise(x0, noise, t)
                target = training_target(model.noise_scheduler, x0, noise, t)
                sq_err[(name, t_value)] += float((model(x_t, t, context, mask) - target).pow(2).sum())
        count += x0[0].numel() * (stop - start)
    out: dict[str, float] = {}
    for (name, t_value), total in sq_err.items():
        out[f"loss_{name}/t={t_value}"] = total / count
    for name in conditions:
        out[f"loss_{name}"] = float(np.mean([out[f"loss_{name}/t={t}"] for t in timesteps]))
    out["shuffled_over_true"] = out["loss_shuffled"] / out["loss_true"]
    return out
