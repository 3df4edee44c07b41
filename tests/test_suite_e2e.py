"""The whole suite end to end on CPU, through the real entry points: the demo's stage 1 -> 3 chain (smoke budget),
`paradiffusion test` from a saved run, `generate` from a checkpoint and from an exported pipeline, and the
analysis notebook executed headless on the run's output."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from paradiffusion.cli import main as cli_main

REPO = Path(__file__).resolve().parents[1]


def _load_script(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


demo = _load_script("demo")


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """`make demo` shrunk with the flags the tests use: 2 steps a stage, SmolLM2 cut to 2 blocks, 4 paragraphs per
    evaluation; stages 2-3 add LoRA in the top block (the joint-training arm), so its export path runs too."""
    root = tmp_path_factory.mktemp("demo")
    assert demo.main(["--budget", "smoke", "--out", str(root), "--cache", str(root / "text_cache"), "--eval-n", "4",
                      "--late-config", str(REPO / "experiments" / "tiny" / "lora_top.yaml")]) == 0
    return root


def test_demo_chain_writes_every_stage(demo_run):
    summary = json.loads((demo_run / "summary.json").read_text())
    assert [(r["stage"], r["split"]) for r in summary["rows"]] == [
        (s, split) for s in ("stage1", "stage2", "stage3") for split in ("test", "heldout")]
    for row in summary["rows"]:
        for key in ("object_exact", "scene_exact", "presence", "background"):
            lo, hi = row["ci"][key]
            assert 0.0 <= lo <= row["scores"][key] <= hi <= 1.0, (key, row)
            # the chance level: the same images judged against the next scene's paragraph, with its interval
            assert 0.0 <= row["scores"][f"chance/{key}"] <= 1.0 and len(row["ci"][f"chance/{key}"]) == 2
        assert "by_mention/0-76/object_exact" in row["scores"]
        assert (demo_run / "eval" / row["stage"] / row["split"] / "grid.png").exists()
        assert len(list((demo_run / "eval" / row["stage"] / row["split"] / "images").glob("*.png"))) == 4
    for stage in ("stage1", "stage2", "stage3"):
        run = demo_run / stage / "run"
        assert (run / "checkpoints" / "last.ckpt").exists()
        assert (run / "config.yaml").exists()
        assert list(run.glob("events.out.tfevents.*"))
        assert list((run / "samples").glob("step_*.png")), "validation samples are written"
    # stage 2 started from stage 1's weights, stage 3 from stage 2's; every stage read the text cache
    cfg2 = (demo_run / "stage2" / "run" / "config.yaml").read_text()
    assert str(demo_run / "stage1" / "run" / "checkpoints" / "last.ckpt") in cfg2
    caches = sorted(p.name for p in (demo_run / "text_cache").iterdir())
    assert len(caches) == 2 and {c.rsplit("-", 2)[1] for c in caches} == {"p1", "p2"}  # LoRA top block / frozen
    assert (demo_run / "export" / "model_index.json").is_file() and (demo_run / "export" / "text_encoder_lora").is_dir()


def test_demo_arguments_are_checked(tmp_path):
    assert demo.parse_steps("stage2:2400, stage3:300") == {"stage2": 2400, "stage3": 300}
    for bad in ("stage9:10", "stage2:", "stage2:0", "stage2=5"):
        with pytest.raises(SystemExit, match="--steps: bad entry"):
            demo.parse_steps(bad)
    with pytest.raises(SystemExit, match="no such file: no_such.yaml"):
        demo.main(["--config", "no_such.yaml", "--out", str(tmp_path)])
    late = [str(REPO / "experiments" / "tiny" / "lora_top.yaml")]
    for stage in ("stage1", "stage2", "stage3"):
        args = demo.stage_args(stage, tmp_path, tmp_path / "c", 0, [], "short", {"stage2": 77}, late)
        configs = [args[i + 1] for i, a in enumerate(args) if a == "--config"]
        assert configs[2].endswith(f"{stage}.yaml") and (late[0] in configs) == (stage != "stage1")
        if stage == "stage2":  # --steps wins over the budget: it comes later
            assert args[-1] == "--trainer.max_steps=77"
    # --stage-config: one stage's own configs, after every other config of that stage
    gentle = REPO / "experiments" / "tiny" / "stage3_gentle.yaml"
    own = demo.parse_stage_configs([f"stage3:{gentle}"])
    assert own == {"stage3": [gentle.resolve()]}
    for stage in ("stage1", "stage2", "stage3"):
        args = demo.stage_args(stage, tmp_path, tmp_path / "c", 0, [], "short", {}, late, own)
        configs = [args[i + 1] for i, a in enumerate(args) if a == "--config"]
        assert (str(gentle.resolve()) in configs) == (stage == "stage3")
        assert stage != "stage3" or configs[-1] == str(gentle.resolve())
    for bad, message in (("stage9:x.yaml", "bad entry"), ("stage3", "bad entry"), ("stage3:nofile.yaml", "no such file")):
        with pytest.raises(SystemExit, match=f"--stage-config: {message}"):
            demo.parse_stage_configs([bad])


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
    assert (tmp_path / "pipe" / "unet").is_dir() and (tmp_path / "pipe" / "text_encoder_lora").is_dir()  # LoRA arm
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
    analysis = _load_script("analysis")
    learning_curve, markdown_table, stage_end_minutes = (analysis.learning_curve, analysis.markdown_table,
                                                         analysis.stage_end_minutes)

    rows = learning_curve(demo_run)
    assert {r["stage"] for r in rows} == {"stage1", "stage2", "stage3"}
    minutes = [r["minutes"] for r in rows]
    assert minutes == sorted(minutes)
    assert all(0.0 <= r["object_exact"] <= 1.0 and 0.0 <= r["presence"] <= 1.0 for r in rows)
    ends = stage_end_minutes(demo_run)
    assert ends["stage1"] < ends["stage2"] < ends["stage3"]
    assert markdown_table(rows).count("\n") == len(rows) + 1
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        learning_curve(tmp_path)


def test_analysis_cli_picks_metrics(demo_run, tmp_path, capsys):
    analysis = _load_script("analysis")

    assert analysis.main([str(demo_run), "--metrics", "presence", "text_use", "--out", str(tmp_path / "c.png")]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert header == "| stage | step | minutes | presence | text_use |"
    assert (tmp_path / "c.png").stat().st_size > 0


def test_text_dependence_probe_on_a_saved_run(demo_run):
    from paradiffusion.cli import load_module
    from parashapes.evaluate import text_dependence

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


def test_demo_resume_continues_a_stage_and_retrains_the_ones_after_it(tmp_path, capsys):
    """`--resume`: a stage recorded with the same arguments resumes from its last.ckpt up to the budget asked for
    now (reused when already there); one that trains further makes the later stages start over (cleared)."""
    args = lambda stage, steps: demo.stage_args(stage, tmp_path, tmp_path / "c", 0, [], "short", steps)
    s1, s2 = tmp_path / "stage1", tmp_path / "stage2"
    assert demo.resume_point(s1, args("stage1", {}), resume=True) == (None, True)  # nothing yet: trains
    assert (s1 / "demo_args.json").is_file()
    ckpt = s1 / "run" / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    torch.save({"global_step": 300}, ckpt)
    assert demo.resume_point(s1, args("stage1", {}), resume=True) == (ckpt, False)  # at its budget: reused
    assert demo.resume_point(s1, args("stage1", {"stage1": 500}), resume=True) == (ckpt, True)  # trains on
    assert (s1 / "demo_args.json").is_file() and ckpt.is_file()
    # other arguments (another seed) or a budget below what was trained: not resumable, the stage is cleared
    other = demo.stage_args("stage1", tmp_path, tmp_path / "c", 1, [], "short", {})
    assert demo.resume_point(s1, other, resume=True) == (None, True) and not ckpt.exists()
    # without --resume the stage always starts over
    (s2 / "stale.txt").parent.mkdir(parents=True)
    (s2 / "stale.txt").write_text("x")
    assert demo.resume_point(s2, args("stage2", {}), resume=False) == (None, True)
    assert not (s2 / "stale.txt").exists()
    # the recorded arguments name the repository's configs by their path inside it
    assert "experiments/base.yaml" in json.loads((s2 / "demo_args.json").read_text())
