"""Image-text sources for real data: a JSONL/CSV manifest, WebDataset shards, a folder of images with captions.

Each yields plain dicts ``{"id": str, "image": FloatTensor (3, R, R) in [0, 1], "text": str}`` (plus ``"spec"``
when a shard sample's ``.json`` carries a benchmark scene, ``"objects"``, so its faithfulness can be scored). Bad
records are either a clear error naming file and line (manifests and folders: a missing column or file is a user
mistake worth stopping for) or, for shards where a partial download is normal, skipped *and counted* (``stats``),
never dropped silently.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import tarfile
from collections import Counter
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from paradiffusion.jsonl import iter_jsonl
from paradiffusion.shards import IMAGE_EXTENSIONS, iter_tar_groups, shard_paths, tar_complete

log = logging.getLogger(__name__)

TEXT_EXTS = ("txt", "caption")


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB as a viewer shows the image: transparency (RGBA, LA, a palette's transparent index) composited over white
    instead of revealing the colour hidden under it, 16-bit images scaled to 8 bits instead of clipped to white."""
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):  # 16-bit PNG/TIFF (Pillow opens some as "I")
        array = np.asarray(image, dtype=np.float64) / 257.0
        image = Image.fromarray(np.clip(np.rint(array), 0, 255).astype(np.uint8), mode="L")
    elif image.mode == "F":  # float images: [0, 1]
        image = Image.fromarray(np.clip(np.rint(np.asarray(image) * 255.0), 0, 255).astype(np.uint8), mode="L")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return image.convert("RGB")


def to_tensor(image: Image.Image, resolution: int) -> torch.Tensor:
    """Resize the shorter side to ``resolution`` and center-crop: the standard text-to-image preprocessing."""
    image = to_rgb(image)
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
        missing: list[str] = []
        for where, rec in self._read():
            for key in (image_key, text_key):
                if key not in rec or rec[key] in (None, ""):
                    raise ValueError(f"{where}: missing field {key!r} (have {sorted(rec)})")
            image = Path(rec[image_key])
            image = image if image.is_absolute() else self.path.parent / image  # relative to the manifest's folder
            if not image.is_file():
                missing.append(f"{where}: image file not found: {image}")
            self.records.append((str(rec.get("id", where)), image, str(rec[text_key])))
        if missing:  # found now, not when the record is drawn hours into a run
            raise FileNotFoundError(missing[0] + (f" (and {len(missing) - 1} more records)" if len(missing) > 1 else ""))
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

    def resume(self, step: int, rank: int, world_size: int) -> "WebDatasetSource":
        """This stream as a training run at optimizer step ``step`` on rank ``rank`` of ``world_size`` reads it
        (`ImageTextDataModule`): repeating, its shard order reshuffled by the step so a resumed run does not
        replay the order it started with, its shards dealt over the ranks."""
        return WebDatasetSource(self.shards, self.resolution, repeat=True, seed=self.seed + step, rank=rank,
                                world_size=world_size)

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        slot, slots = self.rank * workers + worker, self.world_size * workers
        epoch = 0
        while True:
            order = np.random.default_rng(self.seed + epoch).permutation(len(self.shards)) if self.repeat else range(len(self.shards))
            mine = [self.shards[i] for i in order][slot::slots] or [self.shards[i] for i in order][: 1]
            for shard in mine:
                try:
                    yield from self._samples(shard)
                except (tarfile.TarError, EOFError) as exc:  # cut inside a member: the rest of the shard is lost
                    self.stats["skipped_truncated"] += 1
                    log.warning("%s: truncated or corrupt shard (%s): the rest of it is skipped", shard, exc)
                    continue
                if not tar_complete(shard):  # cut between members: tarfile stops without a word
                    self.stats["skipped_truncated"] += 1
                    log.warning("%s: truncated shard (no end-of-archive marker): samples after the cut are lost", shard)
            epoch += 1
            if not self.repeat:
                return

    def _samples(self, shard: str) -> Iterator[dict]:
        for key, sample in iter_tar_groups(shard):
            item = self.decode(shard, key, sample)
            if item is not None:
                yield item

    def decode(self, shard: str, key: str, sample: dict[str, bytes]) -> dict | None:
        """One grouped sample (``{extension: bytes}``) as the item dict, or ``None`` after counting and logging why
        it is skipped (no image or caption, an image PIL cannot read, a caption that is not UTF-8)."""
        image_ext = next((e for e in IMAGE_EXTENSIONS if e in sample), None)
        text_ext = next((e for e in TEXT_EXTS if e in sample), None)
        if image_ext is None or text_ext is None:
            self.stats["skipped_incomplete"] += 1
            log.warning("%s: sample %s lacks %s; skipped (%d so far)", shard, key,
                        "an image" if image_ext is None else "a .txt caption", self.stats["skipped_incomplete"])
            return None
        try:
            image = Image.open(io.BytesIO(sample[image_ext]))
            image.load()
        except Exception as exc:
            self.stats["skipped_unreadable"] += 1
            log.warning("%s: sample %s has an unreadable image (%s); skipped", shard, key, exc)
            return None
        try:
            text = sample[text_ext].decode("utf-8").strip()
        except UnicodeDecodeError as exc:
            self.stats["skipped_unreadable"] += 1
            log.warning("%s: sample %s has a caption that is not UTF-8 (%s); skipped", shard, key, exc)
            return None
        item = {"id": key, "image": to_tensor(image, self.resolution), "text": text}
        if "json" in sample:
            try:
                meta = json.loads(sample["json"])
            except json.JSONDecodeError:
                meta = None
            if isinstance(meta, dict) and "objects" in meta:
                item["spec"] = meta
        self.stats["ok"] += 1
        return item


class ImageFolder(Dataset):
    """A folder of images, each with its caption in a text file of the same name (``cat.png`` + ``cat.txt``, or
    ``.caption``), searched recursively; ids are the paths relative to the folder, without the extension. An image
    without a caption, or an empty caption, is an error naming the file: found when the folder is read, not hours
    into a run."""

    def __init__(self, root: str | Path, resolution: int):
        self.root = Path(root)
        self.resolution = resolution
        if not self.root.is_dir():
            raise FileNotFoundError(f"image folder not found: {self.root}")
        images = sorted(p for p in self.root.rglob("*") if p.suffix.lower().lstrip(".") in IMAGE_EXTENSIONS)
        self.records: list[tuple[str, Path, str]] = []
        problems: list[str] = []
        for image in images:
            caption = next((image.with_suffix(f".{e}") for e in TEXT_EXTS if image.with_suffix(f".{e}").is_file()), None)
            if caption is None:
                problems.append(f"{image}: no caption file ({image.with_suffix('.txt').name})")
                continue
            text = caption.read_text(encoding="utf-8").strip()
            if not text:
                problems.append(f"{caption}: empty caption")
                continue
            self.records.append((str(image.relative_to(self.root).with_suffix("")), image, text))
        if problems:
            raise ValueError(problems[0] + (f" (and {len(problems) - 1} more images)" if len(problems) > 1 else ""))
        if not self.records:
            raise ValueError(f"{self.root}: no images ({', '.join(IMAGE_EXTENSIONS)}) with captions")

    def __len__(self) -> int:
        return len(self.records)

    def texts(self) -> list[str]:
        """Every caption, without opening an image (what a text-state cache is built over)."""
        return [text for _, _, text in self.records]

    def __getitem__(self, index: int) -> dict:
        key, image, text = self.records[index]
        return {"id": key, "image": to_tensor(_open_image(image, f"{self.root} id {key}"), self.resolution), "text": text}
