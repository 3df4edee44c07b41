"""``make demo``: every training stage of the paper, end to end, at tiny scale on a CPU, offline, from nothing.

stage 0 (a small Llama, pretrained here as a causal LM) -> stage 1 (short captions) -> stage 2 (long paragraphs,
LoRA on the LLM jointly with the UNet) -> stage 3 (small curated set). After each stage it samples images for
ParaShapes ``heldout`` paragraphs (phrasing never seen in training) with the EMA weights and scores them with the
ParaShapes judge; the untrained and the final model are also scored on ``test`` paragraphs (training phrasing, unseen
scenes). It ends with the tables: faithfulness per stage next to the untrained model's.

Budget (environment variable ``DEMO_BUDGET``):
  ``short`` (default) — shortened step budgets, 12–14 minutes on 2 cores (at most 20);
  ``full``            — the step budgets written in ``experiments/tiny/*.yaml`` (the full tiny schedule);
  ``smoke``           — 2 steps a stage on tiny data: checks the whole chain in a minute (used by the tests).
Other knobs: ``DEMO_DIR`` (default ``runs/demo``), ``DEMO_EVAL_N`` (paragraphs scored per stage and split, default 48),
``DEMO_CONFIG`` (extra ``--config`` files, comma- or space-separated, added after the stage config of stages 1-3,
e.g. ``DEMO_CONFIG=experiments/tiny/attn_lora.yaml``), ``DEMO_REWRITER=1`` (the summarise-then-read option: a
second stage-0 LM is trained to restate paragraphs as scene lists, ``experiments/tiny/stage0_rewriter.yaml``, and
stages 2-3 read its restatements, ``experiments/tiny/rewriter.yaml``; the demo also scores the restatements;
``DEMO_REWRITER=DIR`` reads with an already trained rewriter in DIR instead of training one), ``DEMO_TRAIN_TEXT``
(``paragraph``, the default, or ``scene_list``: stages 2-3 train on the scenes' canonical scene lists,
``experiments/tiny/train_on_scene_lists.yaml``; with ``DEMO_REWRITER`` the model then reads restatements only where
it draws paragraphs), ``DEMO_STEPS``
(per-stage step budgets that override the budget's, e.g. ``DEMO_STEPS=stage2:2400,stage3:300``).
"""
from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from paradiffusion.cli import ParaDiffusionCLI
from paradiffusion.evaluate import SamplingSettings, evaluate_split, text_dependence

REPO = Path(__file__).resolve().parents[2]
EXPERIMENTS = REPO / "experiments"
HEADLINE = ("object_exact", "scene_exact", "presence", "position", "size", "shape", "background")


@dataclass
class Stage:
    name: str
    configs: list[str]
    short_steps: int  # the DEMO_BUDGET=short budget; `full` keeps the config's own max_steps
    overrides: list[str] = field(default_factory=list)


def _extra_configs(value: str) -> list[str]:
    """DEMO_CONFIG: extra config files for the diffusion stages; a missing file is named before anything runs."""
    paths = [p for p in re.split(r"[,\s]+", value.strip()) if p]
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        raise SystemExit(f"DEMO_CONFIG: no such config file: {', '.join(missing)}")
    return [str(Path(p).resolve()) for p in paths]


def _lm_stage(name: str, configs: list[str], short_steps: int, root: Path) -> Stage:
    """A stage-0 language model run under `root/name`, exported to `root/name/hf`."""
    return Stage(name, configs, short_steps,
                 [f"--model.init_args.export_dir={root / name / 'hf'}", f"--trainer.default_root_dir={root / name}",
                  f"--trainer.logger.init_args.save_dir={root / name}"])


def _rewriter_setting(value: str) -> tuple[bool, Path | None]:
    """DEMO_REWRITER: off ("", 0, false, no), on (train one), or the directory of a trained rewriter LM."""
    if value.strip().lower() in ("", "0", "false", "no"):
        return False, None
    if value.strip().lower() in ("1", "true", "yes"):
        return True, None
    path = Path(value).resolve()
    if not (path / "config.json").is_file():
        raise SystemExit(f"DEMO_REWRITER={value}: expected 1/0 or a rewriter LM directory (no config.json there)")
    return True, path


def _train_text_setting(value: str) -> str:
    """DEMO_TRAIN_TEXT: what stages 2-3 train on, `paragraph` (default) or `scene_list`."""
    from paradiffusion.parashapes.dataset import TEXT_KINDS  # the kinds a ParaShapes dataset can pair with images

    value = value.strip() or "paragraph"
    if value not in TEXT_KINDS:
        raise SystemExit(f"DEMO_TRAIN_TEXT={value}: expected one of {TEXT_KINDS}")
    return value


def _stages(root: Path, extra: list[str] = (), rewriter: bool = False, rewriter_dir: Path | None = None,
            train_text: str = "paragraph") -> list[Stage]:
    base, model = str(EXPERIMENTS / "base.yaml"), str(EXPERIMENTS / "model" / "tiny.yaml")
    lm_config = str(EXPERIMENTS / "tiny" / "stage0_lm.yaml")
    encoder = [f"--model.init_args.text_encoder.init_args.pretrained={root / 'stage0' / 'hf'}"]
    # summarise-then-read: stages 2-3 read the rewriter's restatements (stage 1's captions are read as they are)
    rewriter_dir = rewriter_dir or root / "rewriter" / "hf"
    reads = ([str(EXPERIMENTS / "tiny" / "rewriter.yaml")], [f"--model.init_args.text_rewriter.init_args.pretrained="
                                                             f"{rewriter_dir}"]) if rewriter else ([], [])
    if train_text == "scene_list":  # stages 2-3 train on accurate lists (the rewriter, if any, reads paragraphs)
        reads = ([*reads[0], str(EXPERIMENTS / "tiny" / "train_on_scene_lists.yaml")], reads[1])

    def ckpt(stage: str) -> str:
        return f"--model.init_args.init_from={root / stage / 'run' / 'checkpoints' / 'last.ckpt'}"

    return [
        _lm_stage("stage0", [lm_config], 200, root),
        *([_lm_stage("rewriter", [lm_config, str(EXPERIMENTS / "tiny" / "stage0_rewriter.yaml")], 400, root)]
          if rewriter and rewriter_dir == root / "rewriter" / "hf" else []),
        Stage("stage1", [base, model, str(EXPERIMENTS / "tiny" / "stage1.yaml"), *extra], 220, encoder),
        Stage("stage2", [base, model, str(EXPERIMENTS / "tiny" / "stage2.yaml"), *extra, *reads[0]], 130,
              encoder + [ckpt("stage1")] + reads[1]),
        Stage("stage3", [base, model, str(EXPERIMENTS / "tiny" / "stage3.yaml"), *extra, *reads[0]], 60,
              encoder + [ckpt("stage2")] + reads[1]),
    ]


def _smoke(stage: Stage) -> list[str]:
    """The whole chain in seconds (tests/CI): 2 steps a stage, tiny data, one validation each."""
    args = ["--trainer.max_steps=2", "--trainer.val_check_interval=2", "--trainer.log_every_n_steps=1"]
    if stage.name == "stage0":
        return args + ["--data.init_args.n_per_split=60", "--data.init_args.batch_size=2", "--data.init_args.seq_len=128"]
    if stage.name == "rewriter":  # documents must fit whole (a stage-2 paragraph and its scene list: < 512 tokens)
        return args + ["--data.init_args.n_per_split=30", "--data.init_args.batch_size=2"]
    args += ["--data.init_args.n_val=4", "--data.init_args.batch_size=4", "--trainer.num_sanity_val_steps=0"]
    return args + (["--data.init_args.n_train=8"] if stage.name == "stage3" else [])


def _stage_steps(value: str) -> dict[str, int]:
    """DEMO_STEPS: "stage2:2400,stage3:300" -> {"stage2": 2400, "stage3": 300}; a bad entry is named."""
    steps = {}
    for entry in (e for e in re.split(r"[,\s]+", value.strip()) if e):
        name, _, n = entry.partition(":")
        if name not in ("stage0", "rewriter", "stage1", "stage2", "stage3") or not n.isdigit() or int(n) < 1:
            raise SystemExit(f"DEMO_STEPS: bad entry {entry!r}; expected <stage>:<steps>, e.g. stage2:2400 "
                             "(stages: stage0, rewriter, stage1, stage2, stage3)")
        steps[name] = int(n)
    return steps


def _args(stage: Stage, root: Path, budget: str, steps: dict[str, int] | None = None) -> list[str]:
    args: list[str] = []
    for c in stage.configs:
        args += ["--config", c]
    if stage.name not in ("stage0", "rewriter"):
        args.append(f"--trainer.logger.init_args.save_dir={root}")
    args += stage.overrides
    if budget == "short":
        args.append(f"--trainer.max_steps={stage.short_steps}")
    elif budget == "smoke":
        args += _smoke(stage)
    if steps and stage.name in steps:
        args.append(f"--trainer.max_steps={steps[stage.name]}")
    return args


def _evaluate(module, name: str, root: Path, n: int, split: str = "heldout", describe=None) -> dict[str, float]:
    """Sample and score `n` paragraphs of `split` (or the scenes worded by `describe(spec_dict)`)."""
    pipeline = module.make_pipeline(use_ema=True)
    t0 = time.time()
    out = root / "eval" / (name if split == "heldout" else f"{name}-{split}")
    scores = evaluate_split(pipeline, split, n=n, seed=0, settings=SamplingSettings(), out_dir=out, describe=describe)
    if pipeline.text_rewriter is not None and describe is None:  # how well it restated them (cached: no new work)
        scores.update(_restatement_scores(pipeline, split, n, out))
    print(f"[demo] {name}: sampled and scored {n} {split} paragraphs in {time.time() - t0:.0f}s: "
          + ", ".join(f"{k}={scores[k]:.3f}" for k in HEADLINE if k in scores)
          + (f" (chance: presence={scores['chance/presence']:.3f}, object_exact={scores['chance/object_exact']:.3f})"
             if "chance/presence" in scores else ""), flush=True)
    return scores


def _restatement_scores(pipeline, split: str, n: int, out: Path) -> dict[str, float]:
    from paradiffusion.parashapes import generate_split
    from paradiffusion.parashapes.describe import score_restatements

    specs = generate_split(split, n, seed=0)
    restated = pipeline.restate([s.paragraph for s in specs])
    with (out / "restated.jsonl").open("w") as f:
        for spec, text in zip(specs, restated):
            f.write(json.dumps({"id": spec.id, "restated": text}) + "\n")
    scores = score_restatements(zip(specs, restated))
    print(f"[demo] rewriter on {n} {split} paragraphs: objects named exactly {scores['objects_named']:.3f}, "
          f"background {scores['background']:.3f}, whole scene lists {scores['summary_exact']:.3f}; colours named "
          f"{scores['color']:.3f}, of those size / shape / cell right {scores['size']:.3f} / {scores['shape']:.3f} / "
          f"{scores['cell']:.3f}", flush=True)
    return {f"rewriter/{k}": v for k, v in scores.items() if k != "n"}


def _text_use(module, n: int) -> float:
    """shuffled/true denoising-loss ratio on `val` paragraphs with the EMA weights (1.00: the text is ignored).
    Overwrites the module's raw weights with the EMA ones: call it last on a model the demo is done with."""
    module.load_ema_weights()
    with torch.no_grad():
        ratio = text_dependence(module.eval(), split="val", n=n)["shuffled_over_true"]
    print(f"[demo] text use (shuffled/true loss on {n} val paragraphs): {ratio:.4f}", flush=True)
    return ratio


def _table(rows: list[dict], key: str = "scores") -> str:
    text_use = key == "scores"  # the ratio belongs to the model, printed once, in the heldout table
    head = (f"{'stage':<10} {'train min':>9} " + " ".join(f"{k:>12}" for k in HEADLINE)
            + (f" {'text use':>9}" if text_use else ""))
    lines = [head, "-" * len(head)]
    for r in rows:
        if key in r:
            lines.append(f"{r['stage']:<10} {r['minutes']:>9.1f} "
                         + " ".join(f"{r[key].get(k, float('nan')):>12.3f}" for k in HEADLINE)
                         + (f" {r.get('text_use', float('nan')):>9.4f}" if text_use else ""))
            if f"chance/{HEADLINE[0]}" in r[key]:  # the same images judged against another scene's paragraph
                lines.append(f"{'  chance':<10} {'':>9} "
                             + " ".join(f"{r[key].get(f'chance/{k}', float('nan')):>12.3f}" for k in HEADLINE))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING)
    budget = os.environ.get("DEMO_BUDGET", "short")
    if budget not in ("short", "full", "smoke"):
        raise SystemExit(f"DEMO_BUDGET must be 'short', 'full' or 'smoke', got {budget!r}")
    root = Path(os.environ.get("DEMO_DIR", "runs/demo")).resolve()
    n_eval = int(os.environ.get("DEMO_EVAL_N", "48"))
    extra = _extra_configs(os.environ.get("DEMO_CONFIG", ""))
    rewriter, rewriter_dir = _rewriter_setting(os.environ.get("DEMO_REWRITER", "0"))
    steps = _stage_steps(os.environ.get("DEMO_STEPS", ""))
    train_text = _train_text_setting(os.environ.get("DEMO_TRAIN_TEXT", ""))
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    root.mkdir(parents=True, exist_ok=True)
    started = time.time()
    rows: list[dict] = []
    print(f"[demo] budget={budget}; writing to {root}" + (f"; extra configs: {' '.join(extra)}" if extra else "")
          + (f"; summarise-then-read (DEMO_REWRITER) with {rewriter_dir or 'a rewriter trained here'}"
             if rewriter else "")
          + ("; stages 2-3 train on scene lists (DEMO_TRAIN_TEXT)" if train_text == "scene_list" else ""), flush=True)

    for stage in _stages(root, extra, rewriter, rewriter_dir, train_text):
        args = _args(stage, root, budget, steps)
        if stage.name == "stage1":
            # The untrained baseline: stage 1's model before any diffusion training (LM from stage 0, random UNet).
            baseline = ParaDiffusionCLI(args=args, run=False).model
            baseline.configure_model()
            rows.append({"stage": "untrained", "minutes": 0.0, "scores": _evaluate(baseline, "untrained", root, n_eval),
                         "test_scores": _evaluate(baseline, "untrained", root, n_eval, split="test"),
                         "text_use": _text_use(baseline, n_eval)})
            del baseline
        print(f"\n[demo] === {stage.name}: paradiffusion fit {' '.join(args)}", flush=True)
        t0 = time.time()
        cli = ParaDiffusionCLI(args=["fit", *args])
        minutes = (time.time() - t0) / 60
        if stage.name in ("stage0", "rewriter"):
            print(f"[demo] {stage.name}: language model exported to {root / stage.name / 'hf'} ({minutes:.1f} min)",
                  flush=True)
            continue
        rows.append({"stage": stage.name, "minutes": minutes, "scores": _evaluate(cli.model, stage.name, root, n_eval)})
        if stage.name == "stage3":  # the final model on the in-distribution phrasing too
            rows[-1]["test_scores"] = _evaluate(cli.model, stage.name, root, n_eval, split="test")
        rows[-1]["text_use"] = _text_use(cli.model, n_eval)
        summary = {"budget": budget, "extra_configs": extra, "rewriter": str(rewriter_dir) if rewriter_dir else rewriter, "train_text": train_text, "steps": steps, "eval_split": "heldout", "eval_n": n_eval, "rows": rows,
                   "total_minutes": (time.time() - started) / 60}
        (root / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")

    total = (time.time() - started) / 60
    print("\n[demo] ParaShapes faithfulness on heldout paragraphs (unseen phrasing), EMA weights, "
          f"{n_eval} images per row, DPM-Solver++ 20 steps; 'chance' = the same images judged against the next "
          "scene's paragraph (what they score without following their own); text use = denoising loss with another "
          "image's paragraph over the loss with its own (1.00: the model ignores its text):\n")
    print(_table(rows))
    print(f"\n[demo] ... and on `test` paragraphs (the training phrasing, unseen scenes), {n_eval} images per row:\n")
    print(_table(rows, "test_scores"))
    if rewriter:
        print("\n[demo] the rewriter's restatements against the scenes' scene lists (objects named exactly / "
              "backgrounds right / whole lists exact):")
        for key, split in (("scores", "heldout"), ("test_scores", "test")):
            sc = rows[-1].get(key, {})
            if "rewriter/objects_named" in sc:
                print(f"  {split:<8} {sc['rewriter/objects_named']:.3f} / {sc['rewriter/background']:.3f} / "
                      f"{sc['rewriter/summary_exact']:.3f}")
    print(f"\n[demo] total {total:.1f} min. Images: {root / 'eval'}/<stage>/grid.png; summary: {root / 'summary.json'}")
    print(f"[demo] TensorBoard: tensorboard --logdir {root}")
    print(f"[demo] Analysis notebook: PARADIFFUSION_RUN={root} .venv/bin/jupyter-execute notebooks/analysis.ipynb")
    return 0


if __name__ == "__main__":
    sys.exit(main())
