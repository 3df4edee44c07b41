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
e.g. ``DEMO_CONFIG=experiments/tiny/attn_lora.yaml``).
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


def _stages(root: Path, extra: list[str] = ()) -> list[Stage]:
    base, model = str(EXPERIMENTS / "base.yaml"), str(EXPERIMENTS / "model" / "tiny.yaml")
    lm_dir = root / "stage0" / "hf"
    encoder = [f"--model.init_args.text_encoder.init_args.pretrained={lm_dir}"]

    def ckpt(stage: str) -> str:
        return f"--model.init_args.init_from={root / stage / 'run' / 'checkpoints' / 'last.ckpt'}"

    return [
        Stage("stage0", [str(EXPERIMENTS / "tiny" / "stage0_lm.yaml")], 200,
              [f"--model.init_args.export_dir={lm_dir}", f"--trainer.default_root_dir={root / 'stage0'}",
               f"--trainer.logger.init_args.save_dir={root / 'stage0'}"]),
        Stage("stage1", [base, model, str(EXPERIMENTS / "tiny" / "stage1.yaml"), *extra], 220, encoder),
        Stage("stage2", [base, model, str(EXPERIMENTS / "tiny" / "stage2.yaml"), *extra], 130, encoder + [ckpt("stage1")]),
        Stage("stage3", [base, model, str(EXPERIMENTS / "tiny" / "stage3.yaml"), *extra], 60, encoder + [ckpt("stage2")]),
    ]


def _smoke(stage: Stage) -> list[str]:
    """The whole chain in seconds (tests/CI): 2 steps a stage, tiny data, one validation each."""
    args = ["--trainer.max_steps=2", "--trainer.val_check_interval=2", "--trainer.log_every_n_steps=1"]
    if stage.name == "stage0":
        return args + ["--data.init_args.n_per_split=60", "--data.init_args.batch_size=2", "--data.init_args.seq_len=128"]
    args += ["--data.init_args.n_val=4", "--data.init_args.batch_size=4", "--trainer.num_sanity_val_steps=0"]
    return args + (["--data.init_args.n_train=8"] if stage.name == "stage3" else [])


def _args(stage: Stage, root: Path, budget: str) -> list[str]:
    args: list[str] = []
    for c in stage.configs:
        args += ["--config", c]
    if stage.name != "stage0":
        args.append(f"--trainer.logger.init_args.save_dir={root}")
    args += stage.overrides
    if budget == "short":
        args.append(f"--trainer.max_steps={stage.short_steps}")
    elif budget == "smoke":
        args += _smoke(stage)
    return args


def _evaluate(module, name: str, root: Path, n: int, split: str = "heldout") -> dict[str, float]:
    pipeline = module.make_pipeline(use_ema=True)
    t0 = time.time()
    out = root / "eval" / (name if split == "heldout" else f"{name}-{split}")
    scores = evaluate_split(pipeline, split, n=n, seed=0, settings=SamplingSettings(), out_dir=out)
    print(f"[demo] {name}: sampled and scored {n} {split} paragraphs in {time.time() - t0:.0f}s: "
          + ", ".join(f"{k}={scores[k]:.3f}" for k in HEADLINE if k in scores)
          + (f" (chance: presence={scores['chance/presence']:.3f}, object_exact={scores['chance/object_exact']:.3f})"
             if "chance/presence" in scores else ""), flush=True)
    return scores


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
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    root.mkdir(parents=True, exist_ok=True)
    started = time.time()
    rows: list[dict] = []
    print(f"[demo] budget={budget}; writing to {root}" + (f"; extra configs: {' '.join(extra)}" if extra else ""),
          flush=True)

    for stage in _stages(root, extra):
        args = _args(stage, root, budget)
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
        if stage.name == "stage0":
            print(f"[demo] stage0: language model exported to {root / 'stage0' / 'hf'} ({minutes:.1f} min)", flush=True)
            continue
        rows.append({"stage": stage.name, "minutes": minutes, "scores": _evaluate(cli.model, stage.name, root, n_eval)})
        if stage.name == "stage3":  # the final model on the in-distribution phrasing too
            rows[-1]["test_scores"] = _evaluate(cli.model, stage.name, root, n_eval, split="test")
        rows[-1]["text_use"] = _text_use(cli.model, n_eval)
        summary = {"budget": budget, "extra_configs": extra, "eval_split": "heldout", "eval_n": n_eval, "rows": rows,
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
    print(f"\n[demo] total {total:.1f} min. Images: {root / 'eval'}/<stage>/grid.png; summary: {root / 'summary.json'}")
    print(f"[demo] TensorBoard: tensorboard --logdir {root}")
    print(f"[demo] Analysis notebook: PARADIFFUSION_RUN={root} .venv/bin/jupyter-execute notebooks/analysis.ipynb")
    return 0


if __name__ == "__main__":
    sys.exit(main())
