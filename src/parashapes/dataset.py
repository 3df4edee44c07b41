"""Torch datasets that render ParaShapes on the fly, so training needs no disk.

Item: {"id": str, "image": FloatTensor (3, R, R) in [0, 1], "text": str, "spec": dict, "text_kind": str}.
`text="paragraph"` (default) pairs each image with its split's text; `text="scene_list"` with its canonical scene
list (`describe.scene_list`: every attribute in fixed words), the oracle description of the probes.
`ParaShapesDataset(split, n, ...)[i]` is exactly item `i` of `ParaShapesIterable(split, ...)` read by a
single process: both are `generate_one(split, i, seed)` rendered. `ParaShapesFolder` reads a split written to disk
(`parashapes generate --format folder`).

Both follow the dataset protocol of `paradiffusion.data.ImageTextDataModule` (`texts()`, `take(n)`, and for the
stream `item_at(i)`: the stream read by index, so a training run reads it in a fixed batch layout and a resumed run
continues exactly where it stopped), so a config wires them as `data.init_args.train_data` / `val_data` / ...:

    train_data: {class_path: parashapes.ParaShapesIterable, init_args: {split: stage2, resolution: 32}}
    val_data: {class_path: parashapes.ParaShapesDataset, init_args: {split: val, n: 64, resolution: 32}}
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator

import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from .describe import scene_list
from .generate import DEFAULT_STYLE, SPLITS, generate_one
from .render import MAX_RESOLUTION, MIN_RESOLUTION, STYLES, render_tensor
from .spec import SceneSpec, load_specs


#: what text an item pairs with its image
TEXT_KINDS = ("paragraph", "scene_list")


def _check_args(split: str, resolution: int, style: str | None, seed: int, text: str = "paragraph") -> str:
    if text not in TEXT_KINDS:
        raise ValueError(f"text must be one of {TEXT_KINDS}, got {text!r}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")
    if not MIN_RESOLUTION <= int(resolution) <= MAX_RESOLUTION:
        raise ValueError(f"resolution must be in {MIN_RESOLUTION}..{MAX_RESOLUTION}, got {resolution}")
    style = style or DEFAULT_STYLE[split]
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}, got {style!r}")
    if int(seed) < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    return style


def make_item(spec: SceneSpec, resolution: int, style: str, text: str = "paragraph") -> dict[str, Any]:
    """The dataset item of a spec (render + text + plain-dict spec)."""
    return {"id": spec.id, "image": render_tensor(spec, resolution, style),
            "text": spec.paragraph if text == "paragraph" else scene_list(spec), "text_kind": text,
            "spec": spec.to_dict()}


def _rank_and_world() -> tuple[int, int]:
    """DDP rank/world size: from torch.distributed when initialised, else the launcher's env vars."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


class ParaShapesIterable(IterableDataset):
    """Infinite, seeded stream of rendered ParaShapes samples.

    Item ``i`` is ``item_at(i)``: scene ``start + i`` of the split, a function of ``(split, seed, start + i)`` only.
    Training reads the stream by index (``ImageTextDataModule`` wraps it in ``paradiffusion.resume.StreamBatches``:
    batch ``g`` of rank ``r`` holds items ``(g * world_size + r) * batch_size + m``), so a run resumed from a
    checkpoint reads exactly what the uninterrupted run would have, with any number of DataLoader workers.

    Iterated directly, the global index space 0, 1, 2, ... is dealt round-robin over (DDP rank, dataloader worker)
    pairs: stream k of S = world_size * num_workers yields indices start + k, start + k + S, ... so no two
    ranks/workers ever repeat each other, and the union over all of them is exactly 0, 1, 2, ...
    """

    def __init__(self, split: str, resolution: int = 32, style: str | None = None, seed: int = 0,
                 start: int = 0, rank: int | None = None, world_size: int | None = None, text: str = "paragraph"):
        super().__init__()
        self.style = _check_args(split, resolution, style, seed, text)
        self.split, self.resolution, self.seed, self.start = split, int(resolution), int(seed), int(start)
        self.text = text
        self._rank, self._world = rank, world_size

    def _stream(self) -> tuple[int, int]:
        rank, world = _rank_and_world()
        rank = self._rank if self._rank is not None else rank
        world = self._world if self._world is not None else world
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        return rank * nw + wid, world * nw

    def item_at(self, index: int) -> dict[str, Any]:
        """Item ``index`` of the stream (``index >= 0``): what a single process iterating it reads at that place."""
        if index < 0:
            raise IndexError(f"index must be >= 0, got {index}")
        return make_item(generate_one(self.split, self.start + int(index), self.seed, self.style), self.resolution,
                         self.style, self.text)

    def resume(self, step: int, rank: int, world_size: int) -> "ParaShapesIterable":
        """The older stream protocol (kept for wrappers that forward it): the stream on rank `rank` of `world_size`,
        its seed offset by the step so a run resumed at `step` draws fresh scenes. Not exact: the DataModule reads
        this stream by `item_at` instead, which resumes at the very next sample."""
        return ParaShapesIterable(self.split, self.resolution, self.style, self.seed + 7919 * int(step), self.start,
                                  rank, world_size, self.text)

    def take(self, n: int) -> "ParaShapesDataset":
        """Items 0..n-1 of this stream as a finite dataset (specs generated up front, images rendered on demand)."""
        return ParaShapesDataset(self.split, n, self.resolution, self.style, self.seed, self.text)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        i, stride = self._stream()
        while True:
            yield self.item_at(i)
            i += stride


class ParaShapesDataset(Dataset):
    """Finite map-style version: items 0..n-1 of the split (specs generated up front, images lazily)."""

    def __init__(self, split: str, n: int, resolution: int = 32, style: str | None = None, seed: int = 0,
                 text: str = "paragraph"):
        super().__init__()
        self.style = _check_args(split, resolution, style, seed, text)
        self.text = text
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        self.split, self.n, self.resolution, self.seed = split, int(n), int(resolution), int(seed)
        self.specs: list[SceneSpec] = [generate_one(split, i, self.seed, self.style) for i in range(self.n)]

    def __len__(self) -> int:
        return self.n

    def take(self, n: int) -> "ParaShapesDataset":
        """Its first `n` items (all of them when `n` >= its size)."""
        return ParaShapesDataset(self.split, min(int(n), self.n), self.resolution, self.style, self.seed, self.text)

    def texts(self) -> list[str]:
        """Every item's text, without rendering (what a text-state cache is built over)."""
        return [s.paragraph if self.text == "paragraph" else scene_list(s) for s in self.specs]

    def __getitem__(self, i: int) -> dict[str, Any]:
        if not -self.n <= i < self.n:
            raise IndexError(f"index {i} out of range for {self.n} samples")
        return make_item(self.specs[i], self.resolution, self.style, self.text)


class ParaShapesFolder(Dataset):
    """A ParaShapes folder written by `parashapes generate --format folder` (`specs.jsonl` + `<id>.png`); items carry
    their specs, so the judge can score what a model draws for them."""

    def __init__(self, root: str | Path, resolution: int = 32):
        self.root = Path(root)
        self.resolution = int(resolution)
        specs_path = self.root / "specs.jsonl"
        if not specs_path.exists():
            raise FileNotFoundError(f"{self.root}: not a ParaShapes folder (no specs.jsonl)")
        self.specs = load_specs(specs_path)
        missing = [s.id for s in self.specs if not (self.root / f"{s.id}.png").exists()]
        if missing:
            raise FileNotFoundError(f"{self.root}: {len(missing)} images named in specs.jsonl are missing, e.g. {missing[:3]}")

    def __len__(self) -> int:
        return len(self.specs)

    def texts(self) -> list[str]:
        return [s.paragraph for s in self.specs]

    def __getitem__(self, index: int) -> dict[str, Any]:
        from PIL import Image

        from paradiffusion.data.sources import to_tensor

        spec = self.specs[index]
        path = self.root / f"{spec.id}.png"
        try:
            with Image.open(path) as im:
                im.load()
                image = to_tensor(im, self.resolution)
        except Exception as exc:  # PIL raises several types for corrupt files
            raise ValueError(f"{self.root / 'specs.jsonl'} id {spec.id}: cannot read image {path}: {exc}") from exc
        return {"id": spec.id, "image": image, "text": spec.paragraph, "spec": spec.to_dict()}
