"""ParaShapes: a paragraph-to-image benchmark with an automatic faithfulness judge (issue 2).

Public API (see docs/ARCHITECTURE.md and docs/parashapes.md):
    vocab      SHAPES, COLORS, BACKGROUNDS, SIZES, POSITIONS
    spec       ObjectSpec, SceneSpec, SpecError, load_specs, save_specs
    generate   generate_split, generate_one, SPLITS
    render     render, render_tensor
    dataset    ParaShapesIterable, ParaShapesDataset
    scorer     score_scene, analyze_image, ParaShapesScore
    storage    write_folder, write_webdataset, iter_webdataset, read_folder
Torch-heavy names are imported lazily so `import paradiffusion.parashapes` stays cheap.
"""
from __future__ import annotations

from importlib import import_module
from typing import Any

from .generate import SPLITS, generate_one, generate_split
from .render import STYLES, render, render_tensor
from .spec import ObjectSpec, SceneSpec, SpecError, load_specs, save_specs
from .vocab import BACKGROUNDS, COLORS, POSITIONS, SHAPES, SIZES

_LAZY = {
    "ParaShapesIterable": "dataset", "ParaShapesDataset": "dataset",
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
