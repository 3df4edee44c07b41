"""ParaShapes in `paradiffusion generate` (entry point group `paradiffusion.benchmarks`, see `paradiffusion.plugins`):

* ``--split NAME [--n N --seed S]``: draw the paragraphs of a ParaShapes split; the images are scored;
* ``--prompts FILE.jsonl`` holding ParaShapes specs (``parashapes generate`` writes them): the same, for those scenes.
  A JSONL file whose first record has no ``objects`` is left to the generic reader (plain ``paragraph`` records).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from paradiffusion.checks import UserError
from paradiffusion.plugins import Benchmark, Prompts

from .generate import SPLITS, generate_split
from .spec import SpecError, load_specs


def _score(images, specs) -> dict[str, float]:
    from .evaluate import score

    return score(images, specs)


class ParaShapesBenchmark(Benchmark):
    """ParaShapes' prompt sets (its splits) and spec files, judged by its scorer."""

    def add_generate_arguments(self, group: argparse._MutuallyExclusiveGroup) -> None:
        group.add_argument("--split", choices=SPLITS, help="a ParaShapes split (e.g. heldout); images are scored")

    def prompts(self, args: argparse.Namespace, n: int, seed: int) -> Prompts | None:
        split = getattr(args, "split", None)
        if split is None:
            return None
        specs = generate_split(split, n, seed=seed)
        return Prompts([s.id for s in specs], [s.paragraph for s in specs], [s.to_dict() for s in specs], _score)

    def read_prompts(self, path: Path, text: str) -> Prompts | None:
        if path.suffix != ".jsonl":
            return None
        first = next((line for line in text.splitlines() if line.strip()), None)
        if first is not None:
            try:
                record = json.loads(first)
            except json.JSONDecodeError:
                record = None  # claimed: the spec reader names every bad line
            if isinstance(record, dict) and "objects" not in record:
                return None  # plain JSONL prompts, not scenes
        try:
            specs = load_specs(path)
        except SpecError as e:
            more = f" (and {len(e.errors) - 1} more problems)" if len(e.errors) > 1 else ""
            raise UserError(str(e).splitlines()[0] + more) from None
        if not specs:
            raise UserError(f"{path}: no specs (the file is empty or has only blank lines)")
        return Prompts([s.id for s in specs], [s.paragraph for s in specs], [s.to_dict() for s in specs], _score)
