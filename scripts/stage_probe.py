"""A short training probe: fit a tiny stage for N steps from scratch with extra overrides, then score `heldout`
samples with the judge and measure text use (shuffled/true denoising loss on `val`), EMA weights.

    python scripts/stage_probe.py --name base --steps 300
    python scripts/stage_probe.py --name pooled --steps 300 \\
        --model.init_args.unet.init_args.class_embed_type=projection \\
        --model.init_args.unet.init_args.projection_class_embeddings_input_dim=256

Stage 1 for 300 steps takes ~4.6 min of training plus ~1.5 min of evaluation on 2 cores. One JSON line per probe is
appended to `<--out>/results.jsonl` (default runs/probes/results.jsonl). On a GPU, train for a wall-clock budget
instead of a step count and validate (scores + text use in TensorBoard) along the way:

    python scripts/stage_probe.py --name long --accelerator gpu --max_time 00:00:05:00 --val_every 500
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from paradiffusion.cli import ParaDiffusionCLI
from paradiffusion.evaluate import SamplingSettings
from parashapes.evaluate import evaluate_split, text_dependence

KEYS = ("object_exact", "presence", "position", "size", "shape", "background")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--name", required=True)
    p.add_argument("--stage", type=int, default=1, choices=[1, 2, 3])
    p.add_argument("--steps", type=int, default=300, help="optimizer steps (an upper bound with --max_time)")
    p.add_argument("--max_time", default=None, help="wall-clock training budget DD:HH:MM:SS (then --steps is a cap)")
    p.add_argument("--val_every", type=int, default=None, help="validation interval in steps (default: at the end)")
    p.add_argument("--accelerator", default="cpu")
    p.add_argument("--lm", default="runs/demo/stage0/hf", help="the stage-0 LM directory (written by make demo)")
    p.add_argument("--n", type=int, default=48, help="heldout paragraphs sampled and scored")
    p.add_argument("--out", type=Path, default=Path("runs/probes"))
    a, extra = p.parse_known_args()
    t0 = time.time()
    cli = ParaDiffusionCLI(args=[
        "fit", "--config", "experiments/base.yaml", "--config", "experiments/model/tiny.yaml",
        "--config", f"experiments/tiny/stage{a.stage}.yaml", f"--model.init_args.text_encoder.init_args.pretrained={a.lm}",
        "--model.init_args.init_from=null", f"--trainer.logger.init_args.save_dir={a.out / a.name}",
        f"--trainer.max_steps={a.steps}", f"--trainer.val_check_interval={a.val_every or a.steps}",
        f"--trainer.accelerator={a.accelerator}", "--trainer.enable_progress_bar=false",
        *([f"--trainer.max_time={a.max_time}"] if a.max_time else []), *extra])
    fit_min = (time.time() - t0) / 60
    model = cli.model.eval()
    if a.accelerator == "gpu":
        model.cuda()  # the trainer hands the module back on the CPU after fit
    model.load_ema_weights()
    scores = evaluate_split(model.make_pipeline(use_ema=False), "heldout", n=a.n, seed=0, settings=SamplingSettings())
    td = text_dependence(model, split="val", n=64)
    td_train = text_dependence(model, split=f"stage{a.stage}", n=64)  # on the text style this stage trains on
    device = torch.cuda.get_device_name() if a.accelerator == "gpu" else "cpu"
    row = {"name": a.name, "stage": a.stage, "steps": cli.trainer.global_step, "extra": extra,
           "fit_min": round(fit_min, 2), "device": device, **{k: round(scores[k], 3) for k in KEYS if k in scores},
           "text_use": round(td["shuffled_over_true"], 4),
           f"text_use_stage{a.stage}": round(td_train["shuffled_over_true"], 4),
           "t900_true_shuffled": [round(td["loss_true/t=900"], 4), round(td["loss_shuffled/t=900"], 4)]}
    print(json.dumps(row), flush=True)
    with open(a.out / "results.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
