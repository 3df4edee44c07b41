"""The canonical scene list: a scene's content in one fixed pattern of vocabulary words.

"gray background. small red triangle at top. large purple square at center." names every attribute and nothing
else, so it is what the judge checks: the oracle text of the probes (`scripts/oracle_text_probe.py`) and of
`ParaShapesDataset(text="scene_list")`.
"""
from __future__ import annotations

from typing import Any


#: object orders of a scene list: the spec's own (random) order, or the order the text first mentions them
ORDERS = ("spec", "mention")


def scene_list(spec: Any, order: str = "spec") -> str:
    """Every attribute of every object in canonical words, background first. `spec`: a SceneSpec or its dict.

    order="mention" lists the objects in the order the scene's text first mentions them (its `mentions` word
    offsets; unmentioned objects last): the objects come in the paragraph's order, and a relative placement
    ("diagonally below and to the right of the yellow orb") always refers to an object listed before it, since
    writers only anchor on earlier-mentioned objects."""
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
