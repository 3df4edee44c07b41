"""Deterministic splits: (split, seed, index) -> SceneSpec.

Every sample draws from its own random stream, `SeedSequence(seed, spawn_key=(split_code, index))`, so
  * splits never share a stream (distinct `split_code`), whatever the seeds;
  * sample `index` can be produced without producing 0..index-1 (the infinite dataset and DDP ranks
    jump straight to their own indices);
  * the same (split, n, seed, style) gives byte-identical specs and images (given the numpy version,
    whose Generator streams numpy keeps stable).
"""
from __future__ import annotations

import numpy as np

from .spec import ObjectSpec, SceneSpec
from .vocab import BACKGROUNDS, COLORS, POSITIONS, SHAPES, SIZES
from .writers import write_caption, write_curated, write_heldout, write_paragraph

SPLITS: tuple[str, ...] = ("stage1", "stage2", "stage3", "val", "test", "heldout")
_SPLIT_CODE = {name: i + 1 for i, name in enumerate(SPLITS)}

#: which writer produces each split's text
SPLIT_WRITER: dict[str, str] = {
    "stage1": "caption", "stage2": "paragraph", "stage3": "curated",
    "val": "paragraph", "test": "paragraph", "heldout": "heldout",
}
#: default render style per split (stage 3 is the curated, "nicer-looking" set)
DEFAULT_STYLE: dict[str, str] = {s: ("curated" if s == "stage3" else "plain") for s in SPLITS}
#: number of objects (1..4) probabilities: alt-text scenes are mostly simple
_N_OBJECTS_P: dict[str, tuple[float, ...]] = {
    "caption": (0.5, 0.3, 0.12, 0.08),
    "default": (0.15, 0.25, 0.3, 0.3),
}
_WRITE = {"caption": write_caption, "paragraph": write_paragraph, "curated": write_curated,
          "heldout": write_heldout}


def _check_style(style: str | None) -> None:
    if style is not None and style not in ("plain", "curated"):
        raise ValueError(f"style must be 'plain', 'curated' or None, got {style!r}")


def _check(split: str, seed: int) -> None:
    if split not in _SPLIT_CODE:
        raise ValueError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")


def sample_rng(split: str, index: int, seed: int = 0) -> np.random.Generator:
    """The private random stream of one sample."""
    _check(split, seed)
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(_SPLIT_CODE[split], int(index))))


def sample_objects(rng: np.random.Generator, writer: str = "paragraph") -> tuple[str, list[ObjectSpec]]:
    """Background and 1-4 objects with distinct colors and distinct cells."""
    p = _N_OBJECTS_P.get(writer, _N_OBJECTS_P["default"])
    n = int(rng.choice(len(p), p=p)) + 1
    colors = list(COLORS)
    color_idx = rng.choice(len(colors), size=n, replace=False)
    pos_idx = rng.choice(len(POSITIONS), size=n, replace=False)
    objects = [ObjectSpec(shape=SHAPES[int(rng.integers(len(SHAPES)))], color=colors[int(c)],
                          size=SIZES[int(rng.integers(len(SIZES)))], position=POSITIONS[int(q)])
               for c, q in zip(color_idx, pos_idx)]
    background = list(BACKGROUNDS)[int(rng.integers(len(BACKGROUNDS)))]
    return background, objects


def generate_one(split: str, index: int, seed: int = 0, style: str | None = None) -> SceneSpec:
    """Sample `index` of a split. `extra` records split, seed, index, style, writer and `mentions`."""
    _check_style(style)
    rng = sample_rng(split, index, seed)
    writer = SPLIT_WRITER[split]
    background, objects = sample_objects(rng, writer)
    text, mentions = _WRITE[writer](objects, background, rng)
    return SceneSpec(
        id=f"{split}-{int(seed)}-{int(index):07d}", paragraph=text, background=background, objects=objects,
        extra={"mentions": mentions, "split": split, "seed": int(seed), "index": int(index),
               "style": style or DEFAULT_STYLE[split], "writer": writer},
    )


def generate_split(split: str, n: int, seed: int = 0, style: str | None = None, start: int = 0) -> list[SceneSpec]:
    """`n` samples (indices start..start+n-1) of `split`. `SceneSpec.paragraph` holds the split's text."""
    _check(split, seed)
    _check_style(style)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    return [generate_one(split, i, seed, style) for i in range(start, start + n)]
