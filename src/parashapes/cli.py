"""`parashapes generate|score|render|stats`, also `paradiffusion data ...` (the exact form of issue 2; other tools
call it): the `parashapes` console script and a `paradiffusion.commands` entry point (`data`) name the same code.

generate  --split S --n N --resolution R --style {plain,curated} --seed S --out DIR [--format folder|webdataset]
score     --specs FILE.jsonl --images DIR [--json OUT] [--strict] [--against-shifted]
          Images are matched by id (DIR/<id>.png). Prints a JSON summary. A missing, unreadable or non-square
          (or < 16 px) image is counted as a failed scene and listed under "failures"; square images of any
          resolution are judged as they are (the judge is resolution-independent). Exit 0, or 1 with
          --strict when any image failed; 2 on an invalid spec file (every problem listed on stderr).
render    --specs FILE.jsonl --out DIR --resolution R --style S     (renders hand-written specs)
stats     [--paraprompts CSV] [--n N] [--seed S] [--json OUT]  word-length distributions of every writer
          next to ParaPrompts-400.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from .generate import DEFAULT_STYLE, SPLITS, SPLIT_WRITER, generate_split
from .render import MAX_RESOLUTION, MIN_RESOLUTION, STYLES
from .spec import SpecError, load_specs

MIN_SCORE_SIZE = 16


def _resolution(v: str) -> int:
    r = int(v)
    if not MIN_RESOLUTION <= r <= MAX_RESOLUTION:
        raise argparse.ArgumentTypeError(f"must be in {MIN_RESOLUTION}..{MAX_RESOLUTION}")
    return r


def _nonneg(v: str) -> int:
    n = int(v)
    if n < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return n


def _positive(v: str) -> int:
    n = int(v)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1 (got {n}: a split with no samples is never what is meant)")
    return n


def build_parser(prog: str = "parashapes") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="ParaShapes benchmark tools")
    sub = p.add_subparsers(dest="cmd", required=True)

    g = sub.add_parser("generate", help="generate a split to disk")
    g.add_argument("--split", required=True, choices=SPLITS)
    g.add_argument("--n", required=True, type=_positive)
    g.add_argument("--resolution", type=_resolution, default=32)
    g.add_argument("--style", choices=STYLES, default=None, help="default: curated for stage3, else plain")
    g.add_argument("--seed", type=_nonneg, default=0)
    g.add_argument("--out", required=True)
    g.add_argument("--format", choices=("folder", "webdataset"), default="folder")
    g.add_argument("--shard-size", type=int, default=1000, help="samples per tar shard (webdataset)")

    s = sub.add_parser("score", help="judge images against specs")
    s.add_argument("--specs", required=True)
    s.add_argument("--images", required=True)
    s.add_argument("--json", default=None, help="also write the summary plus per-scene verdicts here")
    s.add_argument("--strict", action="store_true", help="exit 1 if any image is missing/unreadable/bad size")
    s.add_argument("--against-shifted", action="store_true",
                   help="judge image i against spec i+1 (cyclic): what the images earn from another scene's text, "
                        "i.e. the chance level of a model that ignores its paragraphs")

    r = sub.add_parser("render", help="render (hand-written) specs to PNGs")
    r.add_argument("--specs", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--resolution", type=_resolution, default=32)
    r.add_argument("--style", choices=STYLES, default="plain")

    t = sub.add_parser("stats", help="writer length statistics vs ParaPrompts-400")
    t.add_argument("--paraprompts", default=None, help="ParaPrompts_400.csv (default: ../shared/data/...)")
    t.add_argument("--n", type=_nonneg, default=1000)
    t.add_argument("--seed", type=_nonneg, default=0)
    t.add_argument("--json", default=None)
    return p


def _generate(a: argparse.Namespace) -> int:
    from .storage import write_folder, write_webdataset

    style = a.style or DEFAULT_STYLE[a.split]
    t0 = time.perf_counter()
    specs = generate_split(a.split, a.n, seed=a.seed, style=style)
    if a.format == "folder":
        write_folder(specs, a.out, a.resolution, style)
        files = [str(Path(a.out) / "specs.jsonl")]
    else:
        files = [str(p) for p in write_webdataset(specs, a.out, a.resolution, style, a.shard_size)]
    dt = time.perf_counter() - t0
    print(json.dumps({"split": a.split, "n": a.n, "resolution": a.resolution, "style": style, "seed": a.seed,
                      "format": a.format, "out": a.out, "files": files[:10], "seconds": round(dt, 3),
                      "samples_per_s": round(a.n / dt, 1) if dt > 0 else None}))
    return 0


def _score(a: argparse.Namespace, prog: str = "parashapes") -> int:
    from PIL import Image, UnidentifiedImageError

    from .report import failed_result, summarize
    from .scorer import score_scene

    specs = load_specs(a.specs)
    images = Path(a.images)
    if not images.is_dir():
        raise SpecError(f"--images {images} is not a directory")
    # with --against-shifted, each image is judged against the next scene's spec (the image prior's chance level)
    judged = specs[1:] + specs[:1] if a.against_shifted else specs
    results = []
    for spec, truth in zip(specs, judged):
        path = images / f"{spec.id}.png"
        if not path.exists():
            results.append(failed_result(truth, "missing", f"{path} not found"))
            continue
        try:
            with Image.open(path) as im:
                im.load()
                img = im.convert("RGB")
        except (UnidentifiedImageError, OSError, ValueError) as e:
            results.append(failed_result(truth, "unreadable", f"{path}: {e}"))
            continue
        w, h = img.size
        if w != h or w < MIN_SCORE_SIZE:
            results.append(failed_result(truth, "bad_size", f"{path}: {w}x{h} (need square, >= {MIN_SCORE_SIZE} px)"))
            continue
        results.append(score_scene(img, truth))
    for r, spec in zip(results, specs):
        r["id"] = spec.id  # verdicts and failures are reported by the image's id
    summary = summarize(results, judged)
    summary["specs"], summary["images"] = str(a.specs), str(images)
    summary["against_shifted"] = bool(a.against_shifted)
    print(json.dumps(summary))
    if a.json:
        Path(a.json).write_text(json.dumps({**summary, "scenes": results}, indent=1) + "\n")
    failures = summary["failures"]["count"]
    if failures:
        print(f"{prog} score: {failures} of {len(specs)} images could not be judged "
              f"(counted as failures): " + ", ".join(f"{k}={len(summary['failures'][k])}"
                                                    for k in ("missing", "unreadable", "bad_size")),
              file=sys.stderr)
    return 1 if (a.strict and failures) else 0


def _render(a: argparse.Namespace) -> int:
    from .storage import write_folder

    specs = load_specs(a.specs)
    out = Path(a.out)
    same = out.joinpath("specs.jsonl").resolve() == Path(a.specs).resolve()
    n = write_folder(specs, out, a.resolution, a.style, specs_file=None if same else "specs.jsonl")
    print(json.dumps({"rendered": n, "out": str(out), "resolution": a.resolution, "style": a.style}))
    return 0


def default_paraprompts() -> Path | None:
    """../shared/data/paraprompts-400/ParaPrompts_400.csv next to the repo or the working directory."""
    rel = Path("shared/data/paraprompts-400/ParaPrompts_400.csv")
    for base in (Path.cwd().parent, Path(__file__).resolve().parents[2].parent):  # src/parashapes/cli.py
        if (base / rel).exists():
            return base / rel
    return None


def read_paraprompts(path: str | Path) -> list[str]:
    """The English prompts of ParaPrompts-400 (column `Prompt`)."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows or "Prompt" not in rows[0]:
        raise ValueError(f"{path}: expected a CSV with a 'Prompt' column")
    return [r["Prompt"] for r in rows if r["Prompt"].strip()]


def writer_stats(n: int = 1000, seed: int = 0, paraprompts: str | Path | None = None) -> dict[str, Any]:
    """Word-length stats and histograms per split writer (+ ParaPrompts-400) and mention buckets."""
    from .report import length_stats
    from .vocab import mention_bucket

    bins = list(range(0, 320, 20)) + [10_000]
    out: dict[str, Any] = {"bins": bins[:-1], "writers": {}}

    def hist(lengths: list[int]) -> list[int]:
        return [sum(lo <= x < hi for x in lengths) for lo, hi in zip(bins[:-1], bins[1:])]

    for split in ("stage1", "stage3", "stage2", "heldout"):
        specs = generate_split(split, n, seed=seed)
        lengths = [len(s.paragraph.split()) for s in specs]
        words = [w for s in specs for w in s.mention_words()]
        known = [w for w in words if w is not None]
        out["writers"][SPLIT_WRITER[split]] = {
            "split": split, **length_stats(lengths), "histogram": hist(lengths),
            "mentions": {b: round(sum(mention_bucket(w) == b for w in known) / max(1, len(known)), 4)
                         for b in ("0-76", "77-255", "256+")},
            "unmentioned_objects": len(words) - len(known),
        }
    path = paraprompts or default_paraprompts()
    if path is not None:
        lengths = [len(p.split()) for p in read_paraprompts(path)]
        out["writers"]["ParaPrompts-400"] = {"split": str(path), **length_stats(lengths), "histogram": hist(lengths)}
    return out


def format_stats(st: dict[str, Any]) -> str:
    """Text table: one row per writer, then histograms side by side."""
    names = list(st["writers"])
    lines = [f"{'writer':<16}{'n':>6}{'min':>6}{'p10':>7}{'median':>8}{'mean':>8}{'p90':>7}{'max':>6}  mentions 0-76/77-255/256+"]
    for name in names:
        w = st["writers"][name]
        m = w.get("mentions")
        ms = f"  {m['0-76']:.2f}/{m['77-255']:.2f}/{m['256+']:.3f}" if m else ""
        lines.append(f"{name:<16}{w['n']:>6}{w['min']:>6.0f}{w['p10']:>7.0f}{w['median']:>8.0f}{w['mean']:>8.1f}"
                     f"{w['p90']:>7.0f}{w['max']:>6.0f}{ms}")
    lines.append("")
    lines.append("words     " + "".join(f"{n[:14]:>16}" for n in names) + "   (% of texts)")
    for i, lo in enumerate(st["bins"]):
        label = f"{lo}-{lo + 19}" if i < len(st["bins"]) - 1 else f"{lo}+"
        row = []
        for n in names:
            h = st["writers"][n]["histogram"]
            row.append(f"{100.0 * h[i] / max(1, sum(h)):>15.1f}%")
        lines.append(f"{label:<10}" + "".join(row))
    return "\n".join(lines)


def _stats(a: argparse.Namespace) -> int:
    st = writer_stats(a.n, a.seed, a.paraprompts)
    print(format_stats(st))
    if a.json:
        Path(a.json).write_text(json.dumps(st, indent=1) + "\n")
    return 0


def main(argv: Sequence[str] | None = None, prog: str = "parashapes") -> int:
    """Entry point of `parashapes ...` (the console script). Returns the exit code."""
    args = build_parser(prog).parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        if args.cmd == "score":
            return _score(args, prog)
        return {"generate": _generate, "render": _render, "stats": _stats}[args.cmd](args)
    except SpecError as e:
        print(f"{prog} {args.cmd}: invalid input:\n{e}", file=sys.stderr)
        return 2
    except (FileNotFoundError, IsADirectoryError, PermissionError) as e:
        print(f"{prog} {args.cmd}: {e}", file=sys.stderr)
        return 2


def paradiffusion_data(argv: Sequence[str]) -> int:
    """`paradiffusion data ...` (the `paradiffusion.commands` entry point `data`): the same tools."""
    return main(argv, prog="paradiffusion data")


if __name__ == "__main__":
    sys.exit(main())
