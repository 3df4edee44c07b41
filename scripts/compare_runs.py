"""Compare two runs of `scripts/demo.py` number for number, to check that a code change kept a recipe's figures.

    python scripts/compare_runs.py runs/demo-old runs/demo-new --cache-a runs/cache-old --cache-b runs/cache-new

Each run is a demo `--out` directory; its stages are the subfolders that hold a `run/` (e.g. `stage1/run`). Prints,
per item, how many values were compared, the max abs difference and the first differing step (or key or file):
- every TensorBoard scalar tag of every stage, per step;
- every checkpoint that both runs hold (`<stage>/run/checkpoints/*.ckpt`): the global step, the `state_dict` tensors
  and the EMA (`checkpoint["ema"]`: decay, num_updates, shadow), by key;
- `summary.json`: the scores and the bootstrap intervals of each stage and split;
- the sampled images (`eval/<stage>/<split>/images/*.png`): how many are byte-identical, the max pixel difference;
- the exported safetensors (`export/**/*.safetensors`), by key;
- with `--cache-a/--cache-b`, the text-state cache files' SHA-256 hashes.
Something only one run has (a tag, step, score, file) is listed but not compared. The last line is the verdict:
`IDENTICAL` when every compared value is equal (max abs difference 0, identical bytes), exit code 0; otherwise
`DIFFERENT: <the items that differ>`, exit code 1. Bad input (a missing directory, an unreadable checkpoint) exits 2.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import re
import sys
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

HASH_CHUNK = 1 << 20


class BadInput(Exception):
    """A run or cache directory that is missing or not what this script compares (exit code 2)."""


@dataclass(frozen=True)
class Result:
    """One compared item: `count` values compared, their max abs difference, the first that differs (None: none)."""

    name: str
    count: int
    max_diff: float
    first: str | None
    note: str = ""  # e.g. what only one run has (listed, not compared)

    @property
    def differs(self) -> bool:
        return self.first is not None

    def line(self) -> str:
        first = self.first if self.first is not None else "-"
        note = f"  [{self.note}]" if self.note else ""
        return f"  {self.name:48s} {self.count:5d} compared  max|diff| {self.max_diff:<9.4g} first diff: {first}{note}"


# ====================================================================================== value comparisons
def number_diff(x: Any, y: Any) -> float:
    """|x - y| for numbers (0 for NaN vs NaN, inf for NaN vs a number); 0 or inf for anything else."""
    if isinstance(x, (int, float)) and isinstance(y, (int, float)):
        if math.isnan(x) and math.isnan(y):
            return 0.0
        diff = abs(float(x) - float(y))
        return math.inf if math.isnan(diff) else diff
    return 0.0 if x == y else math.inf


def tensor_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """Max abs difference of two tensors (NaN where both are NaN counts as equal); inf for another shape or dtype."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return math.inf
    if a.numel() == 0:
        return 0.0
    x, y = a.double(), b.double()
    same = (x == y) | (x.isnan() & y.isnan())
    if bool(same.all()):
        return 0.0
    return float(torch.nan_to_num((x - y).abs()[~same], nan=math.inf).max())


def show_pair(x: Any, y: Any) -> str:
    """'x vs y', with 6 significant digits unless that makes them look equal."""
    short = [f"{v:.6g}" if isinstance(v, float) else repr(v) for v in (x, y)]
    if short[0] == short[1]:
        short = [repr(v) for v in (x, y)]
    return " vs ".join(short)


def only_note(a: Iterable[Any], b: Iterable[Any], what: str) -> str:
    """'only in A: 2 steps (e.g. 40), only in B: ...' for what one run has and the other has not ('' if nothing)."""
    set_a, set_b = set(a), set(b)
    parts = []
    for side, extra in (("A", set_a - set_b), ("B", set_b - set_a)):
        if extra:
            parts.append(f"only in {side}: {len(extra)} {what} (e.g. {sorted(extra, key=str)[:3]})")
    return "; ".join(parts)


def compare_maps(name: str, a: Mapping[Any, Any], b: Mapping[Any, Any], diff: Callable[[Any, Any], float],
                 what: str, show: bool = False) -> Result:
    """Compare the values under the keys both maps have, in key order; `show` adds both values at the first differing
    key to the report."""
    keys = sorted(set(a) & set(b))
    diffs = [diff(a[k], b[k]) for k in keys]
    first = next((k for k, d in zip(keys, diffs) if d != 0), None)
    label = None if first is None else str(first)
    if first is not None and show:
        label = f"{first} ({show_pair(a[first], b[first])})"
    return Result(name, len(keys), max(diffs, default=0.0), label, only_note(a, b, what))


# ====================================================================================== what a run holds
def stages(run: Path) -> list[str]:
    """The stage folders of a demo run: its subfolders with a `run/` inside."""
    return sorted(p.name for p in run.iterdir() if (p / "run").is_dir())


def scalars(run_dir: Path) -> dict[str, dict[int, float]]:
    """Every TensorBoard scalar of a stage as {tag: {step: value}}; of two writes of one step, the later one."""
    out: dict[str, dict[int, float]] = {}
    for path in sorted(run_dir.glob("events.out.tfevents.*")):
        acc = EventAccumulator(str(path), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            out.setdefault(tag, {}).update({e.step: e.value for e in acc.Scalars(tag)})
    return out


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint loaded safely (`weights_only=True`, the repo's rule); a refusal is bad input, naming the object
    type the file holds that `weights_only` does not allow."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        text = str(exc).strip()
        refused = re.search(r"WeightsUnpickler error: ([^\n]*?\.)(?: |$)", text)
        reason = refused.group(1) if refused else (text.splitlines()[0] if text else type(exc).__name__)
        raise BadInput(f"cannot load {path} with weights_only=True: {reason}") from None


def ema_numbers(checkpoint: Mapping[str, Any]) -> dict[str, Any]:
    """The global step and the EMA's decay and update count (``checkpoint["ema"]``, see `paradiffusion.ema`)."""
    ema = checkpoint.get("ema") or {}
    numbers = {"global_step": checkpoint.get("global_step")}
    numbers.update({f"ema.{k}": ema[k] for k in ("decay", "num_updates") if k in ema})
    return numbers


def flat_intervals(ci: Mapping[str, Any]) -> dict[str, Any]:
    """{'presence': [lo, hi]} as {'presence[0]': lo, 'presence[1]': hi}."""
    out: dict[str, Any] = {}
    for key, value in ci.items():
        if isinstance(value, (list, tuple)):
            out.update({f"{key}[{i}]": v for i, v in enumerate(value)})
        else:
            out[key] = value
    return out


def summary_rows(run: Path) -> dict[str, Mapping[str, Any]]:
    """`summary.json`'s rows as {'<stage>/<split>': row}; {} when the run has none."""
    path = run / "summary.json"
    if not path.is_file():
        return {}
    return {f"{row['stage']}/{row['split']}": row for row in json.loads(path.read_text())["rows"]}


def image_dirs(run: Path) -> dict[str, Path]:
    """The sampled-image folders as {'<stage>/<split>': folder}."""
    return {f"{p.parent.parent.name}/{p.parent.name}": p for p in sorted((run / "eval").glob("*/*/images"))}


def file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def relative_files(root: Path, pattern: str) -> dict[str, Path]:
    """The files under `root` matching `pattern` (recursively), by their path relative to `root`."""
    return {str(p.relative_to(root)): p for p in sorted(root.rglob(pattern)) if p.is_file()}


# ====================================================================================== sections
def common_names(section: str, a: Collection[str], b: Collection[str], what: str) -> list[str]:
    """Print what only one run has, or that neither has any; return the names both have."""
    note = only_note(a, b, what)
    if not a and not b:
        print(f"  {section}: none found in either run")
    elif note:
        print(f"  {section}: {note} (not compared)")
    return sorted(set(a) & set(b))


def compare_scalars(stage: str, a: Path, b: Path) -> list[Result]:
    sa, sb = scalars(a / stage / "run"), scalars(b / stage / "run")
    tags = common_names(f"{stage} scalars", sa, sb, "tags")
    return [compare_maps(f"{stage} scalar {tag}", sa[tag], sb[tag], number_diff, "steps", show=True) for tag in tags]


def compare_checkpoint(name: str, path_a: Path, path_b: Path) -> list[Result]:
    ca, cb = load_checkpoint(path_a), load_checkpoint(path_b)
    shadow_a, shadow_b = (c.get("ema", {}).get("shadow", {}) for c in (ca, cb))
    weights_a, weights_b = ca.get("state_dict", {}), cb.get("state_dict", {})
    results = [compare_maps(f"{name} step/EMA counters", ema_numbers(ca), ema_numbers(cb), number_diff, "keys", True),
               compare_maps(f"{name} state_dict", weights_a, weights_b, tensor_diff, "keys")]
    if shadow_a or shadow_b:
        results.append(compare_maps(f"{name} EMA shadow", shadow_a, shadow_b, tensor_diff, "keys"))
    else:
        print(f"  {name}: no EMA in either checkpoint")
    return results


def compare_checkpoints(stage: str, a: Path, b: Path) -> list[Result]:
    ka, kb = ({p.name: p for p in (run / stage / "run" / "checkpoints").glob("*.ckpt")} for run in (a, b))
    names = common_names(f"{stage} checkpoints", ka, kb, "checkpoints")
    return [r for n in names for r in compare_checkpoint(f"{stage} {n}", ka[n], kb[n])]


def compare_summary(a: Path, b: Path) -> list[Result]:
    ra, rb = summary_rows(a), summary_rows(b)
    results = []
    for key in common_names("summary.json rows", ra, rb, "rows"):
        results.append(compare_maps(f"summary {key} scores", ra[key]["scores"], rb[key]["scores"], number_diff,
                                    "scores", show=True))
        ci_a, ci_b = (flat_intervals(r[key].get("ci", {})) for r in (ra, rb))
        results.append(compare_maps(f"summary {key} intervals", ci_a, ci_b, number_diff, "bounds", show=True))
    return results


def pixel_diff(a: Path, b: Path) -> float:
    """The max pixel difference of two images (inf for another size or mode)."""
    with Image.open(a) as ia, Image.open(b) as ib:
        xa, xb = np.asarray(ia, dtype=np.int32), np.asarray(ib, dtype=np.int32)
    return float(np.abs(xa - xb).max()) if xa.shape == xb.shape else math.inf


def compare_image_dir(key: str, a: Path, b: Path) -> Result:
    """The PNGs both folders have, by name: the first that is not byte-identical, the max pixel difference."""
    pa, pb = ({p.name: p for p in d.glob("*.png")} for d in (a, b))
    names = sorted(set(pa) & set(pb))
    differing = [n for n in names if pa[n].read_bytes() != pb[n].read_bytes()]
    worst = max((pixel_diff(pa[n], pb[n]) for n in differing), default=0.0)
    note = "; ".join(filter(None, [f"{len(names) - len(differing)} byte-identical", only_note(pa, pb, "images")]))
    return Result(f"images {key}", len(names), worst, differing[0] if differing else None, note)


def compare_images(a: Path, b: Path) -> list[Result]:
    da, db = image_dirs(a), image_dirs(b)
    return [compare_image_dir(key, da[key], db[key]) for key in common_names("sampled images", da, db, "folders")]


def compare_export(a: Path, b: Path) -> list[Result]:
    fa, fb = relative_files(a / "export", "*.safetensors"), relative_files(b / "export", "*.safetensors")
    return [compare_maps(f"export {rel}", load_file(fa[rel]), load_file(fb[rel]), tensor_diff, "keys")
            for rel in common_names("exported safetensors", fa, fb, "files")]


def compare_caches(a: Path, b: Path) -> list[Result]:
    ha, hb = ({rel: file_hash(p) for rel, p in relative_files(c, "*").items()} for c in (a, b))
    if not ha and not hb:
        print("  text caches: both empty")
        return []
    same = compare_maps("text cache files (SHA-256)", ha, hb, lambda x, y: 0.0 if x == y else math.inf, "files")
    print(f"  text caches: {len(ha)} | {len(hb)} files")
    return [same]


# ====================================================================================== CLI
def check_dirs(args: argparse.Namespace) -> None:
    """Raise `BadInput` naming the first directory that is missing or not a demo run."""
    if (args.cache_a is None) != (args.cache_b is None):
        raise BadInput("give both --cache-a and --cache-b, or neither")
    for label, path in (("run A", args.run_a), ("run B", args.run_b), ("--cache-a", args.cache_a),
                        ("--cache-b", args.cache_b)):
        if path is not None and not path.is_dir():
            raise BadInput(f"{label}: directory not found: {path}")
    for label, path in (("run A", args.run_a), ("run B", args.run_b)):
        if not stages(path):
            raise BadInput(f"{label}: {path} has no stage folders (<stage>/run): not a scripts/demo.py --out dir")


def section(title: str, compare: Callable[[], list[Result]]) -> list[Result]:
    """Print the title, run `compare` (which may print notes) and print its results."""
    print(f"\n=== {title}")
    results = compare()
    for result in results:
        print(result.line())
    return results


def compare_runs(args: argparse.Namespace) -> list[Result]:
    a, b = args.run_a, args.run_b
    stages_a, stages_b = stages(a), stages(b)
    print(f"A: {a}\nB: {b}\nstages: A {stages_a}, B {stages_b}")
    results: list[Result] = []
    for stage in common_names("stages", stages_a, stages_b, "stages"):
        results += section(f"{stage}: TensorBoard scalars (per step)", partial(compare_scalars, stage, a, b))
        results += section(f"{stage}: checkpoints (by key)", partial(compare_checkpoints, stage, a, b))
    results += section("summary.json (scores and intervals)", partial(compare_summary, a, b))
    results += section("sampled images (max pixel difference)", partial(compare_images, a, b))
    results += section("export (safetensors, by key)", partial(compare_export, a, b))
    if args.cache_a is not None:
        results += section("text-state caches", partial(compare_caches, args.cache_a, args.cache_b))
    return results


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_a", type=Path, help="the first run's demo --out directory")
    parser.add_argument("run_b", type=Path, help="the second run's demo --out directory")
    parser.add_argument("--cache-a", type=Path, help="the first run's text-state cache directory")
    parser.add_argument("--cache-b", type=Path, help="the second run's text-state cache directory")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)
    try:
        check_dirs(args)
        results = compare_runs(args)
    except BadInput as exc:
        print(f"compare_runs: error: {exc}", file=sys.stderr)
        return 2
    differing = [r.name for r in results if r.differs]
    print(f"\ncompared {len(results)} items, {len(differing)} differ")
    print(f"DIFFERENT: {', '.join(differing)}" if differing else "IDENTICAL")
    return 1 if differing else 0


if __name__ == "__main__":
    sys.exit(main())
