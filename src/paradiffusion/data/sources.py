"""Image-text sources for real data: a JSONL/CSV manifest, WebDataset shards, a ParaShapes folder.

Each yields plain dicts ``{"id": str, "image": FloatTensor (3, R, R) in [0, 1], "text": str}`` (plus ``"spec"`` for
ParaShapes folders, so faithfulness can be scored). Bad records are either a clear error naming file and line
(manifests: a missing column or file is a user mistake worth stopping for) or, for shards where a partial download
is normal, skipped *and counted* (``stats``), never dropped silently.
"""
from __future__ import annotations

import csv
import io
import json
import logging
from collections import Counter
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from paradiffusion.jsonl import iter_jsonl
from paradiffusion.parashapes.storage import IMAGE_EXTENSIONS, iter_tar_groups, shard_paths

log = logging.getLogger(__name__)

TEXT_EXTS = ("txt", "caption")


def to_tensor(image: Image.Image, resolution: int) -> torch.Tensor:
    """Resize the shorter side to ``resolution`` and center-crop: the standard text-to-image preprocessing."""
    image = image.convert("RGB")
    w, h = image.size
    scale = resolution / min(w, h)
    if scale != 1.0:
        image = image.resize((max(resolution, round(w * scale)), max(resolution, round(h * scale))), Image.BICUBIC)
    w, h = image.size
    left, top = (w - resolution) // 2, (h - resolution) // 2
    image = image.crop((left, top, left + resolution, top + resolution))
    array = np.asarray(image, dtype=np.float32) / 255.0  # (R, R, 3)
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()  # (3, R, R)


def _open_image(path: Path, where: str) -> Image.Image:
    try:
        with Image.open(path) as im:
            im.load()
            return im
    except FileNotFoundError:
        raise FileNotFoundError(f"{where}: image file not found: {path}") from None
    except Exception as exc:  # PIL raises several types for corrupt files
        raise ValueError(f"{where}: cannot read image {path}: {exc}") from exc


class ManifestDataset(Dataset):
    """A JSONL or CSV manifest with ``image`` (path, relative to the manifest) and ``text`` per record."""

    def __init__(self, path: str | Path, resolution: int, image_key: str = "image", text_key: str = "text"):
        self.path = Path(path)
        self.resolution = resolution
        if not self.path.exists():
            raise FileNotFoundError(f"manifest not found: {self.path}")
        self.records: list[tuple[str, Path, str]] = []
        for where, rec in self._read():
            for key in (image_key, text_key):
                if key not in rec or rec[key] in (None, ""):
                    raise ValueError(f"{where}: missing field {key!r} (have {sorted(rec)})")
            image = Path(rec[image_key])
            image = image if image.is_absolute() else self.path.parent / image
            self.records.append((str(rec.get("id", where)), image, str(rec[text_key])))
        if not self.records:
            raise ValueError(f"{self.path}: manifest has no records")

    def _read(self) -> Iterator[tuple[str, dict]]:
        if self.path.suffix.lower() == ".csv":
            with self.path.open(newline="", encoding="utf-8") as f:
                for i, row in enumerate(csv.DictReader(f), start=2):  # line 1 is the header
                    yield f"{self.path}:{i}", row
            return
        with self.path.open(encoding="utf-8") as f:
            for i, rec in iter_jsonl(f, self.path):
                yield f"{self.path}:{i}", rec

    def __len__(self) -> int:
        return len(self.records)

    def texts(self) -> list[str]:
        """Every record's text, without opening an image (what a text-state cache is built over)."""
        return [text for _, _, text in self.records]

    def __getitem__(self, index: int) -> dict:
        key, image, text = self.records[index]
        return {"id": key, "image": to_tensor(_open_image(image, f"{self.path} record {key}"), self.resolution), "text": text}


def _checked_shard_paths(pattern: str | list[str]) -> list[str]:
    """Shard files for a path, folder, glob or list of them; a pattern that matches nothing is an error here
    (a training run with no data must stop, not stream nothing)."""
    paths = shard_paths(pattern)
    if not paths:
        raise FileNotFoundError(f"no WebDataset shards match {pattern!r}")
    for p in paths:
        if not Path(p).exists():
            raise FileNotFoundError(f"WebDataset shard not found: {p}")
    return paths


class WebDatasetSource(IterableDataset):
    """Streams WebDataset tar shards (image + ``.txt``). Incomplete samples are skipped and counted.

    Shards are split across DDP ranks and DataLoader workers so no sample is seen twice per pass;
    ``repeat=True`` cycles forever (training), reshuffling shard order each pass with ``seed``.
    """

    def __init__(self, shards: str | list[str], resolution: int, repeat: bool = False, seed: int = 0,
                 rank: int = 0, world_size: int = 1):
        self.shards = _checked_shard_paths(shards)
        self.resolution, self.repeat, self.seed = resolution, repeat, seed
        self.rank, self.world_size = rank, world_size
        self.stats: Counter = Counter()

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        slot, slots = self.rank * workers + worker, self.world_size * workers
        epoch = 0
        while True:
            order = np.random.default_rng(self.seed + epoch).permutation(len(self.shards)) if self.repeat else range(len(self.shards))
            mine = [self.shards[i] for i in order][slot::slots] or [self.shards[i] for i in order][: 1]
            for shard in mine:
                for key, sample in iter_tar_groups(shard):
                    image_ext = next((e for e in IMAGE_EXTENSIONS if e in sample), None)
                    text_ext = next((e for e in TEXT_EXTS if e in sample), None)
                    if image_ext is None or text_ext is None:
                        self.stats["skipped_incomplete"] += 1
                        log.warning("%s: sample %s lacks %s; skipped (%d so far)", shard, key,
                                    "an image" if image_ext is None else "a .txt caption", self.stats["skipped_incomplete"])
                        continue
                    try:
                        image = Image.open(io.BytesIO(sample[image_ext]))
                        image.load()
                    except Exception as exc:
                        self.stats["skipped_unreadable"] += 1
                        log.warning("%s: sample %s has an unreadable image (%s); skipped", shard, key, exc)
                        continue
                    item = {"id": key, "image": to_tensor(image, self.resolution),
                            "text": sample[text_ext].decode("utf-8").strip()}
                    if "json" in sample:
                        try:
                            meta = json.loads(sample["json"])
                        except json.JSONDecodeError:
                            meta = None
                        if isinstance(meta, dict) and "objects" in meta:
                            item["spec"] = meta
                    self.stats["ok"] += 1
                    yield item
            epoch += 1
            if not self.repeat:
                return


class ParaShapesFolder(Dataset):
    """A ParaShapes folder written by ``paradiffusion data generate --format folder`` (``specs.jsonl`` + PNGs)."""

    def __init__(self, root: str | Path, resolution: int):
        from paradiffusion.parashapes.spec import load_specs

        self.root = Path(root)
        self.resolution = resolution
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

    def __getitem__(self, index: int) -> dict:
        spec = self.specs[index]
        image = _open_image(self.root / f"{spec.id}.png", f"{self.root / 'specs.jsonl'} id {spec.id}")
        return {"id": spec.id, "image": to_tensor(image, self.resolution), "text": spec.paragraph, "spec": spec.to_dict()}
