"""Score a trained run on a ParaShapes split, optionally read through another text rewriter (DEMO_REWRITER runs).

    python scripts/read_through.py --config runs/s9/chain/stage3/run/config.yaml \\
        --ckpt_path runs/s9/chain/stage3/run/checkpoints/last.ckpt --split test --n 96 \\
        [--rewriter runs/tiny/rewriter/hf | --oracle] --out runs/read_through

The same sampling, seeds, chance rows and restatement scores as the demo's per-stage evaluation
(`paradiffusion.demo._evaluate`: DPM-Solver++ 20 steps, CFG 3, EMA weights, image i with seed i). The rewriter's
weights are never in checkpoints, so `--rewriter` swaps it without touching the trained model. `--oracle` reads each
scene's canonical scene list instead (no rewriter): what the model draws from a perfect restatement, i.e. the cap a
better rewriter could reach with this UNet. Appends one JSON row to `<out>/rows.jsonl`.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from paradiffusion import demo
from paradiffusion.cli import load_module


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", action="append", required=True, help="the run's config.yaml (repeatable)")
    p.add_argument("--ckpt_path", required=True)
    group = p.add_mutually_exclusive_group()
    group.add_argument("--rewriter", help="read through this rewriter LM directory instead of the run's own")
    group.add_argument("--oracle", action="store_true", help="read the scenes' oracle scene lists (no rewriter)")
    p.add_argument("--split", default="test")
    p.add_argument("--n", type=int, default=96)
    p.add_argument("--name", default="read_through")
    p.add_argument("--out", type=Path, default=Path("runs/read_through"))
    a = p.parse_args()
    configs = list(a.config)
    with tempfile.TemporaryDirectory() as tmp:
        if a.rewriter:
            override = Path(tmp) / "rewriter.yaml"
            override.write_text("model:\n  init_args:\n    text_rewriter:\n      class_path: "
                                f"paradiffusion.models.rewriter.TextRewriter\n      init_args:\n"
                                f"        pretrained: {json.dumps(str(a.rewriter))}\n")
            configs.append(str(override))
        t0 = time.time()
        module = load_module(configs, a.ckpt_path)
    a.out.mkdir(parents=True, exist_ok=True)
    if a.oracle:
        from paradiffusion.parashapes.describe import scene_list

        module.text_rewriter, rewriter = None, "oracle scene lists"
        scores = demo._evaluate(module, f"{a.name}-oracle", a.out, a.n, split=a.split, describe=scene_list)
    else:
        rewriter = module.text_rewriter.pretrained if module.text_rewriter is not None else None
        scores = demo._evaluate(module, a.name, a.out, a.n, split=a.split)
    row = {"name": a.name, "config": configs[: len(a.config)], "ckpt_path": a.ckpt_path, "rewriter": rewriter,
           "split": a.split, "n": a.n, "minutes": (time.time() - t0) / 60,
           **{k: v for k, v in scores.items() if "/by_" not in k}}
    with (a.out / "rows.jsonl").open("a") as f:
        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
