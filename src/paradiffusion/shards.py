"""WebDataset-style tar shards, read with `tarfile` alone (no webdataset dependency): the img2dataset layout, one
sample per key (`<key>.jpg|png|...`, `<key>.txt`, `<key>.json`, ...), members of a sample stored next to each other.

Standard library only, so tools that write or read shards can use it without importing torch.
"""
from __future__ import annotations

import glob
import os
import tarfile
from pathlib import Path
from typing import Iterable, Iterator

IMAGE_EXTENSIONS = ("png", "jpg", "jpeg", "webp")


def shard_paths(paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]]) -> list[str]:
    """Shard files for a path, a folder (its `*.tar`), a glob, or a list of them, in sorted order per entry."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out: list[str] = []
    for p in paths:
        p = str(p)
        if os.path.isdir(p):
            out.extend(sorted(glob.glob(os.path.join(p, "*.tar"))))
        elif any(ch in p for ch in "*?["):
            out.extend(sorted(glob.glob(p)))
        else:
            out.append(p)
    return out


def iter_tar_groups(path: str | os.PathLike[str]) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, {extension: bytes}) per sample of one tar shard: members grouped by consecutive key, the key being a
    member's basename up to its first dot (the img2dataset / WebDataset convention). Shared by every shard reader."""
    with tarfile.open(path, "r") as tar:
        group: dict[str, bytes] = {}
        key: str | None = None
        for member in tar:
            if not member.isfile():
                continue
            k, _, ext = os.path.basename(member.name).partition(".")
            if key is not None and k != key:
                yield key, group
                group = {}
            key = k
            f = tar.extractfile(member)
            group[ext.lower()] = f.read() if f is not None else b""
        if key is not None and group:
            yield key, group


def tar_complete(path: str | Path) -> bool:
    """Whether a tar file ends with its end-of-archive marker (two zero blocks after the last member)."""
    with tarfile.open(path, "r") as tar:
        for _ in tar:  # headers only: member data is skipped
            pass
        end = tar.offset
    with open(path, "rb") as f:
        f.seek(end)
        tail = f.read(1024)
    return len(tail) == 1024 and not any(tail)
