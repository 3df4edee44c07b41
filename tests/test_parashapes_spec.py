"""ParaShapes vocabulary and the spec file format: validation names file:line and field."""
from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from parashapes import vocab
from parashapes.spec import SceneSpec, SpecError, load_specs, parse_spec_lines, save_specs

GOOD = {"id": "hand-1", "paragraph": "A red circle.", "background": "white",
        "objects": [{"shape": "circle", "color": "red", "size": "large", "position": "top-left"}]}


def test_scene_space_is_the_issue_s():
    assert vocab.SHAPES == ("circle", "square", "triangle")
    assert set(vocab.COLORS) == {"red", "green", "blue", "yellow", "purple", "orange", "cyan", "pink"}
    assert set(vocab.BACKGROUNDS) == {"white", "black", "gray"}
    assert vocab.SIZES == ("small", "large") and len(vocab.POSITIONS) == 9
    # colors well separated from each other and strongly chromatic (backgrounds are achromatic)
    rgb = np.array(list(vocab.COLORS.values()), float)
    assert min(np.linalg.norm(a - b) for a, b in itertools.combinations(rgb, 2)) > 90
    assert (rgb.max(1) - rgb.min(1)).min() >= 120
    assert all(max(c) == min(c) for c in vocab.BACKGROUNDS.values())
    # two large objects in neighbouring cells never touch
    assert 2 * vocab.HALF_EXTENT["large"] < 1 / 3


def test_roundtrip_preserves_extra_keys(tmp_path):
    d = {**GOOD, "mentions": [{"char": 2, "word": 1}], "source": "me",
         "objects": [{**GOOD["objects"][0], "note": "hand"}]}
    s = SceneSpec.from_dict(d, "x:1")
    assert s.extra == {"mentions": [{"char": 2, "word": 1}], "source": "me"}
    assert s.to_dict() == d and s.objects[0].extra == {"note": "hand"}
    save_specs([s], tmp_path / "a.jsonl")
    assert load_specs(tmp_path / "a.jsonl")[0].to_dict() == d


@pytest.mark.parametrize("mutate, field, words", [
    (lambda d: d["objects"][0].update(color="magenta"), "objects[0].color", "unknown value 'magenta'"),
    (lambda d: d["objects"][0].update(shape="hexagon"), "objects[0].shape", "allowed: circle, square, triangle"),
    (lambda d: d.update(background="blue"), "background", "unknown value"),
    (lambda d: d["objects"][0].pop("size"), "objects[0].size", "missing"),
    (lambda d: d["objects"].append(dict(d["objects"][0], color="blue")), "objects[1].position", "overlapping"),
    (lambda d: d["objects"].append(dict(d["objects"][0], position="top")), "objects[1].color", "duplicate color"),
    (lambda d: d.update(objects=[]), "objects", "1 to 4"),
    (lambda d: d.update(id="../evil"), "id", "invalid id"),
    (lambda d: d.update(mentions=[{"char": -1}]), "mentions[0].char", "non-negative"),
])
def test_bad_fields_are_named(mutate, field, words):
    d = json.loads(json.dumps(GOOD))
    mutate(d)
    with pytest.raises(SpecError) as e:
        SceneSpec.from_dict(d, "specs.jsonl:7")
    assert e.value.field == field and e.value.where == "specs.jsonl:7"
    assert "specs.jsonl:7" in str(e.value) and field in str(e.value) and words in str(e.value)


def test_file_errors_are_all_reported_with_lines(tmp_path):
    bad = dict(GOOD, objects=[dict(GOOD["objects"][0], color="teal")])
    lines = [json.dumps(GOOD), "", "{not json", json.dumps(bad), json.dumps(GOOD)]
    p = tmp_path / "hand.jsonl"
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(SpecError) as e:
        load_specs(p)
    msg = str(e.value)
    assert len(e.value.errors) == 3
    assert f"{p}:3: malformed JSON" in msg
    assert f"{p}:4: field 'objects[0].color': unknown value 'teal'" in msg
    assert f"{p}:5: field 'id': duplicate id 'hand-1' (first seen on line 1)" in msg
    specs, errors = parse_spec_lines(lines[:2])  # blank lines are fine
    assert len(specs) == 1 and not errors
