"""The ParaShapes spec record: one JSON object per line (the public file format).

    {"id": "...", "paragraph": "...", "background": "white",
     "objects": [{"shape": "circle", "color": "red", "size": "large", "position": "top-left"}]}

Extra keys (on the record and on each object) are allowed and preserved verbatim, e.g. `mentions`
(where each object is first mentioned). Spec files may be written by hand, so validation is strict and
every error names the file, the line and the field.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from .vocab import BACKGROUNDS, COLORS, MAX_OBJECTS, MIN_OBJECTS, POSITIONS, SHAPES, SIZES

#: ids become file names (`DIR/<id>.png`), so they must be safe, portable names.
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")

_OBJECT_FIELDS: dict[str, tuple[str, ...]] = {
    "shape": SHAPES,
    "color": tuple(COLORS),
    "size": SIZES,
    "position": POSITIONS,
}


class SpecError(ValueError):
    """Invalid spec input. `where` is "file:line" (or whatever the caller passed), `field` the JSON field.

    When several problems were found (see `load_specs`), `errors` lists every message; `str(err)` shows all.
    """

    def __init__(self, message: str, where: str = "", field: str = "", errors: list[str] | None = None):
        self.where = where
        self.field = field
        self.message = message
        self.errors = errors if errors is not None else [self._format(where, field, message)]
        super().__init__("\n".join(self.errors))

    @staticmethod
    def _format(where: str, field: str, message: str) -> str:
        loc = where or "<spec>"
        return f"{loc}: field '{field}': {message}" if field else f"{loc}: {message}"


def _require(d: Mapping[str, Any], key: str, where: str, prefix: str = "") -> Any:
    if key not in d:
        raise SpecError("missing required field", where, prefix + key)
    return d[key]


def _check_vocab(value: Any, allowed: tuple[str, ...], where: str, field: str) -> str:
    if not isinstance(value, str):
        raise SpecError(f"expected a string, got {type(value).__name__} {value!r}", where, field)
    if value not in allowed:
        raise SpecError(f"unknown value {value!r}; allowed: {', '.join(allowed)}", where, field)
    return value


@dataclass(frozen=True)
class ObjectSpec:
    """One object: a shape of one color and size in one of the 3x3 cells."""

    shape: str
    color: str
    size: str
    position: str
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def from_dict(cls, d: Any, where: str = "", prefix: str = "") -> "ObjectSpec":
        if not isinstance(d, Mapping):
            raise SpecError(f"expected a JSON object, got {type(d).__name__}", where, prefix.rstrip("."))
        values = {k: _check_vocab(_require(d, k, where, prefix), allowed, where, prefix + k)
                  for k, allowed in _OBJECT_FIELDS.items()}
        extra = {k: v for k, v in d.items() if k not in _OBJECT_FIELDS}
        return cls(**values, extra=extra)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"shape": self.shape, "color": self.color, "size": self.size, "position": self.position}
        d.update(self.extra)
        return d


@dataclass
class SceneSpec:
    """One scene: background, 1-4 objects (distinct colors, distinct positions) and its text."""

    id: str
    paragraph: str
    background: str
    objects: list[ObjectSpec]
    extra: dict[str, Any] = field(default_factory=dict)

    _CORE = ("id", "paragraph", "background", "objects")

    @classmethod
    def from_dict(cls, d: Any, where: str = "") -> "SceneSpec":
        """Validate and build. Raises `SpecError` naming `where` (e.g. "specs.jsonl:12") and the field."""
        if isinstance(d, SceneSpec):
            return d
        if not isinstance(d, Mapping):
            raise SpecError(f"expected a JSON object, got {type(d).__name__}", where)
        sid = _require(d, "id", where)
        if not isinstance(sid, str) or not ID_PATTERN.match(sid):
            raise SpecError(f"invalid id {sid!r}: must match {ID_PATTERN.pattern} (it becomes a file name)",
                            where, "id")
        paragraph = _require(d, "paragraph", where)
        if not isinstance(paragraph, str):
            raise SpecError(f"expected a string, got {type(paragraph).__name__}", where, "paragraph")
        background = _check_vocab(_require(d, "background", where), tuple(BACKGROUNDS), where, "background")
        raw_objects = _require(d, "objects", where)
        if not isinstance(raw_objects, list):
            raise SpecError(f"expected a list, got {type(raw_objects).__name__}", where, "objects")
        if not MIN_OBJECTS <= len(raw_objects) <= MAX_OBJECTS:
            raise SpecError(f"a scene has {MIN_OBJECTS} to {MAX_OBJECTS} objects, got {len(raw_objects)}",
                            where, "objects")
        objects = [ObjectSpec.from_dict(o, where, f"objects[{i}].") for i, o in enumerate(raw_objects)]
        seen_pos: dict[str, int] = {}
        seen_col: dict[str, int] = {}
        for i, o in enumerate(objects):
            if o.position in seen_pos:
                raise SpecError(f"overlapping position {o.position!r}: objects[{seen_pos[o.position]}] "
                                "is already there", where, f"objects[{i}].position")
            if o.color in seen_col:
                raise SpecError(f"duplicate color {o.color!r}: objects[{seen_col[o.color]}] already has it "
                                "(colors must be distinct)", where, f"objects[{i}].color")
            seen_pos[o.position] = i
            seen_col[o.color] = i
        extra = {k: v for k, v in d.items() if k not in cls._CORE}
        if "mentions" in extra:
            _check_mentions(extra["mentions"], len(objects), where)
        return cls(id=sid, paragraph=paragraph, background=background, objects=objects, extra=dict(extra))

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"id": self.id, "paragraph": self.paragraph, "background": self.background,
                             "objects": [o.to_dict() for o in self.objects]}
        d.update(self.extra)
        return d

    def to_json(self) -> str:
        """One canonical JSONL line (no trailing newline); stable key order, so output is byte-reproducible."""
        return json.dumps(self.to_dict(), ensure_ascii=False, separators=(", ", ": "))

    def mention_words(self) -> list[int | None]:
        """First-mention word index per object (None when unknown or unmentioned)."""
        mentions = self.extra.get("mentions")
        if not isinstance(mentions, list) or len(mentions) != len(self.objects):
            return [None] * len(self.objects)
        return [m.get("word") if isinstance(m, dict) else None for m in mentions]


def _check_mentions(mentions: Any, n_objects: int, where: str) -> None:
    """`mentions` is optional; when present it must align with `objects` (null = not mentioned)."""
    if not isinstance(mentions, list) or len(mentions) != n_objects:
        raise SpecError(f"expected a list with one entry per object ({n_objects})", where, "mentions")
    for i, m in enumerate(mentions):
        if m is None:
            continue
        if not isinstance(m, dict):
            raise SpecError("expected null or an object like {\"char\": 12, \"word\": 3}", where, f"mentions[{i}]")
        for k in ("char", "word"):
            if k in m and (not isinstance(m[k], int) or isinstance(m[k], bool) or m[k] < 0):
                raise SpecError(f"expected a non-negative integer, got {m[k]!r}", where, f"mentions[{i}].{k}")


def parse_spec_lines(lines: Iterable[str], source: str = "<specs>") -> tuple[list[SceneSpec], list[SpecError]]:
    """Parse JSONL text, collecting every error (malformed JSON, bad fields, duplicate ids) instead of stopping."""
    specs: list[SceneSpec] = []
    errors: list[SpecError] = []
    first_line: dict[str, int] = {}
    for lineno, line in enumerate(lines, start=1):
        where = f"{source}:{lineno}"
        if not line.strip():
            continue  # blank lines are allowed (hand-written files)
        try:
            d = json.loads(line)
        except json.JSONDecodeError as e:
            errors.append(SpecError(f"malformed JSON: {e.msg} (column {e.colno})", where))
            continue
        try:
            spec = SceneSpec.from_dict(d, where)
        except SpecError as e:
            errors.append(e)
            continue
        if spec.id in first_line:
            errors.append(SpecError(f"duplicate id {spec.id!r} (first seen on line {first_line[spec.id]})",
                                    where, "id"))
            continue
        first_line[spec.id] = lineno
        specs.append(spec)
    return specs, errors


def load_specs(path: str | os.PathLike[str]) -> list[SceneSpec]:
    """Read a `.jsonl` spec file. Raises one `SpecError` listing *every* problem found, each with file:line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise SpecError(f"not UTF-8 text: {e}", str(path)) from e
    specs, errors = parse_spec_lines(text.splitlines(), str(path))
    if errors:
        first = errors[0]
        msgs = [m for e in errors for m in e.errors]
        raise SpecError(first.message, first.where, first.field, errors=msgs)
    return specs


def save_specs(specs: Iterable[SceneSpec], path: str | os.PathLike[str]) -> None:
    """Write specs as JSONL (UTF-8, '\\n' line endings: byte-identical across platforms)."""
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for s in specs:
            f.write(s.to_json() + "\n")


def as_spec(s: "SceneSpec | Mapping[str, Any]", where: str = "") -> SceneSpec:
    """Accept a `SceneSpec` or a plain dict (validated)."""
    return s if isinstance(s, SceneSpec) else SceneSpec.from_dict(s, where)
