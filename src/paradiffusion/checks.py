"""Input and weight checks shared by the entry points: nothing the user hands in fails silently or with a traceback.

* :class:`UserError` — a bad input (a missing file, an empty prompts file, a corrupt checkpoint, weights with NaN).
  The command-line tools print its message as one line and exit with code 2, without a traceback.
* :class:`NonFiniteError` — training produced a non-finite loss or gradient (see
  :class:`paradiffusion.callbacks.NonFiniteGuard`); the tools print it as one line and exit with code 1.
* :func:`assert_finite` / :func:`load_checkpoint` — weights with NaN/Inf are refused, naming the tensor; a checkpoint
  that is missing, truncated or not a Lightning checkpoint is refused before anything is built from it.

See docs/reliability.md for the whole matrix of inputs and what each gets.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import torch


class UserError(Exception):
    """A bad input the user can fix; the CLI prints ``str(e)`` (one line, naming file/line/field) and exits 2."""

    exit_code = 2


class MissingInputError(UserError, FileNotFoundError):
    """A file or directory the user named does not exist."""


class NonFiniteWeightsError(UserError, ValueError):
    """Weights with NaN or Inf offered to `init_from`, `export` or `generate`."""


class NonFiniteError(RuntimeError):
    """Training produced a non-finite loss or gradient and the guard stopped it (exit code 1)."""

    exit_code = 1


def _tensors(obj: Any, prefix: str) -> Iterator[tuple[str, torch.Tensor]]:
    if isinstance(obj, torch.Tensor):
        yield prefix, obj
    elif isinstance(obj, Mapping):
        for k, v in obj.items():
            yield from _tensors(v, f"{prefix}.{k}" if prefix else str(k))


def checkpoint_tensors(ckpt: Mapping[str, Any]) -> Iterator[tuple[str, torch.Tensor]]:
    """The weights of a Lightning checkpoint: ``state_dict`` entries by their own name, EMA shadows as ``ema:<name>``.
    (Optimizer states are not weights: a resumed run's guard catches what they would do.)"""
    if not isinstance(ckpt, Mapping):
        return
    state = ckpt["state_dict"] if "state_dict" in ckpt else {k: v for k, v in ckpt.items() if k != "ema"}
    yield from _tensors(state, "")
    ema = ckpt.get("ema")
    if isinstance(ema, Mapping) and isinstance(ema.get("shadow"), Mapping):
        for name, t in _tensors(ema["shadow"], ""):
            yield f"ema:{name}", t


def first_nonfinite(named: Iterable[tuple[str, torch.Tensor]]) -> tuple[str, int, int, int, int] | None:
    """``(name, n_nan, n_inf, numel, n_bad_tensors)`` for the first floating tensor holding NaN/Inf, or None."""
    first, bad = None, 0
    for name, t in named:
        if not (t.is_floating_point() or t.is_complex()) or t.numel() == 0:
            continue
        if bool(torch.isfinite(t).all()):
            continue
        bad += 1
        if first is None:
            first = (name, int(torch.isnan(t).sum()), int(torch.isinf(t).sum()), t.numel())
    return None if first is None else (*first, bad)


def assert_finite(named: Iterable[tuple[str, torch.Tensor]], where: str) -> None:
    """Raise :class:`NonFiniteWeightsError` naming the first tensor with NaN/Inf (and how many tensors have them)."""
    found = first_nonfinite(named)
    if found is not None:
        name, n_nan, n_inf, numel, bad = found
        what = ", ".join(s for s in (f"{n_nan} NaN" if n_nan else "", f"{n_inf} Inf" if n_inf else "") if s)
        more = f" ({bad} tensors in all have NaN/Inf)" if bad > 1 else ""
        raise NonFiniteWeightsError(f"{where}: tensor {name!r} has {what} of {numel} values{more}; these weights "
                                    f"come from a diverged run: use an earlier checkpoint")


def assert_finite_modules(modules: Mapping[str, torch.nn.Module | None], where: str) -> None:
    """:func:`assert_finite` over the parameters and buffers of several modules, names prefixed by their key."""
    def named() -> Iterator[tuple[str, torch.Tensor]]:
        for key, module in modules.items():
            if module is not None:
                for name, t in module.state_dict(keep_vars=False).items():
                    yield f"{key}.{name}", t
    assert_finite(named(), where)


def load_checkpoint(path: str | os.PathLike, field: str, *, need_state_dict: bool = True,
                    check_finite: bool = True, mmap: bool = True) -> dict[str, Any]:
    """Load a checkpoint safely (``weights_only=True``) or raise :class:`UserError` naming ``field`` and the file.

    ``mmap=True`` reads only the archive's index up front, so checking a large checkpoint before a run costs little
    more than the load the run does anyway. A DeepSpeed checkpoint (a directory) is returned as ``{}`` unchecked.
    """
    p = Path(path)
    if not p.exists():
        raise MissingInputError(f"{field}: checkpoint not found: {p}")
    if p.is_dir():
        if (p / "latest").is_file() or (p / "checkpoint").is_dir():  # DeepSpeed's sharded layout
            return {}
        raise UserError(f"{field}: {p} is a directory, not a checkpoint file")
    if p.stat().st_size == 0:
        raise UserError(f"{field}: {p} is empty (0 bytes): an interrupted save? use an earlier checkpoint")
    try:
        try:
            ckpt = torch.load(p, map_location="cpu", weights_only=True, mmap=mmap)
        except Exception:
            if not mmap:
                raise
            ckpt = torch.load(p, map_location="cpu", weights_only=True)  # a legacy (non-zip) file cannot be mmap'd
    except Exception as exc:  # zip/pickle errors come in many types (RuntimeError, UnpicklingError, EOFError, ...)
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "Weights only load failed" in str(exc):
            reason = "it holds objects other than tensors and plain containers (refused: weights_only=True)"
        raise UserError(f"{field}: {p} is not a readable checkpoint ({reason[:200]}); truncated or corrupt? "
                        f"use an earlier checkpoint") from None
    if need_state_dict and (not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict)):
        have = sorted(ckpt)[:6] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise UserError(f"{field}: {p} is not a Lightning checkpoint (no 'state_dict'; has {have})")
    if check_finite:
        assert_finite(checkpoint_tensors(ckpt), f"{field}: {p}")
    return ckpt
