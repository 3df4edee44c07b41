"""Is it the language or the drawing? Trains the tiny model on the same ParaShapes scenes described two ways and
scores both with the judge:

  * ``paragraph`` — the shipped stage-2 text (60-300 words, synonyms, coreference, distractors);
  * ``scene_list`` — an oracle description of the same scene in canonical words and fixed order,
    e.g. "gray background. large red circle at top-left. small blue square at center."

Same scenes, images, seeds, steps and starting weights; only the words differ. If the scene-list arm places objects
and the paragraph arm does not, the UNet can draw what it is told within this budget and the limit is reading the
paragraphs (the LM's states, the synonyms, the binding across sentences). If neither does, the limit is the number
of diffusion steps, whatever the text.

    python scripts/oracle_text_probe.py --steps 400 --lm runs/full/stage0/hf \\
        --init_from runs/full/stage1/run/checkpoints/last.ckpt          # ~25 min on 2 cores for both arms

Each arm appends one JSON line to ``<--out>/results.jsonl``: judge scores on ``--n`` `test` scenes sampled from that
arm's descriptions (EMA weights, DPM-Solver++ 20 steps, CFG 3) and text use on 64 `val` scenes in that arm's words.
Extra arguments are passed to the Lightning CLI (e.g. ``--model.init_args.lora_lr=5e-4``).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Iterator

from torch.utils.data import IterableDataset

from paradiffusion.cli import ParaDiffusionCLI
from paradiffusion.data import Stage2AlignmentData
from paradiffusion.evaluate import SamplingSettings, sample, score_with_chance, text_dependence
from paradiffusion.parashapes import generate_split

KEYS = ("object_exact", "scene_exact", "presence", "position", "size", "shape", "background")


def scene_list(spec: dict[str, Any]) -> str:
    """The oracle text: every attribute of every object, canonical words, one fixed pattern."""
    objects = [f"{o['size']} {o['color']} {o['shape']} at {o['position']}" for o in spec["objects"]]
    return ". ".join([f"{spec['background']} background", *objects]) + "."


DESCRIBE = {"paragraph": None, "scene_list": scene_list}


class _Described(IterableDataset):
    """A ParaShapes stream with each item's text replaced by ``describe(spec)``."""

    def __init__(self, stream: IterableDataset, describe) -> None:
        super().__init__()
        self.stream, self.describe = stream, describe

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for item in self.stream:
            yield {**item, "text": self.describe(item["spec"])}


class DescribedAlignmentData(Stage2AlignmentData):
    """Stage-2 scenes, training text from ``describe`` (validation is not run by this probe)."""

    def __init__(self, *args: Any, describe=None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.describe = describe

    def train_dataset(self):
        stream = super().train_dataset()
        return stream if self.describe is None else _Described(stream, self.describe)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arms", nargs="+", default=["scene_list", "paragraph"], choices=sorted(DESCRIBE))
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--lm", default="runs/demo/stage0/hf", help="the stage-0 LM directory")
    p.add_argument("--init_from", default=None, help="starting weights (e.g. a stage-1 last.ckpt); default: scratch")
    p.add_argument("--train_lm", action="store_true", help="train LoRA on the LM too (default: frozen LM)")
    p.add_argument("--n", type=int, default=48, help="`test` scenes sampled and scored per arm")
    p.add_argument("--out", type=Path, default=Path("runs/oracle"))
    a, extra = p.parse_known_args()
    a.out.mkdir(parents=True, exist_ok=True)
    for arm in a.arms:
        describe = DESCRIBE[arm]
        t0 = time.time()
        cli = ParaDiffusionCLI(run=False, args=[
            "--config", "experiments/base.yaml", "--config", "experiments/model/tiny.yaml",
            "--config", "experiments/tiny/stage2.yaml",
            f"--model.init_args.text_encoder.init_args.pretrained={a.lm}",
            f"--model.init_args.text_encoder.init_args.freeze={str(not a.train_lm).lower()}",
            f"--model.init_args.init_from={a.init_from or 'null'}",
            f"--trainer.logger.init_args.save_dir={a.out / arm}", f"--trainer.max_steps={a.steps}",
            "--trainer.limit_val_batches=0", "--trainer.enable_progress_bar=false", *extra])
        init = {k: v for k, v in cli.datamodule.hparams.items() if not k.startswith("_")}  # drop _class_path
        data = DescribedAlignmentData(**init, describe=describe)
        cli.trainer.fit(cli.model, datamodule=data)
        fit_min = (time.time() - t0) / 60
        model = cli.model.eval()
        model.load_ema_weights()
        specs = generate_split("test", a.n, seed=0)
        texts = [describe(s.to_dict()) if describe else s.paragraph for s in specs]
        images = sample(model.make_pipeline(use_ema=False), texts, SamplingSettings(), seed=0)
        scores = score_with_chance(images, specs)  # + chance/<k>: judged against the next scene
        td = text_dependence(model, split="val", n=64, describe=describe)
        row = {"arm": arm, "steps": cli.trainer.global_step, "init_from": a.init_from, "train_lm": a.train_lm,
               "extra": extra, "fit_min": round(fit_min, 2), **{k: round(scores[k], 3) for k in KEYS},
               **{f"chance/{k}": round(scores[f"chance/{k}"], 3) for k in KEYS},
               "text_use": round(td["shuffled_over_true"], 4),
               "t900_true_shuffled": [round(td["loss_true/t=900"], 4), round(td["loss_shuffled/t=900"], 4)],
               "example_text": texts[0]}
        print(json.dumps(row), flush=True)
        with open(a.out / "results.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
