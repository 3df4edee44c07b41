"""ParaShapes: a paragraph-to-image benchmark with an automatic faithfulness judge (issue 2).

A package of its own, above the `paradiffusion` library: it may use paradiffusion's public API (sampling, the data
protocol, the CLI's plugin hooks), the library never imports it. Configs wire it in by class path (its datasets as
`data.init_args.*_data`, its callbacks under `trainer.callbacks`).

Public API (see docs/ARCHITECTURE.md and docs/parashapes.md):
    vocab      SHAPES, COLORS, BACKGROUNDS, SIZES, POSITIONS
    spec       ObjectSpec, SceneSpec, SpecError, load_specs, save_specs
    generate   generate_split, generate_one, SPLITS
    render     render, render_tensor
    dataset    ParaShapesIterable, ParaShapesDataset, ParaShapesFolder
    scorer     score_scene, analyze_image, ParaShapesScore
    storage    write_folder, write_webdataset, iter_webdataset, read_folder
    evaluate   score, score_with_chance, evaluate_split, text_dependence (a model against the judge)
    callbacks  SampleAndScore (validation), TestScore (`test`)
    lm         ParaShapesText (stage-0 language-model text)
    cli        `parashapes generate|score|render|stats` (also `paradiffusion data ...`)
Torch-heavy names are imported lazily so `import parashapes` stays cheap.
"""
from __future__ import annotations

from importlib import import_module
from typing import Any

from .generate import SPLITS, generate_one, generate_split
from .render import STYLES, render, render_tensor
from .spec import ObjectSpec, SceneSpec, SpecError, load_specs, save_specs
from .vocab import BACKGROUNDS, COLORS, POSITIONS, SHAPES, SIZES

_LAZY = {
    "ParaShapesIterable": "dataset", "ParaShapesDataset": "dataset", "ParaShapesFolder": "dataset",
    "ParaShapesScore": "metric", "score_scene": "scorer", "analyze_image": "scorer",
    "write_folder": "storage", "write_webdataset": "storage", "iter_webdataset": "storage",
    "read_folder": "storage",
}

__all__ = [
    "SHAPES", "COLORS", "BACKGROUNDS", "SIZES", "POSITIONS", "STYLES", "SPLITS",
    "ObjectSpec", "SceneSpec", "SpecError", "load_specs", "save_specs",
    "generate_split", "generate_one", "render", "render_tensor", *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
