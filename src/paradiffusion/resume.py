"""Bit-exact resume: a run killed at any point (``kill -9``) and resumed from ``last.ckpt`` ends with the weights, the
optimizer state and the EMA of the run that was never interrupted (CPU, fp32: max abs difference 0).

What a training step depends on, and where each is restored from:

* **the weights, the optimizer and LR-scheduler state, the loop counters**: Lightning's checkpoint; **the EMA**: the
  module's ``checkpoint["ema"]``.
* **the training batches**: the same samples in the same order. The training set is read in a fixed *batch layout*
  (:class:`StreamBatches`, :class:`EpochBatches`): batch ``g`` of rank ``r`` is a function of ``(seed, g, r)`` only,
  never of how many DataLoader workers deal it out or of when the run started. :class:`ResumableLoader` starts every
  iteration at the number of batches training has consumed (Lightning's own counter, restored from the checkpoint's
  loop state; a prefetched batch that training never took is not counted) and records it in the checkpoint
  (``loops.fit_loop.state_dict.combined_loader``, Lightning's stateful-dataloader slot).
* **the random streams** (noise, timesteps, caption dropout, dropout): :class:`ResumeState` saves torch's CPU (and
  CUDA) generator, Python's ``random``, NumPy's global generator and every ``torch.Generator`` the LightningModule
  holds, as training would see them next, and puts them back right before the first training batch after a resume.

Exact for: datasets whose item is a function of its index (ParaShapes streams and sets, manifests, image folders:
nothing random in loading), any ``num_workers``, DDP ranks seeded alike (Lightning's ``seed_everything`` seeds every
rank the same; rank 0's streams are saved). Not exact: streams that cannot be addressed by index
(``WebDatasetSource``: reshuffled from the step on resume, see ``ImageTextDataModule``), a changed batch size or
world size (the layout changes: a warning says so), GPU kernels that are not deterministic.
"""
from __future__ import annotations

import logging
import random
import weakref
from typing import Any, Callable, Iterator

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------- batch layouts
class _BatchLayout(IterableDataset):
    """Items in the order of a fixed batch layout, from global batch :meth:`seek` on.

    Global batch ``g`` (``g = 0, 1, 2, ...``, counted per rank) holds ``batch_size`` items that depend on ``g`` and
    the rank only. DataLoader worker ``w`` of ``n`` yields batches ``first + w, first + w + n, ...``; the DataLoader
    takes one batch from each worker in turn, so the loader's batches are ``first, first + 1, ...`` for any number of
    workers. The position lives in shared memory, so :meth:`seek` reaches persistent workers too.
    """

    def __init__(self, batch_size: int, rank: int = 0, world_size: int = 1):
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} out of range for world_size {world_size}")
        self.batch_size, self.rank, self.world_size = int(batch_size), int(rank), int(world_size)
        self._first = torch.zeros((), dtype=torch.int64).share_memory_()

    def seek(self, batch: int) -> None:
        """Start the next iteration at global batch ``batch``."""
        if batch < 0:
            raise ValueError(f"batch must be >= 0, got {batch}")
        self._first.fill_(int(batch))

    @property
    def position(self) -> int:
        return int(self._first)

    def _end(self, first: int) -> int | None:
        """Where an iteration started at ``first`` stops (exclusive); ``None``: never."""
        return None

    def batch_items(self, g: int) -> Iterator[dict[str, Any]]:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """What fixes the layout (recorded in the checkpoint; a resume that changes it is not exact)."""
        return {"batch_size": self.batch_size, "world_size": self.world_size}

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        first = int(self._first)
        end = self._end(first)
        g = first + worker
        while end is None or g < end:
            yield from self.batch_items(g)
            g += workers


class StreamBatches(_BatchLayout):
    """An endless stream addressed by index (``stream.item_at(i)``, e.g. ``parashapes.ParaShapesIterable``), in
    batches: batch ``g`` of rank ``r`` holds items ``(g * world_size + r) * batch_size + m``, ``m < batch_size``.
    The ranks together read items 0, 1, 2, ... in order, each exactly once; a single process reads the stream in its
    own order."""

    def __init__(self, stream: Any, batch_size: int, rank: int = 0, world_size: int = 1):
        super().__init__(batch_size, rank, world_size)
        if not callable(getattr(stream, "item_at", None)):
            raise TypeError(f"{type(stream).__name__} has no item_at(index): it cannot be read in a fixed layout")
        self.stream = stream

    def __getattr__(self, name: str) -> Any:  # the stream's own attributes (resolution, split, seed, ...)
        if name == "stream" or name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.stream, name)

    def batch_items(self, g: int) -> Iterator[dict[str, Any]]:
        base = (g * self.world_size + self.rank) * self.batch_size
        for m in range(self.batch_size):
            yield self.stream.item_at(base + m)

    def describe(self) -> dict[str, Any]:
        return {"kind": "stream", **super().describe()}


class EpochBatches(_BatchLayout):
    """A finite map-style dataset in shuffled epochs, in batches: epoch ``e`` is the permutation drawn from
    ``(seed, e)``; its batch ``j`` on rank ``r`` holds permuted items ``(j * world_size + r) * batch_size + m``. Every
    rank reads ``len(dataset) // (batch_size * world_size)`` batches per epoch (the remainder is dropped, as
    ``drop_last`` does); global batch ``g`` is batch ``g % that`` of epoch ``g // that``. An iteration ends at the end
    of the epoch it starts in (so a Lightning epoch is one pass)."""

    def __init__(self, dataset: Dataset, batch_size: int, rank: int = 0, world_size: int = 1, seed: int = 0,
                 shuffle: bool = True):
        super().__init__(batch_size, rank, world_size)
        self.dataset, self.seed, self.shuffle = dataset, int(seed), bool(shuffle)
        self.n = len(dataset)
        self.batches_per_epoch = self.n // (self.batch_size * self.world_size)
        if self.batches_per_epoch == 0:
            raise ValueError(f"the training set has {self.n} items, fewer than one batch of {self.batch_size} per "
                             f"rank on {self.world_size} rank(s): lower data.batch_size or use more training items")
        self._perm: tuple[int, np.ndarray] | None = None

    def __len__(self) -> int:  # items this rank reads per epoch (the DataLoader's length: batches per epoch)
        return self.batches_per_epoch * self.batch_size

    def order(self, epoch: int) -> np.ndarray:
        """Epoch ``epoch``'s order of the dataset's indices."""
        if self._perm is None or self._perm[0] != epoch:
            perm = (np.random.default_rng([self.seed, epoch]).permutation(self.n) if self.shuffle
                    else np.arange(self.n))
            self._perm = (epoch, perm)
        return self._perm[1]

    def _end(self, first: int) -> int:
        return (first // self.batches_per_epoch + 1) * self.batches_per_epoch

    def batch_items(self, g: int) -> Iterator[dict[str, Any]]:
        epoch, j = divmod(g, self.batches_per_epoch)
        order = self.order(epoch)
        base = (j * self.world_size + self.rank) * self.batch_size
        for m in range(self.batch_size):
            yield self.dataset[int(order[base + m])]

    def describe(self) -> dict[str, Any]:
        return {"kind": "epochs", "items": self.n, "seed": self.seed, "shuffle": self.shuffle, **super().describe()}


class ResumableLoader(DataLoader):
    """A training DataLoader over a batch layout that starts each iteration where training stands, and records it.

    ``consumed()`` -- the batches training has taken from this loader (for a layout: the global batch the next
    iteration starts at) -- is ``progress()`` when that gives a number (the DataModule passes Lightning's count of
    training batches, restored from a checkpoint with the loop state), else what :meth:`load_state_dict` restored,
    else the batches this loader's iterators yielded. Lightning saves :meth:`state_dict` in the checkpoint and calls
    :meth:`load_state_dict` on resume (a DataLoader with both is "stateful" to it).

    ``dataset`` is what the DataLoader reads: the layout itself, or a wrapper that reads the layout item by item.
    """

    def __init__(self, dataset: Dataset, layout: _BatchLayout, progress: Callable[[], int | None] | None = None,
                 **kwargs: Any):
        kwargs.setdefault("batch_size", layout.batch_size)
        if kwargs["batch_size"] != layout.batch_size:
            raise ValueError(f"batch_size={kwargs['batch_size']} differs from the layout's {layout.batch_size}")
        super().__init__(dataset, **kwargs)
        self.layout, self.progress = layout, progress
        self._restored: int | None = None
        self._start, self._yielded = 0, 0

    def consumed(self) -> int:
        n = self.progress() if self.progress is not None else None
        if n is not None:
            return int(n)
        if self._restored is not None:
            return self._restored
        return self._start + self._yielded

    def state_dict(self) -> dict[str, Any]:
        return {"batches": self.consumed(), "layout": self.layout.describe()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved, now = state.get("layout", {}), self.layout.describe()
        changed = {k: (saved[k], now[k]) for k in now if k in saved and saved[k] != now[k]}
        if changed:
            log.warning("resuming with a different training-data layout (%s): batches after the checkpoint differ "
                        "from those of an uninterrupted run", ", ".join(f"{k} {a} -> {b}" for k, (a, b) in changed.items()))
        self._restored = int(state["batches"])

    def __iter__(self) -> Iterator[Any]:
        n = self.progress() if self.progress is not None else None
        if n is not None and self._restored is not None and n != self._restored:
            log.warning("the checkpoint's data position (%d batches) differs from its training progress (%d); "
                        "following the training progress", self._restored, n)
        start = int(n) if n is not None else self.consumed()
        self._restored = None
        self._start, self._yielded = start, 0
        self.layout.seek(start)
        return self._counted(super().__iter__())

    def _counted(self, batches: Iterator[Any]) -> Iterator[Any]:
        for batch in batches:
            self._yielded += 1
            yield batch


# ----------------------------------------------------------------------------------------------- random streams
def _module_generators(module: torch.nn.Module | None) -> dict[str, torch.Generator]:
    """Every ``torch.Generator`` held as an attribute by ``module`` or one of its submodules."""
    found: dict[str, torch.Generator] = {}
    if module is None:
        return found
    for prefix, sub in module.named_modules():
        for attr, value in vars(sub).items():
            if isinstance(value, torch.Generator):
                found[f"{prefix}.{attr}" if prefix else attr] = value
    return found


def capture_rng(module: torch.nn.Module | None = None) -> dict[str, Any]:
    """The state of every random stream a training step may draw from, as tensors and numbers only (so a checkpoint
    holding it still loads with ``torch.load(weights_only=True)``)."""
    version, mt, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": {"version": int(version), "state": torch.tensor(mt, dtype=torch.int64), "gauss": gauss},
        "numpy": {"name": str(name), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "generators": {k: g.get_state() for k, g in _module_generators(module).items()},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any], module: torch.nn.Module | None = None) -> None:
    """Put back what :func:`capture_rng` took (generators the module no longer has are ignored)."""
    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py["version"], tuple(int(x) for x in py["state"].tolist()), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state((npy["name"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"],
                         npy["cached_gaussian"]))
    generators = _module_generators(module)
    for key, value in state.get("generators", {}).items():
        if key in generators:
            generators[key].set_state(value)
        else:
            log.warning("resume: the module has no generator %r any more; its saved state is not used", key)
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class ResumeState(Callback):
    """Checkpoints the random streams and puts them back on resume (see the module docstring).

    The state saved is the one the next training step starts from: a checkpoint written during validation (which
    draws from the streams and then restores them: ``paradiffusion.callbacks.ValidationRNGFence``) records the streams as
    validation found them. On resume they are restored right before the first training batch, after everything that
    happens between loading and training (sanity validation, the DataLoader starting, callbacks' start hooks).
    Listed in ``experiments/base.yaml``; any trainer can add it (``--trainer.callbacks+=paradiffusion.resume.ResumeState``).
    """

    def __init__(self) -> None:
        self._module: weakref.ref | None = None
        self._pending: dict[str, Any] | None = None  # loaded, not yet restored
        self._train_rng: dict[str, Any] | None = None  # the streams as training left them (set during validation)

    def _pl_module(self) -> torch.nn.Module | None:
        return self._module() if self._module is not None else None

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        self._module = weakref.ref(pl_module)

    def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
        self._train_rng = capture_rng(pl_module)

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        self._train_rng = None
        if self._pending is not None:
            restore_rng(self._pending, pl_module)
            self._pending = None

    def state_dict(self) -> dict[str, Any]:
        if self._pending is not None:  # saved again before training resumed: what was loaded is still what is next
            return {"rng": self._pending}
        return {"rng": self._train_rng if self._train_rng is not None else capture_rng(self._pl_module())}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = state_dict.get("rng")
