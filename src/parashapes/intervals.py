"""Bootstrap confidence intervals for the judge's scores: a claim is a comparison with an interval.

Scenes are the unit that is resampled (objects of one scene are not independent draws), and every pooled score is
recomputed on each resample exactly as `ParaShapesScore.compute` pools it (object scores: sums over objects of the
resampled scenes; scene scores: means over scenes).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from .metric import HEADLINE, OBJECT_KEYS
from .scorer import score_scene
from .spec import SceneSpec, as_spec

SCENE_KEYS = ("scene_exact", "background", "extra_objects")
#: per-scene columns: objects, then the object sums in OBJECT_KEYS order, then the scene verdicts
COLUMNS = ("objects", *OBJECT_KEYS, *SCENE_KEYS)


def scene_table(images: Any, specs: Sequence[SceneSpec | Mapping[str, Any]]) -> np.ndarray:
    """One row per scene (`COLUMNS`): images `(B, 3, H, W)` in [0, 1] (tensor or array) against their specs."""
    arr = np.asarray(images.detach().float().clamp(0, 1).cpu().numpy() if hasattr(images, "detach") else images)
    arr = (arr.transpose(0, 2, 3, 1) * 255.0 + 0.5).astype(np.uint8)  # (B, H, W, 3)
    rows = []
    for img, spec in zip(arr, specs):
        r = score_scene(img, as_spec(spec))
        objs = r["objects"]
        sums = [sum(float(o["present" if k == "presence" else "exact" if k == "object_exact" else k]) for o in objs)
                for k in OBJECT_KEYS]
        rows.append([len(objs), *sums, float(r["scene_exact"]), float(r["background"]), float(r["extra_objects"])])
    return np.asarray(rows, dtype=np.float64)  # (N, len(COLUMNS))


def pooled(table: np.ndarray) -> dict[str, float]:
    """The pooled scores of a scene table (as `ParaShapesScore.compute` reports them)."""
    out = {k: float(table[:, 1 + j].sum() / max(1.0, table[:, 0].sum())) for j, k in enumerate(OBJECT_KEYS)}
    out.update({k: float(table[:, 1 + len(OBJECT_KEYS) + j].mean()) for j, k in enumerate(SCENE_KEYS)})
    return out


def bootstrap_ci(table: np.ndarray, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> dict[str, list[float]]:
    """Percentile bootstrap interval of every pooled score, resampling scenes with replacement."""
    rng = np.random.default_rng(seed)
    n = table.shape[0]
    idx = rng.integers(0, n, size=(n_boot, n))  # (n_boot, N)
    sums = table[idx].sum(axis=1)  # (n_boot, C)
    lo_q, hi_q = (1 - level) / 2, 1 - (1 - level) / 2
    out = {}
    for j, k in enumerate(OBJECT_KEYS):
        vals = sums[:, 1 + j] / np.maximum(1.0, sums[:, 0])
        out[k] = [float(np.quantile(vals, lo_q)), float(np.quantile(vals, hi_q))]
    for j, k in enumerate(SCENE_KEYS):
        vals = sums[:, 1 + len(OBJECT_KEYS) + j] / n
        out[k] = [float(np.quantile(vals, lo_q)), float(np.quantile(vals, hi_q))]
    return out


def scores_with_intervals(images: Any, specs: Sequence[SceneSpec | Mapping[str, Any]], n_boot: int = 2000,
                          seed: int = 0) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Pooled scores, `chance/<score>` (the same images judged against the next scene's spec: what they earn
    without following their own paragraph) and bootstrap intervals of both."""
    own = scene_table(images, specs)
    shifted = list(specs[1:]) + list(specs[:1])
    chance = scene_table(images, shifted)
    scores = pooled(own)
    scores.update({f"chance/{k}": v for k, v in pooled(chance).items()})
    ci = bootstrap_ci(own, n_boot, seed=seed)
    ci.update({f"chance/{k}": v for k, v in bootstrap_ci(chance, n_boot, seed=seed).items()})
    return scores, ci



def evaluate_with_intervals(pipeline: Any, split: str, n: int, out_dir: Any = None, settings: Any = None,
                            seed: int = 0) -> dict[str, Any]:
    """Sample `n` paragraphs of a ParaShapes split with `pipeline` and score them:
    `{"scores": {...,"chance/...", "by_mention/..."}, "ci": {score: [lo, hi], ...}}`; writes images, a grid, the
    specs and the row to `out_dir` when given."""
    import json
    from pathlib import Path

    from paradiffusion.evaluate import SamplingSettings, make_grid, sample, save_images, to_pil

    from .evaluate import score
    from .generate import generate_split

    specs = generate_split(split, n, seed=seed)
    images = sample(pipeline, [s.paragraph for s in specs], settings or SamplingSettings(), seed=seed)
    scores, ci = scores_with_intervals(images, specs, seed=seed)
    scores.update({k: v for k, v in score(images, specs).items() if k.startswith("by_mention/")})
    row = {"scores": scores, "ci": ci, "n": n}
    if out_dir is not None:
        out = Path(out_dir)
        save_images(images, [s.id for s in specs], out / "images")
        to_pil(make_grid(images[:64])).save(out / "grid.png")
        (out / "specs.jsonl").write_text("".join(json.dumps(s.to_dict()) + "\n" for s in specs))
        (out / "scores.json").write_text(json.dumps(row, indent=2, sort_keys=True) + "\n")
    return row


def format_table(rows: Sequence[Mapping[str, Any]], keys: Sequence[str] = ("object_exact", "scene_exact", "presence",
                                                                             "background")) -> str:
    """Rows of `{stage, split, scores, ci}` as a text table: value [lo, hi] per score, a chance line under each."""
    head = f"{'stage':<10} {'split':<8} " + " ".join(f"{k:>22}" for k in keys)
    lines = [head, "-" * len(head)]
    for r in rows:
        cells = [f"{r['scores'][k]:.3f} [{r['ci'][k][0]:.3f}, {r['ci'][k][1]:.3f}]" for k in keys]
        lines.append(f"{r['stage']:<10} {r['split']:<8} " + " ".join(f"{c:>22}" for c in cells))
        cells = [f"{r['scores']['chance/' + k]:.3f} [{r['ci']['chance/' + k][0]:.3f}, {r['ci']['chance/' + k][1]:.3f}]"
                 for k in keys]
        lines.append(f"{'  chance':<10} {'':<8} " + " ".join(f"{c:>22}" for c in cells))
    return "\n".join(lines)
