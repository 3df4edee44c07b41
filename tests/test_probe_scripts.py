"""The research scripts' own logic: the oracle probe's scene descriptions, the init-checkpoint tool, the run comparer
and the reader probe's labels and scores."""
from __future__ import annotations

import importlib.util
import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from parashapes import generate_split
from parashapes.lexicon import TRAIN

SCRIPTS = Path(__file__).parents[1] / "scripts"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # the importlib recipe: @dataclass looks its module up there while the class is made
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


# ====================================================================================== scripts/compare_runs.py
@pytest.fixture(scope="module")
def compare():
    return _load("compare_runs")


@pytest.fixture
def keep_threads():
    threads = torch.get_num_threads()  # compare_runs.main sets torch's thread count
    yield
    torch.set_num_threads(threads)


def _demo_run(root: Path, *, weight_bump: float = 0.0, loss_bump: float = 0.0) -> Path:
    """A tiny `scripts/demo.py --out` directory: one stage's scalars and checkpoint, summary, images, export."""
    from PIL import Image
    from torch.utils.tensorboard import SummaryWriter

    run = root / "stage1" / "run"
    (run / "checkpoints").mkdir(parents=True)
    writer = SummaryWriter(log_dir=str(run))
    for step in range(3):
        writer.add_scalar("train/loss", 1.0 / (step + 1) + (loss_bump if step == 2 else 0.0), step)
        writer.add_scalar("lr", 1e-4 * (step + 1), step)
    writer.close()
    weight = torch.arange(6, dtype=torch.float32).reshape(2, 3) / 7
    weight[1, 2] += weight_bump
    torch.save({"state_dict": {"unet.w": weight, "unet.b": torch.zeros(3)}, "global_step": 3,
                "ema": {"decay": 0.999, "num_updates": 3, "shadow": {"unet.w": weight * 0.5}}},
               run / "checkpoints" / "last.ckpt")
    (root / "summary.json").write_text(json.dumps({"rows": [
        {"stage": "stage1", "split": "test", "scores": {"object_exact": 0.5, "color": 0.75},
         "ci": {"object_exact": [0.25, 0.75]}}]}))
    images = root / "eval" / "stage1" / "test" / "images"
    images.mkdir(parents=True)
    for i in range(2):
        Image.fromarray(np.full((8, 8, 3), 40 * i, dtype=np.uint8)).save(images / f"{i:04d}.png")
    (root / "export" / "unet").mkdir(parents=True)
    save_file({"w": weight.clone()}, str(root / "export" / "unet" / "x.safetensors"))
    return root


def test_compare_runs_finds_two_copies_identical(compare, tmp_path, capsys, keep_threads):
    a = _demo_run(tmp_path / "a")
    shutil.copytree(a, tmp_path / "b")
    code = compare.main([str(a), str(tmp_path / "b")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.strip().splitlines()[-1] == "IDENTICAL"
    for item in ("stage1 scalar train/loss", "stage1 last.ckpt state_dict", "stage1 last.ckpt EMA shadow",
                 "summary stage1/test scores", "images stage1/test", "export unet/x.safetensors"):
        assert item in out, item  # every section compared something


@pytest.mark.parametrize("change, item", [
    ({"weight_bump": 1e-3}, "stage1 last.ckpt state_dict"),
    ({"loss_bump": 1e-3}, "stage1 scalar train/loss"),
], ids=["checkpoint-tensor", "scalar"])
def test_compare_runs_names_what_differs(compare, tmp_path, capsys, keep_threads, change, item):
    a, b = _demo_run(tmp_path / "a"), _demo_run(tmp_path / "b", **change)
    code = compare.main([str(a), str(b)])
    out = capsys.readouterr().out
    assert code == 1, out
    verdict = out.strip().splitlines()[-1]
    assert verdict.startswith("DIFFERENT: ") and item in verdict.split(": ", 1)[1].split(", "), verdict
    if "weight_bump" in change:  # the bumped tensor is also in the EMA shadow and the export
        assert "stage1 scalar train/loss" not in verdict


def test_compare_runs_rejects_a_missing_directory(compare, tmp_path, capsys, keep_threads):
    a = _demo_run(tmp_path / "a")
    missing = tmp_path / "nowhere"
    assert compare.main([str(a), str(missing)]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and "directory not found" in err[0] and str(missing) in err[0], err
    assert "IDENTICAL" not in captured.out and "DIFFERENT" not in captured.out


# ====================================================================================== scripts/reader_probe.py
@pytest.fixture(scope="module")
def reader_probe():
    return _load("reader_probe")


@pytest.fixture(scope="module")
def probe_specs():
    return generate_split("test", 5, seed=0)


def test_cell_labels_put_each_object_in_its_cell(reader_probe, probe_specs):
    rp = reader_probe
    for spec in probe_specs:
        y = rp.cell_labels(spec)
        assert y.shape == (9, 3) and y.dtype == torch.long
        for o in spec.objects:
            cell = rp.POSITIONS.index(o.position)
            assert y[cell].tolist() == [1 + rp.COLORS.index(o.color), 1 + rp.SHAPES.index(o.shape),
                                        1 + rp.SIZES.index(o.size)]
        occupied = {rp.POSITIONS.index(o.position) for o in spec.objects}
        assert all(y[c].tolist() == [0, 0, 0] for c in range(9) if c not in occupied)
        assert int((y[:, 0] > 0).sum()) == len(spec.objects)


def test_reader_scores_perfect_empty_and_shifted_predictions(reader_probe, probe_specs):
    rp = reader_probe
    y = torch.stack([rp.cell_labels(s) for s in probe_specs])  # (5, 9, 3)
    attributes = ["color", "shape", "size", "object_exact"]

    perfect = rp.score(rp.per_scene(y.clone(), y), n_boot=200)
    assert all(perfect[a] == [1.0, 1.0, 1.0] for a in attributes), perfect

    empty = rp.score(rp.per_scene(torch.zeros_like(y), y), n_boot=200)
    assert all(empty[a][0] == 0.0 for a in attributes), empty

    shifted = rp.score(rp.per_scene(y.roll(1, 0), y), n_boot=200)
    assert all(shifted[a][0] < 1.0 and shifted[a][1] <= shifted[a][0] <= shifted[a][2] for a in attributes)


def test_train_reader_smoke(reader_probe):
    rp = reader_probe
    specs = generate_split("test", 24, seed=1)
    y = torch.stack([rp.cell_labels(s) for s in specs])
    gen = torch.Generator().manual_seed(0)
    states = [torch.randn(3 + i % 9, 16, generator=gen).half() for i in range(len(specs))]
    reader = rp.train_reader(states, y, epochs=2, seed=0)
    assert isinstance(reader, rp.Reader)
    pred = rp.predict(reader, states)
    assert pred.shape == (24, 9, 3) and pred.dtype == torch.long
    assert int(pred.min()) >= 0
    for a, vocab in enumerate([rp.COLORS, rp.SHAPES, rp.SIZES]):
        assert int(pred[..., a].max()) <= len(vocab)


def test_cell_buckets_and_per_mention_counts(reader_probe, probe_specs):
    """Each object's cell carries its first-mention bucket; counting over one bucket's cells only counts them."""
    rp = reader_probe
    from parashapes.vocab import mention_bucket

    y = torch.stack([rp.cell_labels(s) for s in probe_specs])  # (5, 9, 3)
    cells = [rp.cell_buckets(s) for s in probe_specs]
    for spec, row in zip(probe_specs, cells):
        assert sum(b is not None for b in row) == len(spec.objects)
        for o, word in zip(spec.objects, spec.mention_words()):
            assert row[rp.POSITIONS.index(o.position)] == mention_bucket(word)
    early = torch.tensor([[b == "0-76" for b in row] for row in cells])  # (5, 9)
    all_counts = rp.per_scene(y.clone(), y)
    early_counts = rp.per_scene(y.clone(), y, only=early)
    assert early_counts["objects"].sum() == int(early.sum()) < all_counts["objects"].sum() or \
        early_counts["objects"].sum() == all_counts["objects"].sum() == int(early.sum())
    assert (early_counts["object_exact"] == early_counts["objects"]).all()  # perfect predictions stay perfect


def test_score_ignores_resamples_without_objects(reader_probe):
    """A small bucket (one object in one of eight scenes) still gets a finite interval: resamples that drew no
    object are not ratios and are left out."""
    import numpy as np

    one = np.array([0, 0, 0, 1, 0, 0, 0, 0])
    got = reader_probe.score({"objects": one, "color": one, "shape": one * 0, "size": one, "object_exact": one * 0},
                             n_boot=300)
    assert got["color"] == [1.0, 1.0, 1.0] and got["object_exact"] == [0.0, 0.0, 0.0]
    assert all(np.isfinite(v).all() for v in got.values())
