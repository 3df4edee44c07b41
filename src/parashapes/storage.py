"""On-disk formats: a folder of PNGs + specs.jsonl, and WebDataset tar shards (img2dataset layout).

Folder        DIR/<id>.png, DIR/specs.jsonl (one spec per line, same order)
WebDataset    DIR/00000.tar, DIR/00001.tar, ... each holding, per sample, `<key>.png`, `<key>.txt` (the
              text) and `<key>.json` (the full spec plus img2dataset's fields key/caption/width/height/
              status), keys `<shard:05d><index:04d>` as img2dataset writes them; plus DIR/<shard>_stats.json.
Both writers are byte-reproducible: PNGs carry no timestamps and tar members have fixed mtime/owner.
Only `tarfile` is needed (no webdataset dependency); `iter_webdataset` reads such shards back (with
`paradiffusion.shards`, the reader training uses).
"""
from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
from PIL import Image

from paradiffusion.shards import IMAGE_EXTENSIONS, iter_tar_groups, shard_paths

from .render import render
from .spec import SceneSpec, save_specs

SPECS_FILE = "specs.jsonl"


def png_bytes(arr: np.ndarray) -> bytes:
    """Encode an (H, W, 3) uint8 array as PNG (deterministic: no metadata chunks)."""
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def write_folder(specs: Iterable[SceneSpec], out: str | os.PathLike[str], resolution: int = 32,
                 style: str = "plain", specs_file: str | None = SPECS_FILE) -> int:
    """Render every spec to `out/<id>.png` and write `out/specs.jsonl`. Returns the number written."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    specs = list(specs)
    for s in specs:
        (out / f"{s.id}.png").write_bytes(png_bytes(render(s, resolution, style)))
    if specs_file:
        save_specs(specs, out / specs_file)
    return len(specs)


def _tarinfo(name: str, size: int) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.size, ti.mtime, ti.mode = size, 0, 0o644
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = ""
    return ti


def write_webdataset(specs: Iterable[SceneSpec], out: str | os.PathLike[str], resolution: int = 32,
                     style: str = "plain", shard_size: int = 1000) -> list[Path]:
    """Write WebDataset shards (`.png` + `.txt` + `.json` per sample). Returns the shard paths."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    if shard_size > 10000:
        raise ValueError("shard_size must be <= 10000 (img2dataset keys have 4 index digits)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    tar: tarfile.TarFile | None = None
    count = 0

    def close_shard() -> None:
        if tar is not None:
            tar.close()
            stats = {"count": count, "successes": count, "failed_to_download": 0, "failed_to_resize": 0,
                     "resolution": resolution, "style": style}
            (out / f"{len(paths) - 1:05d}_stats.json").write_text(json.dumps(stats, indent=1) + "\n")

    for i, s in enumerate(specs):
        shard, idx = divmod(i, shard_size)
        if idx == 0:
            close_shard()
            paths.append(out / f"{shard:05d}.tar")
            tar = tarfile.open(paths[-1], "w", format=tarfile.USTAR_FORMAT)
            count = 0
        key = f"{shard:05d}{idx:04d}"
        meta: dict[str, Any] = {"key": key, "caption": s.paragraph, "width": resolution, "height": resolution,
                                "status": "success", "style": style, **s.to_dict()}
        members = [("png", png_bytes(render(s, resolution, style))), ("txt", s.paragraph.encode("utf-8")),
                   ("json", json.dumps(meta, ensure_ascii=False).encode("utf-8"))]
        for ext, data in members:
            assert tar is not None
            tar.addfile(_tarinfo(f"{key}.{ext}", len(data)), io.BytesIO(data))
        count += 1
    close_shard()
    return paths


def iter_webdataset(paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]]
                    ) -> Iterator[tuple[str, Image.Image, str, dict[str, Any]]]:
    """Yield (key, PIL RGB image, text, json dict) per sample from tar shards (files, dirs or globs).

    Works for any img2dataset-style shard (`.jpg`/`.jpeg`/`.png`/`.webp` image, `.txt`, `.json`); a sample
    missing its image raises a ValueError naming the shard and key.
    """
    for path in shard_paths(paths):
        for key, group in iter_tar_groups(path):
            img_ext = next((e for e in IMAGE_EXTENSIONS if e in group), None)
            if img_ext is None:
                raise ValueError(f"{path}: sample {key!r} has no image member")
            img = Image.open(io.BytesIO(group[img_ext])).convert("RGB")
            text = group["txt"].decode("utf-8") if "txt" in group else ""
            meta = json.loads(group["json"].decode("utf-8")) if "json" in group else {}
            yield key, img, text, meta


def read_folder(folder: str | os.PathLike[str]) -> list[tuple[SceneSpec, Path]]:
    """(spec, expected image path) per record of `folder/specs.jsonl` (images are not opened)."""
    from .spec import load_specs

    folder = Path(folder)
    return [(s, folder / f"{s.id}.png") for s in load_specs(folder / SPECS_FILE)]
