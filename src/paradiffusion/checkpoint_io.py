"""Checkpoints written whole or not at all, even when the disk fills up mid-save.

Lightning's own writer (`TorchCheckpointIO` → `_atomic_save`) stages a local checkpoint in the system temp directory
and then moves it into place. Where that directory is on another filesystem (a small /tmp, a tmpfs) the move is a
copy *into* the target file: the disk filling up during it leaves a truncated ``last.ckpt`` in place of the previous,
good one, and a large checkpoint can fill /tmp, reported as a disk-full error on a disk the run does not use.

:class:`AtomicCheckpointIO` writes next to the target (``.<name>.partial-<host>-<pid>``, fsync'd) and renames it
over the target, which is atomic on one filesystem: the previous checkpoint survives any failed save, and the partial
file is removed. A process killed mid-save (``kill -9``, OOM killer) cannot remove it: the next save of the same
target removes the partial files that processes of this host no longer running left behind. The directory is fsync'd
after the rename, so the new name survives a power cut too. ``paradiffusion fit`` installs it on every trainer whose strategy uses Lightning's default writer (DeepSpeed
writes its own sharded checkpoints and is left alone). Remote paths (``s3://`` ...) keep Lightning's writer.
"""
from __future__ import annotations

import glob
import os
import socket
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO


class AtomicCheckpointIO(TorchCheckpointIO):
    """`TorchCheckpointIO` whose local saves go to a sibling temporary file renamed over the target."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__}.save_checkpoint got storage_options={storage_options!r}; "
                            "nothing here consumes them")
        save_atomically(checkpoint, path)


def _host() -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in socket.gethostname()) or "host"


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_stale_partials(path: str | os.PathLike) -> list[Path]:
    """Remove the partial files of ``path`` left by processes of this host that are no longer running (a save
    killed mid-write); returns them."""
    path = Path(path)
    prefix = f".{path.name}.partial-{_host()}-"
    removed = []
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.partial-*"):
        pid = tmp.name[len(prefix):]
        if tmp.name.startswith(prefix) and pid.isdigit() and int(pid) != os.getpid() and not _running(int(pid)):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # a platform or filesystem without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_atomically(obj: Any, path: str | os.PathLike) -> None:
    """`torch.save(obj, path)` through ``.<name>.partial-<host>-<pid>`` in the same directory + `os.replace`: at
    every moment ``path`` is the previous file or the new one, whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(path)
    tmp = path.with_name(f".{path.name}.partial-{_host()}-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def install(trainer: Any) -> None:
    """Use :class:`AtomicCheckpointIO` where the trainer's strategy has Lightning's default writer."""
    strategy = trainer.strategy
    if "DeepSpeed" in type(strategy).__name__:
        return
    if type(strategy.checkpoint_io) is TorchCheckpointIO:
        strategy.checkpoint_io = AtomicCheckpointIO()
