"""Reproduce every ParaShapes figure of docs/parashapes.md.

    python scripts/parashapes_figures.py [--n-calib 300] [--out docs/img]

Writes docs/img/parashapes_grid.png, docs/img/parashapes_lengths.png and prints the Markdown tables
(samples with their paragraphs, lengths, calibration, confusion, speed) to stdout.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from itertools import islice
from pathlib import Path

import numpy as np
from PIL import Image

from parashapes import ParaShapesIterable, generate_split, render
from parashapes.cli import format_stats, writer_stats
from parashapes.metric import CONFUSION_LABELS, confusion_update
from parashapes.perturb import MILD_BLUR_SIGMA, MILD_NOISE_STD, degrade, pure_noise
from parashapes.scorer import score_scene


def picture_grid(out: Path) -> str:
    """Six samples (stage2 plain, stage3 curated) at 128 px with their texts, as PNG + Markdown."""
    rows = [("stage2", "plain"), ("stage3", "curated"), ("heldout", "plain")]
    tiles, md = [], ["| # | split / style | text |", "|---|---|---|"]
    k = 0
    for split, style in rows:
        for s in generate_split(split, 2, seed=0):
            tiles.append(render(s, 128, style))
            k += 1
            md.append(f"| {k} | {split} / {style} | {s.paragraph} |")
    pad = lambda a: np.pad(a, ((4, 4), (4, 4), (0, 0)), constant_values=60)  # noqa: E731
    grid = np.concatenate([np.concatenate([pad(t) for t in tiles[i:i + 6]], 1) for i in range(0, len(tiles), 6)], 0)
    Image.fromarray(grid).save(out / "parashapes_grid.png")
    for s in generate_split("stage1", 3, seed=0):
        md.append(f"| - | stage1 caption | {s.paragraph} |")
    return "\n".join(md)


def length_figure(out: Path, st: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.2), dpi=110)
    bins = st["bins"] + [320]
    centers = np.array(bins[:-1]) + 10
    names = [n for n in ("caption", "curated", "paragraph", "heldout", "ParaPrompts-400") if n in st["writers"]]
    width = 20 / (len(names) + 0.5)
    for i, n in enumerate(names):
        h = np.array(st["writers"][n]["histogram"], float)
        ax.bar(centers - 10 + width * (i + 0.5), 100 * h / h.sum(), width=width, label=n)
    ax.set_xlabel("words per text")
    ax.set_ylabel("% of texts")
    ax.legend(fontsize=8)
    ax.set_title("ParaShapes writers vs ParaPrompts-400 (real long prompts)")
    fig.tight_layout()
    fig.savefig(out / "parashapes_lengths.png")


def calibration(n: int) -> tuple[str, str]:
    specs = generate_split("test", n // 2, seed=0) + generate_split("heldout", n // 2, seed=0)
    md = [f"| resolution | style | scene-exact (clean) | scene-exact (mild blur {MILD_BLUR_SIGMA} px + noise "
          f"{MILD_NOISE_STD}) | object-exact (mild) | scenes/s judged |", "|---|---|---|---|---|---|"]
    conf = {k: np.zeros((len(r), len(c)), np.int64) for k, (r, c) in CONFUSION_LABELS.items()}
    for res in (32, 64, 128, 256):
        for style in ("plain", "curated"):
            rng = np.random.default_rng(res)
            t0 = time.perf_counter()
            clean = [score_scene(render(s, res, style), s) for s in specs]
            dt = time.perf_counter() - t0
            mild = [score_scene(degrade(render(s, res, style), rng), s) for s in specs]
            if res == 32:
                for r, s in zip(mild, specs):
                    confusion_update(conf, {**r, "truth_background": s.background})
            obj = np.mean([o["exact"] for r in mild for o in r["objects"]])
            md.append(f"| {res} | {style} | {np.mean([r['scene_exact'] for r in clean]):.4f} | "
                      f"{np.mean([r['scene_exact'] for r in mild]):.4f} | {obj:.4f} | {len(specs) / dt:.0f} |")
    rng = np.random.default_rng(0)
    noise = [score_scene(pure_noise(32, rng), s) for s in specs[:200]]
    blank = [score_scene(np.full((32, 32, 3), 255, np.uint8), s) for s in specs[:200]]
    pres = lambda rs: np.mean([o["present"] for r in rs for o in r["objects"]])  # noqa: E731
    md.append("")
    md.append(f"Pure uniform noise (32 px, 200 scenes): presence {pres(noise):.4f}, extra objects/scene "
              f"{np.mean([r['extra_objects'] for r in noise]):.3f}. Blank white: presence {pres(blank):.4f}.")
    cm = []
    for name in ("shape", "size", "position", "color", "background"):
        rows, cols = CONFUSION_LABELS[name]
        cm.append(f"\n**{name}** (rows truth, columns prediction; 32 px, both styles, mild blur+noise)\n")
        cm.append("| | " + " | ".join(cols) + " |")
        cm.append("|---" * (len(cols) + 1) + "|")
        for i, r in enumerate(rows):
            cm.append(f"| {r} | " + " | ".join(str(v) for v in conf[name][i]) + " |")
    return "\n".join(md), "\n".join(cm)


def speed() -> str:
    n = 3000
    t0 = time.perf_counter()
    specs = generate_split("stage2", n, seed=0)
    t_text = time.perf_counter() - t0
    t0 = time.perf_counter()
    for s in specs:
        render(s, 32, "plain")
    t_plain = time.perf_counter() - t0
    t0 = time.perf_counter()
    for s in specs:
        render(s, 32, "curated")
    t_cur = time.perf_counter() - t0
    t0 = time.perf_counter()
    list(islice(iter(ParaShapesIterable("stage2", 32, seed=0)), n))
    t_it = time.perf_counter() - t0
    t0 = time.perf_counter()
    list(islice(iter(ParaShapesIterable("stage1", 32, seed=0)), n))
    t_it1 = time.perf_counter() - t0
    lines = ["| what (one process, 32 px) | samples/s |", "|---|---|",
             f"| stage2 paragraph specs (text only) | {n / t_text:.0f} |",
             f"| render plain | {n / t_plain:.0f} |", f"| render curated | {n / t_cur:.0f} |",
             f"| `ParaShapesIterable('stage2')` items (spec + text + tensor) | {n / t_it:.0f} |",
             f"| `ParaShapesIterable('stage1')` items | {n / t_it1:.0f} |"]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-calib", type=int, default=300)
    ap.add_argument("--out", default="docs/img")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"<!-- {os.cpu_count()} CPUs -->")
    print("## grid\n" + picture_grid(out))
    st = writer_stats(n=1000, seed=0)
    length_figure(out, st)
    print("\n## lengths\n```\n" + format_stats(st) + "\n```")
    print("\n## speed\n" + speed())
    cal, cm = calibration(a.n_calib)
    print("\n## calibration\n" + cal + "\n" + cm)
    (out / "parashapes_lengths.json").write_text(json.dumps(st, indent=1) + "\n")


if __name__ == "__main__":
    main()
