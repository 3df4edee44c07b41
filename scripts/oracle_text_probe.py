"""Is it the language or the drawing? Trains the tiny model on the same ParaShapes scenes described two ways and
scores both with the judge:

  * ``paragraph`` — the shipped stage-2 text (60-300 words, synonyms, coreference, distractors);
  * ``scene_list`` — an oracle description of the same scene in canonical words and fixed order,
    e.g. "gray background. large red circle at top-left. small blue square at center.";
  * ``scene_list_synonyms`` — the scene list with the paragraphs' wordings (random training-lexicon synonyms
    and position phrases: "slate-gray background. huge crimson orb in the northwest corner of the frame."):
    what the vocabulary alone costs;
  * ``scene_list_padded`` — the canonical scene list with the paragraphs' true-but-irrelevant sentences (moods,
    absent colours and shapes, empty cells, the count) interleaved, ~paragraph length: what the length and
    the distractors alone cost;
  * ``scene_list_mood_padded`` — the same, but padded with the neutral sentences only (moods, light, style: no
    colour, shape, size or cell values), ~paragraph length: what the length alone costs;
  * ``scene_list_suffix_padded`` / ``scene_list_prefix_padded`` — the scene list followed / preceded by those neutral
    sentences. After the scene list, the padding leaves its tokens' states exactly as they were (a causal LM) and
    only adds tokens for the UNet's cross-attention to sift; before it, the padding also changes every state the
    UNet reads. With ``--read_run`` (no training) they measure which of the two costs a trained model its reading.

Same scenes, images, seeds, steps and starting weights; only the words differ. If the scene-list arm places objects
and the paragraph arm does not, the UNet can draw what it is told within this budget and the limit is reading the
paragraphs (the LM's states, the synonyms, the binding across sentences). If neither does, the limit is the number
of diffusion steps, whatever the text.

    python scripts/oracle_text_probe.py --steps 400 --lm runs/full/stage0/hf \\
        --init_from runs/full/stage1/run/checkpoints/last.ckpt          # ~25 min on 2 cores for both arms

On a GPU, train for a wall-clock budget and score along the way (a row every ``--eval_every`` steps, EMA weights):

    python scripts/oracle_text_probe.py --arms scene_list --accelerator gpu --max_time 00:00:06:00 --eval_every 1000 \\
        --steps 100000 --train_lm --lm <stage-0 dir> --init_from <stage-1 ckpt>     # scripts/gpu_oracle.sh runs both

Does a model that reads one kind of text read another? ``--read_run`` evaluates a trained probe run's text use with
the scenes described by each of ``--arms`` (no training; rows in ``<--out>/read.jsonl``):

    python scripts/oracle_text_probe.py --read_run runs/oracle/scene_list/stage2/run --out runs/oracle \
        --arms scene_list scene_list_suffix_padded scene_list_prefix_padded scene_list_mood_padded paragraph

Each arm appends one JSON line to ``<--out>/results.jsonl`` (and, with ``--eval_every``, one per evaluation to
``<--out>/curve.jsonl``): judge scores on ``--n`` `test` scenes sampled from that
arm's descriptions (EMA weights, DPM-Solver++ 20 steps, CFG 3) and text use on 64 `val` scenes in that arm's words.
Extra arguments are passed to the Lightning CLI (e.g. ``--model.init_args.lora_lr=5e-4``).
"""
from __future__ import annotations

import argparse
import json
import re
import time
import zlib
from pathlib import Path
from typing import Any, Iterator

import lightning as L
import numpy as np
import torch
from torch.utils.data import IterableDataset

from paradiffusion.cli import ParaDiffusionCLI, load_module
from paradiffusion.data import Stage2AlignmentData
from parashapes.evaluate import evaluate_split, text_dependence
from parashapes import generate_split
from parashapes.describe import scene_list  # the oracle text: every attribute, canonical words
from parashapes.lexicon import TRAIN
from parashapes.spec import ObjectSpec
from parashapes.templates import PARAGRAPH
from parashapes.writers import _object_fields, _pick, _static_fillers  # the paragraph writer's parts

KEYS = ("object_exact", "scene_exact", "presence", "position", "size", "shape", "background")


def _scene_rng(spec: dict[str, Any]) -> np.random.Generator:
    """The same wording for the same scene in every worker and run (the description is part of the data)."""
    return np.random.default_rng(zlib.crc32(json.dumps(spec["objects"], sort_keys=True).encode()) + len(spec["objects"]))


def scene_list_synonyms(spec: dict[str, Any]) -> str:
    rng = _scene_rng(spec)
    objects = []
    for o in spec["objects"]:
        f = _object_fields(ObjectSpec.from_dict(o), TRAIN, rng)
        objects.append(f"{f['full']} {f['pos']}")
    return ". ".join([f"{_pick(rng, TRAIN.backgrounds[spec['background']])} background", *objects]) + "."


_ATTRIBUTE_WORDS = {w.lower() for table in (TRAIN.colors, TRAIN.shapes, TRAIN.sizes, TRAIN.backgrounds,
                                            TRAIN.position_nouns) for wordings in table.values() for w in wordings}


def _names_an_attribute(sentence: str) -> bool:
    """Does the sentence contain a training-lexicon wording of any attribute value, or the word "background"?"""
    return any(re.search(rf"\b{re.escape(w)}\b", sentence.lower()) for w in _ATTRIBUTE_WORDS | {"background"})


#: the paragraph writer's mood/style sentences that name nothing of the scene ("a little playful" is out: "little")
NEUTRAL = tuple(m for m in PARAGRAPH.moods if not _names_an_attribute(m))


def _neutral_sentences(rng: np.random.Generator) -> list[str]:
    """All neutral sentences in a scene-seeded order (callers take the first 6-11)."""
    return [NEUTRAL[int(i)] for i in rng.permutation(len(NEUTRAL))]


def scene_list_padded(spec: dict[str, Any], neutral: bool = False) -> str:
    rng = _scene_rng(spec)
    if neutral:
        fillers = _neutral_sentences(rng)
    else:
        fillers = _static_fillers(PARAGRAPH, [ObjectSpec.from_dict(o) for o in spec["objects"]], rng)
    parts = scene_list(spec)[:-1].split(". ")
    for filler in fillers[: int(rng.integers(6, 12))]:  # ~70-130 words in all, like the paragraphs
        parts.insert(int(rng.integers(len(parts) + 1)), filler.rstrip("."))
    return ". ".join(parts) + "."


def scene_list_mood_padded(spec: dict[str, Any]) -> str:
    return scene_list_padded(spec, neutral=True)


def _neutral_block(spec: dict[str, Any]) -> str:
    rng = _scene_rng(spec)
    return " ".join(_neutral_sentences(rng)[: int(rng.integers(6, 12))])  # the mood-padded arm's sentences


def scene_list_suffix_padded(spec: dict[str, Any]) -> str:
    """The scene list, then ~85 words of neutral sentences. For a causal LM the scene list's states are exactly
    those of the bare scene list: what the extra tokens cost the UNet's cross-attention alone."""
    return scene_list(spec) + " " + _neutral_block(spec)


def scene_list_prefix_padded(spec: dict[str, Any]) -> str:
    """The same sentences, padding first: the scene list's states now carry ~85 words of preceding context."""
    return _neutral_block(spec) + " " + scene_list(spec)


DESCRIBE = {"paragraph": None, "scene_list": scene_list, "scene_list_synonyms": scene_list_synonyms,
            "scene_list_padded": scene_list_padded,
            "scene_list_mood_padded": scene_list_mood_padded, "scene_list_suffix_padded": scene_list_suffix_padded,
            "scene_list_prefix_padded": scene_list_prefix_padded}


class _Described(IterableDataset):
    """A ParaShapes stream with each item's text replaced by ``describe(spec)``."""

    def __init__(self, stream: IterableDataset, describe) -> None:
        super().__init__()
        self.stream, self.describe = stream, describe

    def resume(self, step: int, rank: int, world_size: int) -> "_Described":
        return _Described(self.stream.resume(step=step, rank=rank, world_size=world_size), self.describe)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for item in self.stream:
            yield {**item, "text": self.describe(item["spec"])}


class DescribedAlignmentData(Stage2AlignmentData):
    """Stage-2 scenes (the config's ``train_data`` stream), training text from ``DESCRIBE[arm]`` (validation is not
    run by this probe).

    Takes the arm's *name*: Lightning saves DataModule arguments into checkpoints, and a function there would make
    the checkpoint unreadable with ``torch.load(weights_only=True)``."""

    def __init__(self, *args: Any, arm: str = "paragraph", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if arm not in DESCRIBE:
            raise ValueError(f"unknown arm {arm!r}; choose from {sorted(DESCRIBE)}")
        self.describe = DESCRIBE[arm]

    def train_dataset(self):
        stream = super().train_dataset()
        return stream if self.describe is None else _Described(stream, self.describe)


def append_row(path: Path, row: dict[str, Any]) -> None:
    """Print one result row and append it to a JSONL file."""
    print(json.dumps(row), flush=True)
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


def evaluate_arm(model, describe, n: int) -> dict[str, Any]:
    """Judge scores (+ chance) on ``n`` `test` scenes in the arm's words and text use on 64 `val` scenes, with
    whatever weights ``model`` holds (the caller loads the EMA ones)."""
    with torch.no_grad():
        scores = evaluate_split(model.make_pipeline(use_ema=False), "test", n, seed=0, describe=describe)
        td = text_dependence(model, split="val", n=64, describe=describe)
    return {**{k: round(scores[k], 3) for k in KEYS}, **{f"chance/{k}": round(scores[f"chance/{k}"], 3) for k in KEYS},
            "text_use": round(td["shuffled_over_true"], 4),
            "t900_true_shuffled": [round(td["loss_true/t=900"], 4), round(td["loss_shuffled/t=900"], 4)]}


class EvalEvery(L.Callback):
    """Every ``every`` optimizer steps: :func:`evaluate_arm` with the EMA weights swapped in, one row to ``path``."""

    def __init__(self, every: int, arm: str, describe, n: int, path: Path) -> None:
        self.every, self.arm, self.describe, self.n, self.path = every, arm, describe, n, path
        self.t0 = time.time()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.t0 = time.time()  # minutes of training, start-up excluded

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        step = trainer.global_step
        if step % self.every or not trainer.is_global_zero:
            return
        modes = {m: m.training for m in pl_module.modules()}  # the frozen LM stays in eval mode afterwards
        ema, params = pl_module.ema, pl_module.trainable_named_parameters()
        if ema is not None:
            ema.swap_in(params)  # the raw weights come back below; the EMA keeps averaging afterwards
        pl_module.eval()
        try:
            row = {"arm": self.arm, "step": step, "minutes": round((time.time() - self.t0) / 60, 2),
                   **evaluate_arm(pl_module, self.describe, self.n)}
        finally:
            if ema is not None:
                ema.swap_out(params)
            for m, training in modes.items():
                m.training = training
        append_row(self.path, row)


def read_run(run: Path, arms: list[str], path: Path, n: int = 0) -> None:
    """Text use (64 `val` scenes, EMA weights) of a trained probe run, with the scenes described by each arm; with
    ``n`` > 0 also the judge's scores (+ chance) on ``n`` `test` scenes sampled from that arm's words."""
    model = load_module(str(run / "config.yaml"), str(run / "checkpoints" / "last.ckpt")).eval()
    model.load_ema_weights()
    for arm in arms:
        if n:
            row = {"run": str(run), "read_as": arm, **evaluate_arm(model, DESCRIBE[arm], n)}
        else:
            with torch.no_grad():
                td = text_dependence(model, split="val", n=64, describe=DESCRIBE[arm])
            row = {"run": str(run), "read_as": arm, "text_use": round(td["shuffled_over_true"], 4)}
        append_row(path, row)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arms", nargs="+", default=["scene_list", "paragraph"], choices=sorted(DESCRIBE))
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--lm", default="runs/demo/stage0/hf", help="the stage-0 LM directory")
    p.add_argument("--init_from", default=None, help="starting weights (e.g. a stage-1 last.ckpt); default: scratch")
    p.add_argument("--train_lm", action="store_true", help="train LoRA on the LM too (default: frozen LM)")
    p.add_argument("--n", type=int, default=48, help="`test` scenes sampled and scored per arm")
    p.add_argument("--out", type=Path, default=Path("runs/oracle"))
    p.add_argument("--accelerator", default="cpu")
    p.add_argument("--max_time", default=None, help="wall-clock training budget DD:HH:MM:SS (then --steps is a cap)")
    p.add_argument("--eval_every", type=int, default=0, help="also evaluate every N steps (rows in curve.jsonl)")
    p.add_argument("--read_run", type=Path, default=None,
                   help="no training: text use of this probe run's model (<out>/<arm>/stage2/run) in each of --arms' "
                        "words, one row each to <--out>/read.jsonl (does reading learnt on one text carry over?)")
    p.add_argument("--read_n", type=int, default=0,
                   help="with --read_run: also sample and score this many `test` scenes per arm (default: text use only)")
    a, extra = p.parse_known_args()
    a.out.mkdir(parents=True, exist_ok=True)
    if a.read_run is not None:
        return read_run(a.read_run, a.arms, a.out / "read.jsonl", a.read_n)
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
            "--trainer.limit_val_batches=0", "--trainer.enable_progress_bar=false",
            f"--trainer.accelerator={a.accelerator}", *([f"--trainer.max_time={a.max_time}"] if a.max_time else []),
            *extra])
        init = {k: v for k, v in cli.datamodule.hparams.items() if not k.startswith("_")}  # drop _class_path
        datasets = {k: getattr(cli.datamodule, k) for k in ("train_data", "val_data", "test_data", "predict_data")}
        data = DescribedAlignmentData(**init, **datasets, arm=arm)
        if a.eval_every:
            cli.trainer.callbacks.append(EvalEvery(a.eval_every, arm, describe, a.n, a.out / "curve.jsonl"))
        cli.trainer.fit(cli.model, datamodule=data)
        fit_min = (time.time() - t0) / 60
        model = cli.model.eval()
        if a.accelerator == "gpu":
            model.cuda()  # the trainer hands the module back on the CPU after fit
        model.load_ema_weights()
        device = torch.cuda.get_device_name() if a.accelerator == "gpu" else "cpu"
        example = generate_split("test", 1, seed=0)[0]
        row = {"arm": arm, "steps": cli.trainer.global_step, "init_from": a.init_from, "train_lm": a.train_lm,
               "extra": extra, "fit_min": round(fit_min, 2), "device": device, **evaluate_arm(model, describe, a.n),
               "example_text": describe(example.to_dict()) if describe else example.paragraph}
        append_row(a.out / "results.jsonl", row)


if __name__ == "__main__":
    main()
