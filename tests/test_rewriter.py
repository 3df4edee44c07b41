"""TextRewriter (summarise-then-read option): batched greedy restatements, the unconditional "" kept, the cache,
truncation counted, save/load; and the module, pipeline and export carrying it."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from helpers import random_lm_dir
from paradiffusion.models.rewriter import TextRewriter
from paradiffusion.parashapes import generate_split
from paradiffusion.parashapes.describe import restated_objects, scene_items, scene_list, score_restatements

COMMITTED = Path(__file__).parents[1] / "docs" / "probes" / "summary_lm_2x128"
PARAS = ["a red circle at the top left", "two squares: a blue one at the bottom and a green one at the right, "
         "on a gray background with nothing else", "a big cyan triangle"]


@pytest.fixture(scope="module")
def lm_dir(tmp_path_factory):
    torch.manual_seed(0)
    return random_lm_dir(tmp_path_factory.mktemp("rw"))


def test_batched_restatements_equal_one_by_one_and_empty_stays_empty(lm_dir):
    rw = TextRewriter(str(lm_dir), max_new_tokens=12, batch_size=8)
    batched = rw(["", *PARAS, ""])
    single = [TextRewriter(str(lm_dir), max_new_tokens=12, cache_size=0)([p])[0] for p in PARAS]
    assert batched[0] == batched[-1] == ""  # the CFG unconditional input is never rewritten
    assert batched[1:-1] == single  # left padding does not change a row's greedy continuation
    assert any(single)  # a random LM still writes something


def test_each_paragraph_is_generated_once(lm_dir, monkeypatch):
    rw = TextRewriter(str(lm_dir), max_new_tokens=4, batch_size=2)
    calls = []
    real = rw._generate
    monkeypatch.setattr(rw, "_generate", lambda chunk: calls.append(list(chunk)) or real(chunk))
    first = rw(PARAS + PARAS[:1])
    assert rw(PARAS[::-1]) == first[:3][::-1]
    assert sorted(p for chunk in calls for p in chunk) == sorted(PARAS)  # duplicates and repeats come from the cache
    small = TextRewriter(str(lm_dir), max_new_tokens=4, cache_size=2)
    assert small(PARAS) == first[:3]  # more paragraphs than the cache holds: none is lost to eviction
    assert len(small._cache) == 2  # bounded: streamed training paragraphs never come back


def test_long_paragraphs_are_cut_before_the_template_and_counted(lm_dir, monkeypatch):
    rw = TextRewriter(str(lm_dir), max_new_tokens=3, max_prompt_tokens=5)
    prompts = []
    real = rw.lm.generate
    monkeypatch.setattr(rw.lm, "generate", lambda **kw: prompts.extend(
        rw.tokenizer.batch_decode(kw["input_ids"], skip_special_tokens=True)) or real(**kw))
    rw(PARAS)
    assert rw.num_truncated == 2  # the two paragraphs longer than 5 tokens
    assert len(prompts) == 3 and all(p.endswith(" In short:") for p in prompts)  # the cue survives the cut
    assert prompts[1].startswith("two squares") and "gray background" not in prompts[1]


def test_save_and_load_round_trip(lm_dir, tmp_path):
    rw = TextRewriter(str(lm_dir), response_template=" Scene: ", max_new_tokens=6)
    rw.save_pretrained(tmp_path / "rw")
    settings = json.loads((tmp_path / "rw" / "rewriter.json").read_text())
    assert settings["response_template"] == " Scene: " and settings["max_new_tokens"] == 6
    assert (tmp_path / "rw" / "model.safetensors").is_file()
    assert TextRewriter.from_pretrained(tmp_path / "rw")(PARAS) == rw(PARAS)


def test_bad_settings_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="text_rewriter.pretrained=.*no config.json"):
        TextRewriter(str(tmp_path))
    with pytest.raises(ValueError, match="response_template is empty"):
        TextRewriter(str(COMMITTED), response_template="  ")


def test_committed_summariser_as_a_rewriter_matches_the_probe_and_restates_test_paragraphs():
    # Reference match: TextRewriter's batched, left-padded generation equals the probe's one-at-a-time HF generate
    # (scripts/lm_summary_probe.Summariser), so the README's chain figures carry over to the shipped part.
    import sys

    sys.path.insert(0, str(Path(__file__).parents[1] / "scripts"))
    from lm_summary_probe import Summariser

    specs = generate_split("test", 12, seed=0)
    restated = TextRewriter(str(COMMITTED), max_new_tokens=80)([s.paragraph for s in specs])
    probe = Summariser(str(COMMITTED))
    assert restated == [probe(s.paragraph) for s in specs]
    scores = score_restatements(zip(specs, restated))
    assert scores["background"] == 1.0 and scores["objects_named"] > 0.2  # README: 1.000 and 0.325 on 60


def test_scene_list_and_restatement_scores():
    spec = generate_split("test", 1, seed=0)[0]
    text = scene_list(spec)
    assert scene_items(text)[0] == f"{spec.background} background" and len(scene_items(text)) == len(spec.objects) + 1
    perfect = score_restatements([(spec, text)])
    assert perfect == {"n": 1, "summary_exact": 1.0, "background": 1.0, "objects_named": 1.0, "color": 1.0, "size": 1.0,
                       "shape": 1.0, "cell": 1.0}
    # one object moved to another cell, one dropped: per attribute, of the colours named
    items = scene_items(text)
    first = items[1].rsplit(" at ", 1)[0] + (" at center" if not items[1].endswith(" at center") else " at top")
    partial = score_restatements([(spec, ". ".join([items[0], first, *items[2:-1]]))])
    k = len(spec.objects)
    assert k >= 2  # test scene 0 has 4 objects
    assert partial["color"] == pytest.approx((k - 1) / k) and partial["cell"] == pytest.approx((k - 2) / (k - 1))
    assert partial["size"] == partial["shape"] == 1.0 and partial["objects_named"] == pytest.approx((k - 2) / k)
    reordered = ". ".join([scene_items(text)[0], *scene_items(text)[1:][::-1]])
    assert score_restatements([(spec, reordered)])["objects_named"] == 1.0
    twice = f"{items[0]}. {first}. {items[1]}"  # the same colour twice: the first item counts
    assert score_restatements([(spec, twice)])["cell"] == 0.0
    assert score_restatements([(spec, "")]) == {"n": 1, "summary_exact": 0.0, "background": 0.0, "objects_named": 0.0,
                                                "color": 0.0, "size": 0.0, "shape": 0.0, "cell": 0.0}
    with pytest.raises(ValueError, match="no \\(spec, text\\) pairs"):
        score_restatements([])


def test_restated_objects_reads_as_many_items_as_the_scene_has_objects():
    spec = generate_split("test", 1, seed=0)[0]
    items = scene_items(scene_list(spec))
    k = len(spec.objects)
    truth = {o.color: (o.size, o.color, o.shape, o.position) for o in spec.objects}
    assert restated_objects(spec, scene_list(spec)) == truth
    assert restated_objects(spec.to_dict(), scene_list(spec)) == truth  # a spec dict (JSONL) reads the same
    # an object the rewriter writes only after k items is not read: extra guesses earn nothing
    other = next(c for c in ("red", "green", "blue", "yellow", "purple", "orange", "cyan", "pink") if c not in truth)
    late = ". ".join([items[0], *items[2:], f"small {other} circle at center", items[1]])
    assert set(restated_objects(spec, late)) == set(truth) - {spec_color(items[1])} | {other}
    # malformed items are skipped but still use up a place
    assert restated_objects(spec, ". ".join([items[0], "a red thing", *items[1:]])).keys() == \
        {spec_color(x) for x in items[1:k]}


def spec_color(item: str) -> str:
    return item.split()[1]


def test_module_trains_on_restatements_and_exports_the_rewriter(lm_dir, tmp_path):
    from test_model_module import loader, make_module, trainer

    from paradiffusion.models.testing import build_tiny_tokenizer
    from paradiffusion.pipeline import ParaDiffusionPipeline

    rewriter = TextRewriter(str(lm_dir), max_new_tokens=6)
    module = make_module(str(build_tiny_tokenizer(tmp_path / "tok")), text_rewriter=rewriter)
    read = []
    tokenize = module.text_encoder.tokenize
    module.text_encoder.tokenize = lambda texts: read.append(list(texts)) or tokenize(texts)
    frozen = {k: v.clone() for k, v in rewriter.state_dict().items()}
    t = trainer(tmp_path, max_steps=2, enable_checkpointing=False, limit_val_batches=0)
    dl = loader(module, n=8, batch_size=4)
    t.fit(module, dl)
    paragraphs = [p for batch in dl for p in batch["text"]]
    # the test loader's collate tokenises the paragraphs (and caption dropout the empty one); the module then
    # tokenises their restatements and reads those
    assert [texts for texts in read if texts[0] not in paragraphs and texts != [""]] == [rewriter(paragraphs[:4]), rewriter(paragraphs[4:])]
    assert not any(n.startswith("text_rewriter.") for n in module.trainable_named_parameters())
    assert all(torch.equal(frozen[k], v) for k, v in rewriter.state_dict().items())  # never trained
    assert not rewriter.lm.training  # generation ran in eval mode although Lightning trained the module around it
    # outside the module tree: not in checkpoints (it loads from its directory), so another rewriter can read the model
    t.save_checkpoint(tmp_path / "last.ckpt")
    ckpt = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert not any("text_rewriter" in k for k in ckpt["state_dict"]) and any(k.startswith("unet.") for k in ckpt["state_dict"])
    ckpt["state_dict"]["text_rewriter.lm.lm_head.weight"] = torch.zeros(1)  # as written while it was a submodule
    module.on_load_checkpoint(ckpt)
    module.load_state_dict(ckpt["state_dict"])  # strict: the stale key was dropped

    pipe = module.make_pipeline()
    assert pipe.text_rewriter is rewriter and pipe.restate(["", PARAS[0]]) == ["", rewriter([PARAS[0]])[0]]
    pipe.save_pretrained(tmp_path / "export")
    assert json.loads((tmp_path / "export" / "model_index.json").read_text())["text_rewriter"] == "text_rewriter"
    loaded = ParaDiffusionPipeline.from_pretrained(tmp_path / "export")
    assert loaded.text_rewriter is not None and loaded.restate(PARAS) == rewriter(PARAS)
    torch.testing.assert_close(loaded(PARAS, num_inference_steps=3, guidance_scale=2.0, seed=1),
                               pipe(PARAS, num_inference_steps=3, guidance_scale=2.0, seed=1))
    # without a rewriter the export has no text_rewriter/ and loads without one
    module.text_rewriter = None
    module.make_pipeline().save_pretrained(tmp_path / "plain")
    assert not (tmp_path / "plain" / "text_rewriter").exists()
    assert ParaDiffusionPipeline.from_pretrained(tmp_path / "plain").text_rewriter is None


def test_scene_list_in_mention_order_follows_the_paragraph():
    for spec in generate_split("test", 20, seed=0):
        text = scene_list(spec, order="mention")
        assert set(scene_items(text)) == set(scene_items(scene_list(spec)))  # same items, another order
        assert scene_list(spec.to_dict(), order="mention") == text  # dicts (from disk) carry the mentions too
        words = [m["word"] for m in spec.extra["mentions"]]
        expected = [spec.objects[i] for i in sorted(range(len(words)), key=lambda i: words[i])]
        assert scene_items(text)[1:] == [f"{o.size} {o.color} {o.shape} at {o.position}" for o in expected]
        assert score_restatements([(spec, text)])["objects_named"] == 1.0  # scoring is order-free
    with pytest.raises(ValueError, match="order='alphabetical'"):
        scene_list(spec, order="alphabetical")
    d = spec.to_dict()
    d["mentions"] = [None, *d["mentions"][1:]]  # an unmentioned object goes last
    assert scene_items(scene_list(d, order="mention"))[-1] == scene_items(scene_list(spec))[1]
    bare = {k: v for k, v in spec.to_dict().items() if k != "mentions"}
    with pytest.raises(ValueError, match=f"scene {spec.id}: order='mention' needs one `mentions` entry"):
        scene_list(bare, order="mention")


def test_training_on_scene_lists_reads_them_as_they_are_and_restates_only_paragraphs(lm_dir, tmp_path):
    # data.train_text=scene_list: training pairs carry their scenes' scene lists, which a model with a rewriter
    # reads as they are; validation pairs keep their paragraphs, which it restates.
    from test_model_module import make_module, trainer

    from paradiffusion.data.stages import Stage2AlignmentData, Stage3QualityData
    from paradiffusion.models.testing import build_tiny_tokenizer

    tok = str(build_tiny_tokenizer(tmp_path / "tok"))
    dm = Stage2AlignmentData(train_text="scene_list", tokenizer=tok, batch_size=4, n_val=4, resolution=32)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["text"] == [scene_list(s) for s in batch["spec"]] and batch["restated"] is batch["text"]
    val = next(iter(dm.val_dataloader()))
    assert val["text"] == [s.paragraph for s in generate_split("val", 4, seed=0)] and "restated" not in val
    small = Stage3QualityData(train_text="scene_list", tokenizer=tok, n_train=4, batch_size=4, resolution=32)
    small.setup("fit")
    curated = next(iter(small.train_dataloader()))  # the finite curated set too
    assert curated["restated"] == [scene_list(s) for s in curated["spec"]]
    with pytest.raises(ValueError, match="train_text='scene_list' needs data.source='parashapes'"):
        Stage2AlignmentData(source="manifest", train_path="x.jsonl", train_text="scene_list")
    with pytest.raises(ValueError, match="train_text='captions'"):
        Stage2AlignmentData(train_text="captions")

    rewriter = TextRewriter(str(lm_dir), max_new_tokens=4)
    restated = []
    real = rewriter._generate
    rewriter._generate = lambda chunk: restated.extend(chunk) or real(chunk)
    module = make_module(tok, text_rewriter=rewriter)
    dm = Stage2AlignmentData(train_text="scene_list", tokenizer=tok, batch_size=4, n_val=4, resolution=32)
    t = trainer(tmp_path, max_steps=2, enable_checkpointing=False, limit_val_batches=1, val_check_interval=2,
                num_sanity_val_steps=0)
    t.fit(module, datamodule=dm)
    assert sorted(restated) == sorted(s.paragraph for s in generate_split("val", 4, seed=0))  # never a scene list


def test_validation_also_draws_from_oracle_lists_when_training_on_them(lm_dir, tmp_path):
    # SampleAndScore logs val/oracle_<metric> when the model has a rewriter and trains on scene lists: the same
    # scenes drawn from their scene lists with the rewriter bypassed (restored afterwards), i.e. the UNet's own cap.
    from test_model_module import make_module, trainer

    from paradiffusion.callbacks import SampleAndScore
    from paradiffusion.data.stages import Stage2AlignmentData
    from paradiffusion.models.testing import build_tiny_tokenizer

    tok = str(build_tiny_tokenizer(tmp_path / "tok"))
    rewriter = TextRewriter(str(lm_dir), max_new_tokens=4)
    restated, encoded = [], []
    real = rewriter._generate
    rewriter._generate = lambda chunk: restated.extend(chunk) or real(chunk)
    module = make_module(tok, text_rewriter=rewriter)
    real_tokenize = module.text_encoder.tokenize
    module.text_encoder.tokenize = lambda texts, **kw: encoded.extend(texts) or real_tokenize(texts, **kw)

    def fit(train_text, oracle_lists=None):
        restated.clear(), encoded.clear()
        callback = SampleAndScore(n=2, num_inference_steps=2, text_use_n=0, oracle_lists=oracle_lists)
        dm = Stage2AlignmentData(train_text=train_text, tokenizer=tok, batch_size=2, n_val=2, resolution=32)
        t = trainer(tmp_path / train_text, max_steps=1, enable_checkpointing=False, limit_val_batches=1,
                    val_check_interval=1, num_sanity_val_steps=0, callbacks=[callback])
        t.fit(module, datamodule=dm)
        return t.callback_metrics

    metrics = fit("scene_list")
    specs = generate_split("val", 2, seed=1234)  # the callback's fixed scenes
    assert {"val/object_exact", "val/oracle_object_exact", "val/oracle_scene_exact"} <= set(metrics)
    assert all(scene_list(s) in encoded for s in specs)  # the oracle samples read the scene lists themselves
    assert all(s.paragraph in restated for s in specs) and not any(scene_list(s) in restated for s in specs)
    assert module.text_rewriter is rewriter
    # off by default when training on paragraphs; on when asked
    assert "val/oracle_object_exact" not in fit("paragraph")
    assert "val/oracle_object_exact" in fit("paragraph", oracle_lists=True)
