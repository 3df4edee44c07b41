"""Sample images for ParaShapes paragraphs and score their faithfulness. No Lightning import.

Shared by the validation callback, ``paradiffusion generate`` and the demo, so every number the project prints
comes from one code path.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

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


def score(images: torch.Tensor, specs: Sequence[Any]) -> dict[str, float]:
    """ParaShapes faithfulness of ``images`` against their specs, as plain floats."""
    from paradiffusion.parashapes import ParaShapesScore

    metric = ParaShapesScore()
    metric.update(images.float().cpu(), list(specs))
    return {k: float(v) for k, v in metric.compute().items()}


def evaluate_split(
    pipeline: Any,
    split: str = "heldout",
    n: int = 64,
    seed: int = 0,
    settings: SamplingSettings | None = None,
    out_dir: str | Path | None = None,
) -> dict[str, float]:
    """Sample ``n`` images for a ParaShapes split and score them; optionally write PNGs, specs and scores."""
    from paradiffusion.parashapes import generate_split

    settings = settings or SamplingSettings()
    specs = generate_split(split, n, seed=seed)
    images = sample(pipeline, [s.paragraph for s in specs], settings, seed=seed)
    scores = score(images, specs)
    if out_dir is not None:
        out = Path(out_dir)
        save_images(images, [s.id for s in specs], out / "images")
        to_pil(make_grid(images[:64])).save(out / "grid.png")
        with (out / "specs.jsonl").open("w") as f:
            for s in specs:
                f.write(json.dumps(s.to_dict()) + "\n")
        (out / "scores.json").write_text(json.dumps(scores, indent=2, sort_keys=True) + "\n")
    return scores
