"""Can the tiny model learn to use its text at all? Overfit 8 fixed stage-1 caption/image pairs, then run the
text-dependence probe on those same 8 pairs (the loss with their own captions vs. shifted vs. empty ones).

    python scripts/overfit_text_probe.py --lm runs/demo/stage0/hf --steps 300
    python scripts/overfit_text_probe.py --lm runs/demo/stage0/hf --steps 300 --model.init_args.min_snr_gamma=null

Extra arguments are passed to `paradiffusion fit` (tiny stage-1 config, random init, batch 8, ~1.5 min on 2 cores).
A model that can read its captions memorises them: `shuffled_over_true` well above 1.
"""
from __future__ import annotations

import argparse
import json
import tempfile

from paradiffusion.cli import ParaDiffusionCLI
from parashapes.evaluate import text_dependence


def overfit_text_probe(lm: str, steps: int = 300, extra: list[str] | None = None) -> dict[str, float]:
    """Fit the tiny stage-1 model on 8 fixed caption/image pairs for `steps` steps; the text-dependence losses on
    those same 8 pairs (`parashapes.evaluate.text_dependence`)."""
    with tempfile.TemporaryDirectory() as tmp:
        cli = ParaDiffusionCLI(args=[
            "fit", "--config", "experiments/base.yaml", "--config", "experiments/model/tiny.yaml",
            "--config", "experiments/tiny/stage1.yaml", f"--model.init_args.text_encoder.init_args.pretrained={lm}",
            "--model.init_args.init_from=null", f"--trainer.logger.init_args.save_dir={tmp}",
            f"--trainer.default_root_dir={tmp}", f"--trainer.max_steps={steps}", "--trainer.limit_val_batches=0",
            "--trainer.enable_progress_bar=false", "--data.init_args.n_train=8", "--data.init_args.batch_size=8",
            "--model.init_args.warmup_steps=20", *(extra or [])])
        return text_dependence(cli.model.eval(), split="stage1", n=8, seed=0)  # the 8 training pairs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lm", default="runs/demo/stage0/hf", help="the stage-0 LM directory (written by make demo)")
    p.add_argument("--steps", type=int, default=300)
    a, extra = p.parse_known_args()
    out = overfit_text_probe(a.lm, a.steps, extra)
    print(json.dumps({k: round(v, 4) for k, v in out.items()}, indent=1))


if __name__ == "__main__":
    main()
