"""The ``paradiffusion`` entry point.

* ``paradiffusion fit|validate|test|predict --config A.yaml --config B.yaml ...`` — a :class:`LightningCLI` over any
  LightningModule (``ParaDiffusion``, the stage-0 ``CausalLMPretrain``) and any DataModule (one per stage);
  configs compose left to right and may interpolate (``parser_mode="omegaconf"``).
* ``paradiffusion data generate|score|render`` — the ParaShapes benchmark.
* ``paradiffusion generate`` — paragraphs -> PNGs + grid, from a run (config + checkpoint) or a pipeline directory.
* ``paradiffusion export`` — checkpoint -> the released-weights directory layout (EMA weights, safetensors).
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.cli import LightningCLI

log = logging.getLogger(__name__)

OTHER_COMMANDS = ("data", "generate", "export")


class ParaDiffusionCLI(LightningCLI):
    """LightningCLI with the project's defaults: omegaconf interpolation, overwrite-safe config saving."""

    def __init__(self, args: list[str] | None = None, run: bool = True, **kwargs: Any):
        self._subcommands = run
        super().__init__(
            L.LightningModule,
            L.LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            parser_kwargs={"parser_mode": "omegaconf"},
            save_config_kwargs={"overwrite": True},
            seed_everything_default=0,
            args=args,
            run=run,
            **kwargs,
        )

    def add_arguments_to_parser(self, parser) -> None:
        if not self._subcommands:
            # A run's saved config.yaml (written by `fit`) carries the subcommand's own keys; accept them when the
            # config is only used to rebuild the model (generate, export, notebooks).
            parser.add_argument("--ckpt_path", type=str | None, default=None)
            parser.add_argument("--weights_only", type=bool | None, default=None)


# --------------------------------------------------------------------------------------------------------------
# Loading a trained model outside the Trainer (generate, export, demo, notebook)
# --------------------------------------------------------------------------------------------------------------
def load_module(config: str | list[str], ckpt_path: str | None = None, overrides: list[str] | None = None) -> L.LightningModule:
    """Instantiate the run's module from its config(s) and load a checkpoint's weights (+ EMA) into it."""
    configs = [config] if isinstance(config, str) else list(config)
    args: list[str] = []
    for c in configs:
        if not Path(c).exists():
            raise FileNotFoundError(f"config not found: {c}")
        args += ["--config", c]
    cli = ParaDiffusionCLI(args=args + list(overrides or []), run=False)
    module = cli.model
    if hasattr(module, "configure_model"):
        module.configure_model()
    if ckpt_path is not None:
        if not Path(ckpt_path).exists():
            raise FileNotFoundError(f"checkpoint not found: {ckpt_path}")
        checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        module.on_load_checkpoint(checkpoint)  # first: it may drop keys that are not the module's (old rewriter weights)
        module.load_state_dict(checkpoint["state_dict"])
    module.eval()
    return module


def _read_prompts(path: Path) -> tuple[list[str], list[str], list[dict] | None]:
    """Paragraphs from ``.txt`` (one per line), ``.csv`` (a ``Prompt``/``text``/``paragraph`` column, e.g.
    ParaPrompts-400) or ParaShapes ``.jsonl`` specs (then the images are also scored)."""
    if not path.exists():
        raise FileNotFoundError(f"prompts file not found: {path}")
    if path.suffix == ".jsonl":
        from paradiffusion.parashapes.spec import load_specs

        specs = load_specs(path)
        return [s.id for s in specs], [s.paragraph for s in specs], [s.to_dict() for s in specs]
    if path.suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        column = next((c for c in ("Prompt", "text", "paragraph", "prompt") if rows and c in rows[0]), None)
        if column is None:
            raise ValueError(f"{path}: needs a Prompt, text or paragraph column (have {list(rows[0]) if rows else []})")
        return [f"{i:04d}" for i in range(len(rows))], [r[column] for r in rows], None
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [f"{i:04d}" for i in range(len(lines))], lines, None


def generate_main(argv: list[str]) -> int:
    from paradiffusion.evaluate import SamplingSettings, make_grid, sample, save_images, score, to_pil

    p = argparse.ArgumentParser(prog="paradiffusion generate", description="paragraphs -> PNGs + grid")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--config", action="append", help="the run's config.yaml (repeatable); use with --ckpt_path")
    src.add_argument("--pipeline", help="a pipeline directory written by `paradiffusion export`")
    p.add_argument("--ckpt_path", help="checkpoint to load (with --config)")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--prompts", type=Path, help=".txt (one per line), .csv (Prompt column) or ParaShapes .jsonl")
    what.add_argument("--split", help="a ParaShapes split (e.g. heldout); images are scored")
    p.add_argument("--n", type=int, default=16, help="how many paragraphs (with --split, or the first N of --prompts)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--guidance", type=float, default=3.0)
    p.add_argument("--sampler", choices=["dpm", "ddim"], default="dpm")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--no_ema", action="store_true", help="use the raw weights instead of the EMA")
    a = p.parse_args(argv)

    if a.pipeline:
        from paradiffusion.pipeline import ParaDiffusionPipeline

        pipeline = ParaDiffusionPipeline.from_pretrained(a.pipeline)
    else:
        if not a.ckpt_path:
            p.error("--config needs --ckpt_path")
        pipeline = load_module(a.config, a.ckpt_path).make_pipeline(use_ema=not a.no_ema)
    if a.split:
        from paradiffusion.parashapes import generate_split

        specs = generate_split(a.split, a.n, seed=a.seed)
        ids, paragraphs, spec_dicts = [s.id for s in specs], [s.paragraph for s in specs], [s.to_dict() for s in specs]
    else:
        ids, paragraphs, spec_dicts = _read_prompts(a.prompts)
        ids, paragraphs = ids[: a.n], paragraphs[: a.n]
        spec_dicts = spec_dicts[: a.n] if spec_dicts else None
    settings = SamplingSettings(a.steps, a.guidance, a.sampler, a.batch_size)
    images = sample(pipeline, paragraphs, settings, seed=a.seed)  # (N, 3, R, R)
    save_images(images, ids, a.out)
    to_pil(make_grid(images)).save(a.out / "grid.png")
    restated = pipeline.restate(paragraphs) if pipeline.text_rewriter is not None else None  # cached: no new work
    with (a.out / "paragraphs.jsonl").open("w") as f:
        for i, (key, text) in enumerate(zip(ids, paragraphs)):
            row = {"id": key, "paragraph": text, **({"restated": restated[i]} if restated else {})}
            f.write(json.dumps(row) + "\n")
    print(f"wrote {len(ids)} images and grid.png to {a.out}")
    if spec_dicts:
        scores = score(images, spec_dicts)
        (a.out / "scores.json").write_text(json.dumps(scores, indent=2, sort_keys=True) + "\n")
        print(json.dumps({k: round(v, 4) for k, v in scores.items() if "/" not in k}, indent=2))
    return 0


def export_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="paradiffusion export",
                                description="checkpoint -> released ParaDiffusion weights layout (safetensors)")
    p.add_argument("--config", action="append", required=True, help="the run's config.yaml (repeatable)")
    p.add_argument("--ckpt_path", required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--no_ema", action="store_true", help="export the raw weights instead of the EMA")
    a = p.parse_args(argv)
    module = load_module(a.config, a.ckpt_path)
    module.make_pipeline(use_ema=not a.no_ema).save_pretrained(a.out)
    print(f"exported {'raw' if a.no_ema else 'EMA'} weights to {a.out}")
    return 0


def main(argv: list[str] | None = None) -> int | None:
    from_sys = argv is None  # then LightningCLI reads sys.argv itself (given both, it warns on every run)
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "data":
        from paradiffusion.parashapes.cli import main as data_main

        return data_main(argv[1:])
    if argv and argv[0] == "generate":
        return generate_main(argv[1:])
    if argv and argv[0] == "export":
        return export_main(argv[1:])
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip() + "\n")
    ParaDiffusionCLI(args=None if from_sys else argv)
    _destroy_process_group()
    return 0


def _destroy_process_group() -> None:
    """End a multi-process run's process group while the interpreter is still whole.

    Lightning leaves it alive after `fit`; exiting without destroying it lets gloo's worker threads outlive the
    interpreter, which aborted about one CPU DDP run in seven at exit ("terminate called without an active
    exception", rc -6; pytorch/pytorch#190489). Only after a run that ended normally: every rank reaches this
    point, so the collective teardown cannot wait for a rank that crashed (torchtitan#1342).
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
