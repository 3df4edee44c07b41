"""Sample images for ParaShapes paragraphs and score their faithfulness. No Lightning import.

Shared by the validation callback, ``paradiffusion generate`` and the demo, so every number the project prints
comes from one code path.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

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
    """ParaShapes faithfulness of ``images`` against their specs, as plain floats, from this process alone.

    No cross-process sync: callers score images every rank has (the validation callback samples the same fixed
    paragraphs on each rank), and a sync of these CPU states would fail under NCCL (DeepSpeed/DDP on GPUs).
    """
    from paradiffusion.parashapes import ParaShapesScore

    metric = ParaShapesScore(sync_on_compute=False)
    metric.update(images.float().cpu(), list(specs))
    return {k: float(v) for k, v in metric.compute().items()}


def score_with_chance(images: torch.Tensor, specs: Sequence[Any]) -> dict[str, float]:
    """:func:`score`, plus ``chance/<metric>``: the same images judged against the next scene's spec (cyclic shift),
    i.e. what they earn without following their own paragraph (the image prior's hits)."""
    scores = score(images, specs)
    if len(specs) > 1:
        scores.update({f"chance/{k}": v for k, v in score(images, list(specs[1:]) + list(specs[:1])).items()
                       if not k.startswith("by_mention/")})
    return scores


def evaluate_split(
    pipeline: Any,
    split: str = "heldout",
    n: int = 64,
    seed: int = 0,
    settings: SamplingSettings | None = None,
    out_dir: str | Path | None = None,
    describe: Callable[[dict[str, Any]], str] | None = None,
) -> dict[str, float]:
    """Sample ``n`` images for a ParaShapes split and score them; optionally write PNGs, specs and scores.
    ``describe(spec_dict)`` words the scenes instead of their own paragraphs (as in :func:`text_dependence`).

    Also returns ``chance/<metric>`` (:func:`score_with_chance`): a model follows its text by the margin
    ``<metric> - chance/<metric>``, not by ``<metric>`` alone."""
    from paradiffusion.parashapes import generate_split

    settings = settings or SamplingSettings()
    specs = generate_split(split, n, seed=seed)
    texts = [describe(s.to_dict()) if describe else s.paragraph for s in specs]
    images = sample(pipeline, texts, settings, seed=seed)
    scores = score_with_chance(images, specs)
    if out_dir is not None:
        out = Path(out_dir)
        save_images(images, [s.id for s in specs], out / "images")
        to_pil(make_grid(images[:64])).save(out / "grid.png")
        with (out / "specs.jsonl").open("w") as f:
            for s in specs:
                f.write(json.dumps(s.to_dict()) + "\n")
        (out / "scores.json").write_text(json.dumps(scores, indent=2, sort_keys=True) + "\n")
    return scores


@torch.no_grad()
def text_dependence(
    model: Any,
    split: str = "val",
    n: int = 64,
    timesteps: Sequence[int] = (100, 300, 500, 700, 900),
    seed: int = 0,
    resolution: int | None = None,
    batch_size: int = 16,
    describe: Callable[[dict[str, Any]], str] | None = None,
) -> dict[str, float]:
    """Does the denoiser use its text? The diffusion loss on ``n`` ParaShapes images at fixed noise and fixed
    timesteps, conditioned on (a) each image's own paragraph, (b) another image's paragraph (rolled by one), and
    (c) the empty paragraph. A model that reads its paragraphs has ``loss_true`` clearly below ``loss_shuffled``;
    equal losses mean it draws from its image prior alone, whatever the judge's attribute scores say.

    ``model`` is a :class:`~paradiffusion.module.ParaDiffusion` (anything with ``text_encoder``,
    ``noise_scheduler``, ``to_diffusion_space`` and ``forward(x_t, t, context, mask)``). Images go through the
    model ``batch_size`` at a time (the result does not depend on it beyond float rounding), so the probe fits
    wherever training does. ``describe`` turns an item's spec dict into its text (default: the split's own
    paragraph), e.g. to probe a model trained on another description style. Returns the three losses averaged over ``timesteps``, per-timestep values
    (``loss_true/t=…``) and ``shuffled_over_true``.
    """
    from paradiffusion.diffusion.schedule import training_target
    from paradiffusion.parashapes import ParaShapesDataset

    resolution = resolution or int(model.unet.config.sample_size) * (8 if getattr(model, "vae", None) is not None else 1)
    dataset = ParaShapesDataset(split, n, resolution=resolution, seed=seed)  # built once: it generates all n specs
    items = [dataset[i] for i in range(n)]
    device = next(model.unet.parameters()).device
    texts = [describe(it["spec"]) if describe else it["text"] for it in items]
    if getattr(model, "text_rewriter", None) is not None:
        texts = model.restate(texts)  # what the model's encoder reads; the shuffled pairs below stay shuffled
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
            context, mask = model.text_encoder(tok["input_ids"].to(device), tok["attention_mask"].to(device))
            context = context.to(x0.dtype)  # (b, T, D)
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
