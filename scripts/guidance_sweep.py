"""How much does classifier-free guidance buy a trained run? Samples and scores the same paragraphs at several
guidance scales (same seeds, EMA weights) and prints one row of ParaShapes scores per scale.

    python scripts/guidance_sweep.py runs/demo/stage3/run                       # heldout, 48 paragraphs
    python scripts/guidance_sweep.py runs/full/stage2/run --split test --scales 1 3 7.5 --json out.jsonl

A model that reads its text only faintly (text use ~1.01) predicts almost the same with and without the paragraph;
guidance multiplies that difference, so a sweep separates "the model knows but says it softly" from "the model does
not know". Scale 1 is plain conditional sampling (no unconditional pass). ``ch_*`` columns: the same images judged
against the next scene's paragraph (the chance level; see ``evaluate_split``).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


from paradiffusion.cli import load_module
from paradiffusion.evaluate import SamplingSettings
from parashapes.evaluate import evaluate_split
from parashapes.metric import HEADLINE


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path, help="a run directory with config.yaml and checkpoints/")
    p.add_argument("--ckpt", default="last.ckpt", help="checkpoint file name under <run>/checkpoints")
    p.add_argument("--split", default="heldout")
    p.add_argument("--n", type=int, default=48)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=20, help="sampler steps")
    p.add_argument("--scales", type=float, nargs="+", default=[1.0, 3.0, 5.0, 7.5, 10.0])
    p.add_argument("--out", type=Path, default=None, help="also save each scale's images under OUT/cfg<scale>/")
    p.add_argument("--json", type=Path, default=None, help="append one JSON line per scale")
    a = p.parse_args()
    for scale in a.scales:
        if scale < 1:
            raise SystemExit(f"--scales: guidance scale must be >= 1, got {scale}")

    module = load_module(str(a.run / "config.yaml"), str(a.run / "checkpoints" / a.ckpt)).eval()
    pipeline = module.make_pipeline(use_ema=True)
    cols = [*HEADLINE, "chance/presence", "chance/position", "chance/shape"]  # judged against another scene
    print(f"{'scale':>6} " + " ".join(f"{k.replace('chance/', 'ch_'):>12}" for k in cols) + f" {'sec':>5}")
    for scale in a.scales:
        t0 = time.time()
        settings = SamplingSettings(num_inference_steps=a.steps, guidance_scale=scale)
        out = a.out / f"cfg{scale:g}" if a.out else None
        scores = evaluate_split(pipeline, a.split, n=a.n, seed=a.seed, settings=settings, out_dir=out)
        sec = time.time() - t0
        print(f"{scale:>6g} " + " ".join(f"{scores.get(k, float('nan')):>12.3f}" for k in cols) + f" {sec:>5.0f}",
              flush=True)
        if a.json:
            row = {"run": str(a.run), "ckpt": a.ckpt, "split": a.split, "n": a.n, "seed": a.seed, "steps": a.steps,
                   "guidance_scale": scale, "scores": scores}
            with a.json.open("a") as f:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
