"""Writers and splits: lengths, richness, mention offsets, held-out phrasing, determinism, ParaPrompts-400."""
from __future__ import annotations

import re

import numpy as np
import pytest

from parashapes import generate_split
from parashapes.cli import read_paraprompts, writer_stats
from parashapes.describe import scene_items, scene_list
from parashapes.generate import SPLITS
from parashapes.lexicon import HELDOUT, TRAIN
from parashapes.templates import HELDOUT_PARAGRAPH, PARAGRAPH
from parashapes.vocab import mention_bucket

N = 1500


@pytest.fixture(scope="module")
def corpora():
    return {s: generate_split(s, N if s in ("stage2", "heldout") else 400, seed=0) for s in SPLITS}


def _words(text):
    return len(text.split())


def test_paragraph_lengths_and_late_mentions(corpora):
    for split in ("stage2", "val", "test", "heldout"):
        lengths = np.array([_words(s.paragraph) for s in corpora[split]])
        assert lengths.min() >= 60 and lengths.max() <= 300, split
        assert lengths.mean() >= 120, split
    words = [w for s in corpora["stage2"] for w in s.mention_words()]
    assert None not in words  # every object is mentioned in a paragraph
    late = np.mean([w >= 77 for w in words])
    very_late = np.mean([w >= 256 for w in words])
    assert late >= 0.30, late
    assert very_late > 0.003, very_late


def test_caption_and_curated_lengths(corpora):
    caps = [_words(s.paragraph) for s in corpora["stage1"]]
    assert min(caps) >= 3 and max(caps) <= 15
    # captions name one or two objects
    assert all(1 <= sum(w is not None for w in s.mention_words()) <= 2 for s in corpora["stage1"])
    cur = [_words(s.paragraph) for s in corpora["stage3"]]
    assert min(cur) >= 50 and max(cur) <= 100


def test_richness():
    assert len(PARAGRAPH.absolute) + len(PARAGRAPH.relative) >= 30
    for lex in (TRAIN, HELDOUT):
        for table in (lex.colors, lex.shapes, lex.sizes, lex.positions, lex.position_nouns, lex.backgrounds):
            assert all(len(v) >= 3 for v in table.values())


def test_mentions_point_at_the_object(corpora):
    for split in SPLITS:
        for s in corpora[split][:300]:
            for o, m in zip(s.objects, s.extra["mentions"]):
                if m is None:
                    continue
                assert m["word"] == len(s.paragraph[:m["char"]].split())
                # the sentence from the mention onwards names the object's shape or color
                rest = s.paragraph[m["char"]:].lower()
                sentence = rest.split(". ")[0] + " " + (rest.split(". ") + [""])[1]
                lex = HELDOUT if split == "heldout" else TRAIN
                words = lex.colors[o.color] + lex.shapes[o.shape]
                assert any(w in sentence for w in words), (split, s.paragraph, m)


def test_paragraph_features_present(corpora):
    text = " ".join(s.paragraph for s in corpora["stage2"])
    assert re.search(r"\. It (is|sits)", text)  # coreference
    assert "directly below the" in text or "just beneath the" in text  # relative positions
    assert "There is no " in text or "You will not see any" in text  # absent things
    # objects are described in random order, not the spec's order
    firsts = [int(np.argmin([m["char"] for m in s.extra["mentions"]])) for s in corpora["stage2"]
              if len(s.objects) > 1]
    assert 0.2 < np.mean([f == 0 for f in firsts]) < 0.6


def test_heldout_phrasing_never_in_training(corpora):
    train_text = " ".join(s.paragraph.lower() for sp in SPLITS if sp != "heldout" for s in corpora[sp])
    held = set()
    for table in (HELDOUT.colors, HELDOUT.shapes, HELDOUT.sizes, HELDOUT.backgrounds, HELDOUT.positions,
                  HELDOUT.position_nouns):
        for wordings in table.values():
            held.update(wordings)
    held.update(w for ws in HELDOUT.relations.values() for w in ws)
    for w in held:
        assert not re.search(r"\b" + re.escape(w.lower()) + r"\b", train_text), w
    held_templates = set(HELDOUT_PARAGRAPH.absolute + HELDOUT_PARAGRAPH.moods)
    assert not held_templates & set(PARAGRAPH.absolute + PARAGRAPH.moods)
    # and the held-out split really uses them
    heldout_text = " ".join(s.paragraph.lower() for s in corpora["heldout"])
    assert sum(bool(re.search(r"\b" + re.escape(w.lower()) + r"\b", heldout_text)) for w in held) > 0.8 * len(held)


def test_deterministic_and_disjoint_streams():
    a = [s.to_json() for s in generate_split("test", 50, seed=3)]
    assert a == [s.to_json() for s in generate_split("test", 50, seed=3)]
    assert a != [s.to_json() for s in generate_split("test", 50, seed=4)]
    # val and test (same writer, same seed) must not share scenes or text
    val = {s.paragraph for s in generate_split("val", 200, seed=0)}
    test = {s.paragraph for s in generate_split("test", 200, seed=0)}
    assert not val & test
    # sample i does not depend on how many were generated
    assert generate_split("stage2", 5, seed=1, start=10)[0].to_json() == generate_split("stage2", 11, seed=1)[10].to_json()


def test_writer_lengths_vs_paraprompts(paraprompts_csv):
    prompts = read_paraprompts(paraprompts_csv)
    assert len(prompts) == 399
    real = np.array([_words(p) for p in prompts])
    st = writer_stats(n=300, seed=0, paraprompts=paraprompts_csv)["writers"]
    assert st["ParaPrompts-400"]["n"] == 399 and abs(st["ParaPrompts-400"]["mean"] - real.mean()) < 0.1
    # the paragraph writer is in the same length regime as real long prompts (mean 131 words)
    assert 0.8 * real.mean() < st["paragraph"]["mean"] < 1.3 * real.mean()
    assert st["paragraph"]["min"] >= 60 and st["caption"]["max"] <= 15
    # a real paragraph's first 77 words leave a large part unseen, as in our long paragraphs
    assert np.mean(real > 77) > 0.9
    assert mention_bucket(76) == "0-76" and mention_bucket(77) == "77-255" and mention_bucket(256) == "256+"


def test_scene_list_names_every_object_once_background_first():
    spec = generate_split("test", 1, seed=0)[0]
    text = scene_list(spec)
    assert scene_items(text)[0] == f"{spec.background} background" and len(scene_items(text)) == len(spec.objects) + 1
    assert scene_items(text)[1:] == [f"{o.size} {o.color} {o.shape} at {o.position}" for o in spec.objects]
    assert scene_list(spec.to_dict()) == text  # a spec dict (JSONL) reads the same


def test_scene_list_in_mention_order_follows_the_paragraph():
    for spec in generate_split("test", 20, seed=0):
        text = scene_list(spec, order="mention")
        assert set(scene_items(text)) == set(scene_items(scene_list(spec)))  # same items, another order
        assert scene_list(spec.to_dict(), order="mention") == text  # dicts (from disk) carry the mentions too
        words = [m["word"] for m in spec.extra["mentions"]]
        expected = [spec.objects[i] for i in sorted(range(len(words)), key=lambda i: words[i])]
        assert scene_items(text)[1:] == [f"{o.size} {o.color} {o.shape} at {o.position}" for o in expected]
    with pytest.raises(ValueError, match="order='alphabetical'"):
        scene_list(spec, order="alphabetical")
    d = spec.to_dict()
    d["mentions"] = [None, *d["mentions"][1:]]  # an unmentioned object goes last
    assert scene_items(scene_list(d, order="mention"))[-1] == scene_items(scene_list(spec))[1]
    bare = {k: v for k, v in spec.to_dict().items() if k != "mentions"}
    with pytest.raises(ValueError, match=f"scene {spec.id}: order='mention' needs one `mentions` entry"):
        scene_list(bare, order="mention")
