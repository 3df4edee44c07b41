"""Aggregate per-scene judge results into the JSON summary the `data score` CLI prints.

Same definitions as `ParaShapesScore.compute()`; additionally a scene whose image is missing, unreadable or
of an unusable size counts as a failure (scene not exact, every object absent) and is listed by id.
"""
from __future__ import annotations

import math
from typing import Any, Iterable

import numpy as np

from .metric import BUCKETS, CONFUSION_LABELS, OBJECT_KEYS, confusion_update
from .spec import SceneSpec
from .vocab import mention_bucket

FAILURE_KINDS = ("missing", "unreadable", "bad_size")
_RESULT_KEY = {"presence": "present", "object_exact": "exact"}  # summary key -> per-object result key


def failed_result(spec: SceneSpec, kind: str, error: str = "") -> dict[str, Any]:
    """The verdict for a scene whose image could not be judged: everything wrong."""
    objects = [{"color": o.color, "bucket": mention_bucket(w), "present": False, "position": False,
                "size": False, "shape": False, "exact": False, "pred": None,
                "truth": {"position": o.position, "size": o.size, "shape": o.shape}, "color_at_cell": None}
               for o, w in zip(spec.objects, spec.mention_words())]
    return {"id": spec.id, "scene_exact": False, "background": False, "background_pred": None,
            "object_exact": 0.0, "extra_objects": 0, "objects": objects, "extras": [],
            "failure": kind, "error": error}


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def summarize(results: Iterable[dict[str, Any]], specs: Iterable[SceneSpec]) -> dict[str, Any]:
    """JSON-ready summary: headline accuracies, by_mention buckets, failures and confusion matrices."""
    results, specs = list(results), list(specs)
    n = len(results)
    n_obj = 0
    totals = dict.fromkeys(OBJECT_KEYS, 0)
    buckets = {b: dict.fromkeys(("count",) + OBJECT_KEYS, 0) for b in BUCKETS}
    conf = {k: np.zeros((len(r), len(c)), np.int64) for k, (r, c) in CONFUSION_LABELS.items()}
    failures: dict[str, list[Any]] = {k: [] for k in FAILURE_KINDS}
    for r, s in zip(results, specs):
        if r.get("failure"):
            failures[r["failure"]].append({"id": r["id"], "error": r["error"]} if r["error"] else r["id"])
        else:
            confusion_update(conf, {**r, "truth_background": s.background})
        for o in r["objects"]:
            n_obj += 1
            b = buckets[o["bucket"]]
            b["count"] += 1
            for key in OBJECT_KEYS:
                val = bool(o[_RESULT_KEY.get(key, key)])
                totals[key] += val
                b[key] += val
    summary: dict[str, Any] = {
        "num_scenes": n, "num_objects": n_obj,
        "scene_exact": _ratio(sum(r["scene_exact"] for r in results), n),
        **{k: _ratio(v, n_obj) for k, v in totals.items()},
        "background": _ratio(sum(r["background"] for r in results), n),
        "extra_objects": _ratio(sum(r["extra_objects"] for r in results), n),
        "by_mention": {b: {"count": v["count"], **{k: _ratio(v[k], v["count"]) for k in OBJECT_KEYS}}
                       for b, v in buckets.items()},
        "failures": {"count": sum(len(v) for v in failures.values()), **failures},
        "confusion": {k: {"rows": list(CONFUSION_LABELS[k][0]), "cols": list(CONFUSION_LABELS[k][1]),
                          "matrix": m.tolist()} for k, m in conf.items()},
    }
    return summary


def length_stats(lengths: Iterable[int]) -> dict[str, float]:
    """min / p10 / median / mean / p90 / max of word counts."""
    a = np.asarray(list(lengths), dtype=np.float64)
    if a.size == 0:
        return {k: math.nan for k in ("n", "min", "p10", "median", "mean", "p90", "max")}
    return {"n": int(a.size), "min": float(a.min()), "p10": float(np.percentile(a, 10)),
            "median": float(np.median(a)), "mean": round(float(a.mean()), 1),
            "p90": float(np.percentile(a, 90)), "max": float(a.max())}
