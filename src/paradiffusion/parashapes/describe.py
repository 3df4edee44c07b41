"""The canonical scene list: a scene's content in one fixed pattern of vocabulary words.

"gray background. small red triangle at top. large purple square at center." is the text a summariser LM is
taught to write after a paragraph (stage 0, `LMTextDataModule(summary_splits=...)`), the text a
`paradiffusion.models.rewriter.TextRewriter` restates paragraphs into, and the reference its restatements are
scored against (`score_restatements`). It names every attribute and nothing else, so it is what the judge checks.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


#: object orders of a scene list: the spec's own (random) order, or the order the text first mentions them
ORDERS = ("spec", "mention")


def scene_list(spec: Any, order: str = "spec") -> str:
    """Every attribute of every object in canonical words, background first. `spec`: a SceneSpec or its dict.

    order="mention" lists the objects in the order the scene's text first mentions them (its `mentions` word
    offsets; unmentioned objects last): a restating LM then writes each object while reading its sentences, and a
    relative placement ("diagonally below and to the right of the yellow orb") always refers to an object whose cell
    it has already written, since writers only anchor on earlier-mentioned objects."""
    if order not in ORDERS:
        raise ValueError(f"scene_list: order={order!r}; expected one of {ORDERS}")
    d = spec.to_dict() if hasattr(spec, "to_dict") else spec
    objects = list(d["objects"])
    if order == "mention":
        mentions = d.get("mentions")  # SceneSpec.to_dict and the JSONL files keep them at the top level
        if mentions is None or len(mentions) != len(objects):
            raise ValueError(f"scene {d.get('id', '?')}: order='mention' needs one `mentions` entry per object "
                             f"(got {None if mentions is None else len(mentions)} for {len(objects)} objects)")
        # an entry without a word offset (None, or no "word") counts as unmentioned, as in SceneSpec.mention_words
        words = [m.get("word") if isinstance(m, dict) else None for m in mentions]
        rank = sorted(range(len(objects)), key=lambda i: (words[i] is None, words[i] or 0, i))
        objects = [objects[i] for i in rank]
    items = [f"{o['size']} {o['color']} {o['shape']} at {o['position']}" for o in objects]
    return ". ".join([f"{d['background']} background", *items]) + "."


def scene_items(text: str) -> list[str]:
    """The sentences of a scene list, stripped ("gray background", "small red triangle at top", ...)."""
    return [x.strip() for x in text.split(".") if x.strip()]


def parse_item(item: str) -> tuple[str, str, str, str] | None:
    """"small red triangle at top" -> (size, color, shape, cell); None for anything else."""
    words = item.split()
    if len(words) != 5 or words[3] != "at":
        return None
    return words[0], words[1], words[2], words[4]


def restated_objects(spec: Any, text: str) -> dict[str, tuple[str, str, str, str]]:
    """Colour -> (size, colour, shape, cell) of the objects a restatement `text` names for `spec`'s scene.

    Only as many items as the scene has objects are read, after the background: a rewriter gains nothing by
    writing extra guesses. Colours are unique within a scene, so an item is matched to its object by colour; of
    two items with one colour the first counts, and malformed items are ignored."""
    n_objects = len(spec["objects"] if isinstance(spec, Mapping) else spec.objects)
    named: dict[str, tuple[str, str, str, str]] = {}
    for parsed in map(parse_item, scene_items(text)[1: n_objects + 1]):
        if parsed is not None:
            named.setdefault(parsed[1], parsed)
    return named


def score_restatements(pairs: Iterable[tuple[Mapping[str, Any], str]]) -> dict[str, float]:
    """How well restatements match their scenes' scene lists: exact whole lists, right backgrounds, and the share of
    objects named exactly (size, colour, shape and cell; order free, extra items ignored). `pairs`: (spec, text).

    Per attribute: `color` is the share of the scenes' objects whose colour the restatement names in a well-formed
    item ("<size> <colour> <shape> at <cell>"; colours are unique within a scene, and of two items with one colour
    the first counts), and `size` / `shape` / `cell` the share of those whose item also has the right size / shape /
    cell (0 when no colour is named): where a restatement goes wrong, beyond which objects it names."""
    n = exact = background = objects = named = 0
    by_color = {"color": 0, "size": 0, "shape": 0, "cell": 0}
    for spec, text in pairs:
        truth, said = scene_items(scene_list(spec)), scene_items(text)
        n += 1
        exact += said[: len(truth)] == truth
        background += bool(said) and said[0] == truth[0]
        objects += len(truth) - 1
        named += len(set(truth[1:]) & set(said[1: len(truth)]))
        parsed = restated_objects(spec, text)
        for t in map(parse_item, truth[1:]):
            p = parsed.get(t[1])
            if p is not None:
                by_color["color"] += 1
                by_color["size"] += p[0] == t[0]
                by_color["shape"] += p[2] == t[2]
                by_color["cell"] += p[3] == t[3]
    if n == 0:
        raise ValueError("score_restatements: no (spec, text) pairs")
    return {"n": n, "summary_exact": exact / n, "background": background / n, "objects_named": named / max(1, objects),
            "color": by_color["color"] / max(1, objects),
            **{k: by_color[k] / max(1, by_color["color"]) for k in ("size", "shape", "cell")}}
