"""Extension points: what other installed packages add to the ``paradiffusion`` command, found by entry points.

The library names no benchmark; a benchmark package registers itself in its own packaging metadata::

    [options.entry_points]
    paradiffusion.commands =
        data = mybench.cli:main              # `paradiffusion data ARGS` calls main(["ARGS", ...]) -> exit code
    paradiffusion.benchmarks =
        mybench = mybench.plugin:BENCHMARK   # a Benchmark: named prompt sets and files for `paradiffusion generate`

(An editable install picks up new entry points after ``pip install -e .`` is run again.)
"""
from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from functools import lru_cache
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger(__name__)

COMMANDS_GROUP = "paradiffusion.commands"
BENCHMARKS_GROUP = "paradiffusion.benchmarks"


@dataclass
class Prompts:
    """Paragraphs to draw, with their ids; with ``references`` and ``score`` a benchmark also judges the images:
    ``score(images (N, 3, H, W) in [0, 1], references) -> {metric: float}``."""

    ids: list[str]
    texts: list[str]
    references: list[Any] | None = None
    score: Callable[[Any, list[Any]], dict[str, float]] | None = None

    def head(self, n: int) -> "Prompts":
        """The first ``n`` prompts."""
        refs = self.references[:n] if self.references is not None else None
        return Prompts(self.ids[:n], self.texts[:n], refs, self.score)


class Benchmark:
    """What a benchmark adds to ``paradiffusion generate``. Every method is optional (the defaults add nothing)."""

    def add_generate_arguments(self, group: argparse._MutuallyExclusiveGroup) -> None:
        """Add options that select a prompt set (e.g. ``--split NAME``) to the group ``--prompts`` belongs to."""

    def prompts(self, args: argparse.Namespace, n: int, seed: int) -> Prompts | None:
        """The prompt set the parsed ``args`` select with this benchmark's options (``n`` of them), else None."""
        return None

    def read_prompts(self, path: Path, text: str) -> Prompts | None:
        """The prompts of a ``--prompts`` file written in this benchmark's own format, else None (``text`` is the
        file's content, already decoded). Errors in a file it claims raise `paradiffusion.checks.UserError`."""
        return None


def _load(group: str) -> dict[str, Any]:
    loaded = {}
    for ep in sorted(entry_points(group=group), key=lambda e: e.name):
        try:
            loaded[ep.name] = ep.load()
        except Exception as exc:  # a broken plugin must not take the whole command down
            log.warning("%s plugin %r (%s) cannot be loaded: %s", group, ep.name, ep.value, exc)
    return loaded


@lru_cache(maxsize=None)
def commands() -> dict[str, Callable[[list[str]], int]]:
    """``{name: main}`` of the ``paradiffusion.commands`` entry points."""
    return _load(COMMANDS_GROUP)


@lru_cache(maxsize=None)
def benchmarks() -> tuple[Benchmark, ...]:
    """The ``paradiffusion.benchmarks`` entry points' objects (an entry point naming a class is instantiated)."""
    return tuple(b() if isinstance(b, type) else b for b in _load(BENCHMARKS_GROUP).values())
