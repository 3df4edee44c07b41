"""The research scripts' own logic: the oracle probe's scene descriptions and the init-checkpoint tool."""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from parashapes import generate_split
from parashapes.lexicon import TRAIN

SCRIPTS = Path(__file__).parents[1] / "scripts"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def probe():
    return _load("oracle_text_probe")


@pytest.fixture(scope="module")
def scenes():
    return [s.to_dict() for s in generate_split("test", 40, seed=0)]


def test_scene_list_names_every_attribute_in_canonical_words(probe, scenes):
    for spec in scenes:
        text = probe.scene_list(spec)
        assert text.startswith(f"{spec['background']} background.")
        for o in spec["objects"]:
            assert f"{o['size']} {o['color']} {o['shape']} at {o['position']}" in text


def test_synonym_scene_list_uses_lexicon_wordings_of_the_right_values(probe, scenes):
    seen_non_canonical = 0
    for spec in scenes:
        text = probe.scene_list_synonyms(spec)
        assert text == probe.scene_list_synonyms(spec)  # the same scene is always worded the same way
        parts = text[:-1].split(". ")
        assert len(parts) == 1 + len(spec["objects"])
        assert parts[0].removesuffix(" background") in TRAIN.backgrounds[spec["background"]]
        for part, o in zip(parts[1:], spec["objects"]):
            assert any(part.startswith(f"{s} ") for s in TRAIN.sizes[o["size"]]), part
            assert any(f" {c} " in part for c in TRAIN.colors[o["color"]]), part
            assert any(part.endswith(p) for p in TRAIN.positions[o["position"]]), part
        seen_non_canonical += probe.scene_list(spec) != text
    assert seen_non_canonical > 30


@pytest.mark.parametrize("arm", ["scene_list_padded", "scene_list_mood_padded"])
def test_padded_scene_lists_keep_the_scene_list_in_order_at_paragraph_length(probe, scenes, arm):
    lengths = []
    for spec in scenes:
        text = getattr(probe, arm)(spec)
        canonical = probe.scene_list(spec)[:-1].split(". ")
        positions = [text.index(item + ".") for item in canonical]
        assert positions == sorted(positions)
        lengths.append(len(text.split()))
    assert 70 <= sum(lengths) / len(lengths) <= 140


def test_suffix_and_prefix_padding_keep_the_scene_list_whole(probe, scenes):
    for spec in scenes[:20]:
        bare = probe.scene_list(spec)
        suffix, prefix = probe.scene_list_suffix_padded(spec), probe.scene_list_prefix_padded(spec)
        assert suffix.startswith(bare + " ") and prefix.endswith(" " + bare)
        pad = suffix[len(bare) + 1:]
        assert pad == prefix[: -len(bare) - 1]  # the same sentences on either side
        assert 40 <= len(pad.split()) and all(s.strip() + "." in probe.NEUTRAL for s in pad.split(".") if s.strip())


def test_probe_data_takes_an_arm_name_not_a_function(probe):
    # Lightning saves DataModule arguments into checkpoints: a function there breaks torch.load(weights_only=True).
    with pytest.raises(ValueError, match="unknown arm 'nope'"):
        probe.DescribedAlignmentData(arm="nope")
    assert probe.DescribedAlignmentData(arm="scene_list").describe is probe.scene_list


def test_neutral_padding_names_no_attribute_value(probe, scenes):
    words = {w.lower() for table in (TRAIN.colors, TRAIN.shapes, TRAIN.sizes, TRAIN.backgrounds)
             for wordings in table.values() for w in wordings}
    assert len(probe.NEUTRAL) >= 20
    for sentence in probe.NEUTRAL:
        assert not any(re.search(rf"\b{re.escape(w)}\b", sentence.lower()) for w in words), sentence
    for spec in scenes[:10]:
        extra = set(probe.scene_list_mood_padded(spec)[:-1].split(". ")) - set(probe.scene_list(spec)[:-1].split(". "))
        assert extra and all(s + "." in probe.NEUTRAL for s in extra)


def test_init_checkpoint_takes_the_ema_and_swaps_the_llm(tmp_path):
    tool = _load("init_checkpoint")
    state = {"unet.w": torch.zeros(2, 2), "text_encoder.lm.model.embed_tokens.weight": torch.zeros(5, 3),
             "text_encoder.lm.lm_head.weight": torch.zeros(5, 3)}
    ckpt = {"state_dict": state, "global_step": 7, "optimizer_states": [{"big": torch.ones(10)}],
            "ema": {"decay": 0.9, "num_updates": 7, "shadow": {"unet.w": torch.full((2, 2), 3.0)}}}
    torch.save(ckpt, tmp_path / "last.ckpt")
    lm = tmp_path / "lm"
    lm.mkdir()
    save_file({"model.embed_tokens.weight": torch.ones(5, 3), "lm_head.weight": torch.full((5, 3), 2.0)},
              str(lm / "model.safetensors"))

    counts = tool.init_checkpoint(tmp_path / "last.ckpt", tmp_path / "out.ckpt", lm=lm)
    out = torch.load(tmp_path / "out.ckpt", weights_only=True)
    assert counts == {"ema": 1, "lm": 2} and set(out) == {"state_dict", "global_step"}
    assert torch.equal(out["state_dict"]["unet.w"], torch.full((2, 2), 3.0))
    assert torch.equal(out["state_dict"]["text_encoder.lm.lm_head.weight"], torch.full((5, 3), 2.0))

    raw = tool.init_checkpoint(tmp_path / "last.ckpt", tmp_path / "raw.ckpt", raw=True)
    assert raw == {"ema": 0, "lm": 0}
    assert torch.equal(torch.load(tmp_path / "raw.ckpt", weights_only=True)["state_dict"]["unet.w"], torch.zeros(2, 2))

    save_file({"model.embed_tokens.weight": torch.ones(6, 3), "lm_head.weight": torch.ones(5, 3)},
              str(lm / "model.safetensors"))
    with pytest.raises(ValueError, match="embed_tokens.weight has shape"):
        tool.init_checkpoint(tmp_path / "last.ckpt", tmp_path / "bad.ckpt", lm=lm)


def test_evaluate_split_samples_the_described_texts(probe):
    """`evaluate_split(describe=...)`: the pipeline gets the scenes in the arm's words, and the judge scores its
    images against the scenes themselves (a renderer of the described scenes is perfect; chance is not)."""
    from parashapes.evaluate import evaluate_split
    from parashapes.render import render_tensor

    by_text = {probe.scene_list(s.to_dict()): s for s in generate_split("test", 12, seed=0)}
    seen: list[str] = []

    def pipeline(texts, **_):
        seen.extend(texts)
        return torch.stack([render_tensor(by_text[t], 32) for t in texts])  # (B, 3, 32, 32)

    scores = evaluate_split(pipeline, "test", n=12, seed=0, describe=probe.scene_list)
    assert seen == list(by_text)
    assert scores["object_exact"] > 0.9 and scores["chance/object_exact"] < 0.5
