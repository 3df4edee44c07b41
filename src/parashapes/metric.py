"""`ParaShapesScore`: the judge as a torchmetrics Metric, so training can log faithfulness.

compute() keys (all scalar tensors):
  scene_exact, object_exact, presence, position, size, shape, background, extra_objects (mean per scene),
  num_scenes, num_objects, and for each first-mention bucket b in {0-76, 77-255, 256+, unmentioned}:
  by_mention/<b>/{presence, position, size, shape, object_exact, count} (NaN when the bucket is empty).
Attribute accuracies are over all spec objects (an absent object counts as wrong).
`confusion()` returns the attribute confusion matrices (rows = truth, columns = prediction, last
column = not detected).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torchmetrics import Metric

from .scorer import score_scene
from .spec import SceneSpec, as_spec
from .vocab import BACKGROUNDS, COLORS, POSITIONS, SHAPES, SIZES

BUCKETS: tuple[str, ...] = ("0-76", "77-255", "256+", "unmentioned")
OBJECT_KEYS: tuple[str, ...] = ("presence", "position", "size", "shape", "object_exact")
#: the scores results tables, logs and the demo show, in order (the one list)
HEADLINE: tuple[str, ...] = ("object_exact", "scene_exact", "presence", "position", "size", "shape", "background",
                             "extra_objects")
#: attribute -> (row labels, column labels); the extra column counts objects that were not detected
CONFUSION_LABELS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "background": (tuple(BACKGROUNDS), tuple(BACKGROUNDS)),
    "position": (POSITIONS, POSITIONS + ("missing",)),
    "size": (SIZES, SIZES + ("missing",)),
    "shape": (SHAPES, SHAPES + ("missing",)),
    "color": (tuple(COLORS), tuple(COLORS) + ("none",)),  # color of the heaviest blob in the object's cell
}


def confusion_update(conf: Mapping[str, Any], result: Mapping[str, Any]) -> None:
    """Add one `score_scene` result into confusion matrices (numpy or torch, indexed [truth, pred])."""
    bl = CONFUSION_LABELS["background"][0]
    conf["background"][bl.index(result["truth_background"]), bl.index(result["background_pred"])] += 1
    for o in result["objects"]:
        for attr in ("position", "size", "shape"):
            rows, cols = CONFUSION_LABELS[attr]
            pred = o["pred"][attr] if o["pred"] else cols[-1]
            conf[attr][rows.index(o["truth"][attr]), cols.index(pred)] += 1
        rows, cols = CONFUSION_LABELS["color"]
        conf["color"][rows.index(o["color"]), cols.index(o["color_at_cell"] or "none")] += 1


class ParaShapesScore(Metric):
    """Accumulates judge verdicts over batches; distributed-safe (all states are summed)."""

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # scene counters: scenes, scene_exact, background, extra_objects
        self.add_state("scenes", default=torch.zeros(4, dtype=torch.float64), dist_reduce_fx="sum")
        # per bucket (+ "all" as the last row): count, presence, position, size, shape, object_exact
        self.add_state("objects", default=torch.zeros(len(BUCKETS) + 1, 1 + len(OBJECT_KEYS),
                                                      dtype=torch.float64), dist_reduce_fx="sum")
        for name, (rows, cols) in CONFUSION_LABELS.items():
            self.add_state(f"conf_{name}", default=torch.zeros(len(rows), len(cols), dtype=torch.long),
                           dist_reduce_fx="sum")

    def update(self, images: torch.Tensor, specs: Sequence[SceneSpec | Mapping[str, Any]]) -> None:
        """images: (B, 3, H, W) in [0, 1]; specs: B spec dicts or SceneSpecs, same order."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
        if len(specs) != images.shape[0]:
            raise ValueError(f"{images.shape[0]} images but {len(specs)} specs")
        arr = (images.detach().float().clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy() * 255.0 + 0.5)
        arr = arr.astype(np.uint8)  # (B, H, W, 3)
        conf = {name: np.zeros(tuple(getattr(self, f"conf_{name}").shape), np.int64) for name in CONFUSION_LABELS}
        scenes = np.zeros(4)
        objects = np.zeros(tuple(self.objects.shape))
        for img, spec in zip(arr, specs):
            spec = as_spec(spec)
            r = score_scene(img, spec)
            r["truth_background"] = spec.background
            scenes += (1, r["scene_exact"], r["background"], r["extra_objects"])
            for o in r["objects"]:
                row = [1.0, o["present"], o["position"], o["size"], o["shape"], o["exact"]]
                objects[BUCKETS.index(o["bucket"])] += row
                objects[-1] += row
            confusion_update(conf, r)
        self.scenes += torch.from_numpy(scenes).to(self.scenes)
        self.objects += torch.from_numpy(objects).to(self.objects)
        for name, m in conf.items():
            state = getattr(self, f"conf_{name}")
            state += torch.from_numpy(m).to(state)

    def compute(self) -> dict[str, torch.Tensor]:
        n_sc = self.scenes[0]
        out: dict[str, torch.Tensor] = {
            "scene_exact": self.scenes[1] / n_sc, "background": self.scenes[2] / n_sc,
            "extra_objects": self.scenes[3] / n_sc, "num_scenes": n_sc, "num_objects": self.objects[-1, 0],
        }
        allrow = self.objects[-1]
        for j, key in enumerate(OBJECT_KEYS, start=1):
            out[key] = allrow[j] / allrow[0]
        for b, name in enumerate(BUCKETS):
            row = self.objects[b]
            out[f"by_mention/{name}/count"] = row[0]
            for j, key in enumerate(OBJECT_KEYS, start=1):
                out[f"by_mention/{name}/{key}"] = row[j] / row[0] if row[0] > 0 else torch.tensor(
                    float("nan"), dtype=row.dtype, device=row.device)
        return {k: v.float() for k, v in out.items()}

    def confusion(self) -> dict[str, dict[str, Any]]:
        """{attribute: {"rows": truth labels, "cols": predicted labels, "matrix": LongTensor}}."""
        return {name: {"rows": list(rows), "cols": list(cols), "matrix": getattr(self, f"conf_{name}").clone()}
                for name, (rows, cols) in CONFUSION_LABELS.items()}
