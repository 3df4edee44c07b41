"""A model against the ParaShapes judge: score images, sample and score a split, and the text-use probe on a split.

Built on the library's sampling (`paradiffusion.evaluate`): the validation callback (`parashapes.callbacks`),
`paradiffusion generate --split` (through `parashapes.plugin`), the demo and the probe scripts all score through here.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from paradiffusion.evaluate import SamplingSettings, make_grid, sample, save_images, to_pil
from paradiffusion.evaluate import text_dependence as _text_dependence


def score(images: torch.Tensor, specs: Sequence[Any]) -> dict[str, float]:
    """ParaShapes faithfulness of ``images`` against their specs, as plain floats, from this process alone.

    No cross-process sync: callers score images every rank has (the validation callback samples the same fixed
    paragraphs on each rank), and a sync of these CPU states would fail under NCCL (DeepSpeed/DDP on GPUs).
    """
    from .metric import ParaShapesScore

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
    from .generate import generate_split

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
    """The library's text-use probe (`paradiffusion.evaluate.text_dependence`: the diffusion loss with each image's
    own, another image's and the empty text) on ``n`` ParaShapes images of ``split``. ``describe`` turns an item's
    spec dict into its text (default: the split's own paragraph), e.g. to probe a model trained on another
    description style. ``resolution`` defaults to the model's image size."""
    from .dataset import ParaShapesDataset

    resolution = resolution or int(model.unet.config.sample_size) * (8 if getattr(model, "vae", None) is not None else 1)
    dataset = ParaShapesDataset(split, n, resolution=resolution, seed=seed)  # built once: it generates all n specs
    items = [dataset[i] for i in range(n)]
    if describe is not None:
        items = [{**it, "text": describe(it["spec"])} for it in items]
    return _text_dependence(model, items, timesteps=timesteps, seed=seed, batch_size=batch_size)
