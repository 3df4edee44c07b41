"""Does a trained run use its text? Prints the denoising loss with true, shuffled and empty paragraphs.

    python scripts/text_dependence.py runs/demo/stage1/run            # last.ckpt, EMA weights, ParaShapes `val`
    python scripts/text_dependence.py runs/demo/stage2/run --split test --n 64

`shuffled_over_true` near 1.00 means the model ignores its paragraphs (see parashapes.evaluate.text_dependence).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from paradiffusion.cli import load_module
from parashapes.evaluate import text_dependence


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path, help="a run directory with config.yaml and checkpoints/")
    p.add_argument("--ckpt", default="last.ckpt", help="checkpoint file name under <run>/checkpoints")
    p.add_argument("--split", default="val")
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--raw", action="store_true", help="use the raw weights instead of the EMA")
    a = p.parse_args()
    module = load_module(str(a.run / "config.yaml"), str(a.run / "checkpoints" / a.ckpt)).eval()
    if not a.raw:
        module.load_ema_weights()
    print(json.dumps(text_dependence(module, split=a.split, n=a.n), indent=1))


if __name__ == "__main__":
    main()
