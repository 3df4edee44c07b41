"""The whole suite end to end on CPU, through the real entry points: the demo's stage 0 -> 3 chain (smoke budget),
`paradiffusion test` from a saved run, `generate` from a checkpoint and from an exported pipeline, and the
analysis notebook executed headless on the run's output."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from paradiffusion import demo
from paradiffusion.cli import main as cli_main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    old = {k: os.environ.get(k) for k in ("DEMO_BUDGET", "DEMO_DIR", "DEMO_EVAL_N")}
    os.environ.update(DEMO_BUDGET="smoke", DEMO_DIR=str(root), DEMO_EVAL_N="4")
    try:
        assert demo.main() == 0
    finally:
        for k, v in old.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    return root


def test_demo_chain_writes_every_stage(demo_run):
    assert (demo_run / "stage0" / "hf" / "model.safetensors").exists()
    assert (demo_run / "stage0" / "hf" / "tokenizer.json").exists()
    summary = json.loads((demo_run / "summary.json").read_text())
    assert [r["stage"] for r in summary["rows"]] == ["untrained", "stage1", "stage2", "stage3"]
    assert "test_scores" in summary["rows"][0] and "test_scores" in summary["rows"][-1]
    for row in summary["rows"]:
        assert 0.0 <= row["scores"]["object_exact"] <= 1.0
        # the chance level: the same images judged against the next scene's paragraph
        assert 0.0 <= row["scores"]["chance/presence"] <= 1.0 and "chance/by_mention/0-76/count" not in row["scores"]
        assert row["text_use"] > 0.5  # a loss ratio (4 smoke paragraphs: only that it is computed and finite)
        assert (demo_run / "eval" / row["stage"] / "grid.png").exists()
        assert len(list((demo_run / "eval" / row["stage"] / "images").glob("*.png"))) == 4
    for stage in ("stage1", "stage2", "stage3"):
        run = demo_run / stage / "run"
        assert (run / "checkpoints" / "last.ckpt").exists()
        assert (run / "config.yaml").exists()
        assert list(run.glob("events.out.tfevents.*"))
        assert list((run / "samples").glob("step_*.png")), "validation samples are written"
    # stage 2 started from stage 1's weights, stage 3 from stage 2's
    cfg2 = (demo_run / "stage2" / "run" / "config.yaml").read_text()
    assert str(demo_run / "stage1" / "run" / "checkpoints" / "last.ckpt") in cfg2


def test_tensorboard_has_split_metric_names(demo_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(demo_run / "stage2" / "run"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "val/loss", "val/object_exact", "val/scene_exact"} <= tags, tags
    assert any(t.startswith("train/lr") or t.startswith("lr-") for t in tags)
    assert "val/samples" in acc.Tags()["images"]
    # text use on the validation paragraphs, and on the stage's own text style where that differs (stage-1 captions)
    assert "val/text_use" in tags and "val/text_use_stage2" not in tags, tags
    assert all(0.5 < e.value < 2.0 for e in acc.Scalars("val/text_use"))  # a loss ratio, finite
    acc1 = EventAccumulator(str(demo_run / "stage1" / "run"))
    acc1.Reload()
    assert {"val/text_use", "val/text_use_stage1"} <= set(acc1.Tags()["scalars"])


def test_cli_test_from_saved_run(demo_run, tmp_path, capsys):
    run = demo_run / "stage3" / "run"
    cli_main(["test", "--config", str(run / "config.yaml"), "--ckpt_path", str(run / "checkpoints" / "last.ckpt"),
              "--data.init_args.n_test=4", "--trainer.logger=false", "--trainer.enable_progress_bar=false",
              f"--trainer.default_root_dir={tmp_path}"])  # the run's config.yaml is re-saved there, not in the repo
    out = capsys.readouterr().out
    assert "test/object_exact" in out and "test/loss" in out


def test_generate_and_export_round_trip(demo_run, tmp_path):
    run = demo_run / "stage3" / "run"
    ckpt = str(run / "checkpoints" / "last.ckpt")
    cli_main(["generate", "--config", str(run / "config.yaml"), "--ckpt_path", ckpt, "--split", "heldout",
              "--n", "3", "--steps", "4", "--out", str(tmp_path / "from_ckpt")])
    assert (tmp_path / "from_ckpt" / "grid.png").exists()
    assert json.loads((tmp_path / "from_ckpt" / "scores.json").read_text())["object_exact"] >= 0
    cli_main(["export", "--config", str(run / "config.yaml"), "--ckpt_path", ckpt, "--out", str(tmp_path / "pipe")])
    assert (tmp_path / "pipe" / "unet").is_dir() and (tmp_path / "pipe" / "text_encoder_lora").is_dir()
    prompts = tmp_path / "p.txt"
    prompts.write_text("A red circle sits at the top left.\n")
    cli_main(["generate", "--pipeline", str(tmp_path / "pipe"), "--prompts", str(prompts), "--steps", "4",
              "--out", str(tmp_path / "from_pipe")])
    cli_main(["generate", "--config", str(run / "config.yaml"), "--ckpt_path", ckpt, "--prompts", str(prompts),
              "--steps", "4", "--out", str(tmp_path / "from_ckpt_prompts")])
    import numpy as np
    from PIL import Image

    a = Image.open(tmp_path / "from_pipe" / "0000.png")
    assert a.size == (32, 32)
    # the exported weights (EMA UNet + LoRA adapter, token embeddings included) give the checkpoint's images
    b = Image.open(tmp_path / "from_ckpt_prompts" / "0000.png")
    assert np.abs(np.asarray(a, dtype=np.int16) - np.asarray(b, dtype=np.int16)).max() <= 1


def test_notebook_executes_headless(demo_run, tmp_path):
    nbformat = pytest.importorskip("nbformat")
    from nbclient import NotebookClient

    nb = nbformat.read(REPO / "notebooks" / "analysis.ipynb", as_version=4)
    os.environ["PARADIFFUSION_RUN"] = str(demo_run)
    try:
        NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}).execute()
    finally:
        os.environ.pop("PARADIFFUSION_RUN", None)
    for name in ("loss_curves.png", "faithfulness_per_stage.png", "learning_curve.png", "samples.png"):
        assert (demo_run / "analysis" / name).exists(), name


def test_learning_curve_reads_the_run(demo_run, tmp_path):
    from paradiffusion.analysis import learning_curve, markdown_table, stage_end_minutes

    rows = learning_curve(demo_run)
    assert {r["stage"] for r in rows} == {"stage1", "stage2", "stage3"}
    minutes = [r["minutes"] for r in rows]
    assert minutes == sorted(minutes) and minutes[0] > 0  # stage 0 ran first: the clock starts there
    assert all(0.0 <= r["object_exact"] <= 1.0 and 0.0 <= r["presence"] <= 1.0 for r in rows)
    ends = stage_end_minutes(demo_run)
    assert ends["stage0"] < ends["stage1"] < ends["stage2"] < ends["stage3"]
    assert markdown_table(rows).count("\n") == len(rows) + 1
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        learning_curve(tmp_path)


def test_analysis_cli_picks_metrics(demo_run, tmp_path, capsys):
    from paradiffusion import analysis

    assert analysis.main([str(demo_run), "--metrics", "presence", "text_use", "--out", str(tmp_path / "c.png")]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert header == "| stage | step | minutes | presence | text_use |"
    assert (tmp_path / "c.png").stat().st_size > 0


def test_text_dependence_probe_on_a_saved_run(demo_run):
    from paradiffusion.cli import load_module
    from paradiffusion.evaluate import text_dependence

    run = demo_run / "stage2" / "run"
    module = load_module(str(run / "config.yaml"), str(run / "checkpoints" / "last.ckpt")).eval()
    out = text_dependence(module, split="val", n=3, timesteps=(300, 800))
    assert {"loss_true", "loss_shuffled", "loss_empty", "shuffled_over_true", "loss_true/t=800"} <= set(out)
    assert all(torch.isfinite(torch.tensor(v)) and v > 0 for v in out.values())
    # micro-batching (what keeps the probe inside a paper-scale GPU's memory) does not change the numbers
    by_one = text_dependence(module, split="val", n=3, timesteps=(300, 800), batch_size=1)
    for key, value in out.items():
        assert by_one[key] == pytest.approx(value, rel=1e-4), key
    # with one image, "another image's paragraph" is its own: the probe must then see no difference at all
    single = text_dependence(module, split="val", n=1, timesteps=(500,))
    assert single["loss_shuffled"] == single["loss_true"]


def test_demo_config_adds_files_to_the_diffusion_stages(tmp_path):
    extra = demo._extra_configs(f"{REPO / 'experiments/tiny/attn_lora.yaml'}")
    for stage in demo._stages(tmp_path, extra):
        args = demo._args(stage, tmp_path, "full")
        configs = [args[i + 1] for i, a in enumerate(args) if a == "--config"]
        if stage.name == "stage0":  # the LM pretraining takes no diffusion settings
            assert extra[0] not in configs
        else:  # after the stage config, so its keys win
            assert configs[-1] == extra[0] and configs[-2].endswith(f"{stage.name}.yaml")


def test_demo_config_names_a_missing_file():
    with pytest.raises(SystemExit, match="no_such.yaml"):
        demo._extra_configs("experiments/tiny/attn_lora.yaml, no_such.yaml")
    assert demo._extra_configs("  ") == []


def test_demo_rewriter_option_trains_a_rewriter_and_reads_its_restatements(tmp_path, capsys):
    # DEMO_REWRITER=1 (smoke budget): a second stage-0 LM learns to restate, stages 2-3 read its restatements, the
    # demo scores them, and the exported pipeline carries the rewriter.
    root = tmp_path / "demo"
    stages = demo._stages(root, rewriter=True)
    assert [s.name for s in stages] == ["stage0", "rewriter", "stage1", "stage2", "stage3"]
    for stage in stages[2:]:
        args = demo._args(stage, root, "full")
        reads = any(a.endswith("rewriter.yaml") and "stage0" not in a for a in args)
        assert reads == (stage.name != "stage1")  # stage 1's captions are read as they are
    old = {k: os.environ.get(k) for k in ("DEMO_BUDGET", "DEMO_DIR", "DEMO_EVAL_N", "DEMO_REWRITER")}
    os.environ.update(DEMO_BUDGET="smoke", DEMO_DIR=str(root), DEMO_EVAL_N="4", DEMO_REWRITER="1")
    try:
        assert demo.main() == 0
    finally:
        for k, v in old.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    assert (root / "rewriter" / "hf" / "model.safetensors").is_file()
    summary = json.loads((root / "summary.json").read_text())
    assert summary["rewriter"] is True
    final = summary["rows"][-1]
    for key in ("scores", "test_scores"):
        assert 0.0 <= final[key]["rewriter/objects_named"] <= 1.0 and 0.0 <= final[key]["rewriter/background"] <= 1.0
    assert "rewriter/objects_named" not in summary["rows"][1]["scores"]  # stage 1 reads its captions directly
    assert len((root / "eval" / "stage3" / "restated.jsonl").read_text().splitlines()) == 4
    assert "the rewriter's restatements" in capsys.readouterr().out
    cfg = root / "stage3" / "run" / "config.yaml"
    assert str(root / "rewriter" / "hf") in cfg.read_text()
    ckpt = root / "stage3" / "run" / "checkpoints" / "last.ckpt"
    assert cli_main(["export", "--config", str(cfg), "--ckpt_path", str(ckpt), "--out", str(tmp_path / "export")]) == 0
    assert (tmp_path / "export" / "text_rewriter" / "rewriter.json").is_file()
    assert cli_main(["generate", "--pipeline", str(tmp_path / "export"), "--split", "heldout", "--n", "2",
                     "--steps", "2", "--out", str(tmp_path / "gen")]) == 0
    rows = [json.loads(line) for line in (tmp_path / "gen" / "paragraphs.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all("restated" in r for r in rows)
    # scripts/read_through.py: the same model read through another rewriter (its weights are not in the checkpoint)
    import runpy
    import sys
    from unittest import mock

    other = tmp_path / "other_rewriter"
    from paradiffusion.models.rewriter import TextRewriter

    TextRewriter(str(root / "rewriter" / "hf"), max_new_tokens=4).save_pretrained(other)
    argv = ["read_through.py", "--config", str(cfg), "--ckpt_path", str(ckpt), "--rewriter", str(other),
            "--split", "test", "--n", "2", "--out", str(tmp_path / "rt")]
    with mock.patch.object(sys, "argv", argv):
        runpy.run_path(str(REPO / "scripts" / "read_through.py"), run_name="__main__")
    row = json.loads((tmp_path / "rt" / "rows.jsonl").read_text())
    assert row["rewriter"] == str(other) and row["n"] == 2 and 0.0 <= row["rewriter/objects_named"] <= 1.0
    # --oracle: the same model given the scenes' scene lists, no rewriter
    with mock.patch.object(sys, "argv", argv[:5] + ["--oracle", *argv[7:]]):
        runpy.run_path(str(REPO / "scripts" / "read_through.py"), run_name="__main__")
    oracle = json.loads((tmp_path / "rt" / "rows.jsonl").read_text().splitlines()[1])
    assert oracle["rewriter"] == "oracle scene lists" and "rewriter/objects_named" not in oracle
    assert 0.0 <= oracle["object_exact"] <= 1.0 and "chance/object_exact" in oracle
    specs = (tmp_path / "rt" / "eval" / "read_through-oracle-test" / "specs.jsonl").read_text().splitlines()
    assert len(specs) == 2


def test_demo_steps_and_rewriter_settings_are_checked(tmp_path):
    assert demo._stage_steps("stage2:2400, stage3:300") == {"stage2": 2400, "stage3": 300}
    for bad in ("stage9:10", "stage2:", "stage2:0", "stage2=5"):
        with pytest.raises(SystemExit, match="DEMO_STEPS: bad entry"):
            demo._stage_steps(bad)
    stage2 = demo._stages(tmp_path)[2]
    args = demo._args(stage2, tmp_path, "short", {"stage2": 77})
    assert args[-1] == "--trainer.max_steps=77" and "--trainer.max_steps=130" in args  # the later value wins
    assert demo._rewriter_setting("0") == (False, None) and demo._rewriter_setting("1") == (True, None)
    with pytest.raises(SystemExit, match="DEMO_REWRITER=.*no config.json"):
        demo._rewriter_setting(str(tmp_path))
    (tmp_path / "rw").mkdir()
    (tmp_path / "rw" / "config.json").write_text("{}")
    on, path = demo._rewriter_setting(str(tmp_path / "rw"))
    stages = demo._stages(tmp_path / "demo", rewriter=on, rewriter_dir=path)
    assert "rewriter" not in [s.name for s in stages]  # a given rewriter is not trained again
    assert f"--model.init_args.text_rewriter.init_args.pretrained={path}" in stages[-1].overrides
    # DEMO_TRAIN_TEXT=scene_list: stages 2-3 train on scene lists, after the rewriter config; stage 1 unchanged
    assert demo._train_text_setting("") == "paragraph" and demo._train_text_setting("scene_list") == "scene_list"
    with pytest.raises(SystemExit, match="DEMO_TRAIN_TEXT=lists"):
        demo._train_text_setting("lists")
    stages = demo._stages(tmp_path / "demo", rewriter=on, rewriter_dir=path, train_text="scene_list")
    for stage in stages:
        if stage.name in ("stage2", "stage3"):
            assert [Path(c).name for c in stage.configs[-2:]] == ["rewriter.yaml", "train_on_scene_lists.yaml"]
        else:
            assert not any(c.endswith("train_on_scene_lists.yaml") for c in stage.configs)
