"""The ``paradiffusion`` entry point.

* ``paradiffusion fit|validate|test|predict --config A.yaml --config B.yaml ...`` — a :class:`LightningCLI` over any
  LightningModule (``ParaDiffusion``, the stage-0 ``CausalLMPretrain``) and any DataModule (one per stage);
  configs compose left to right and may interpolate (``parser_mode="omegaconf"``).
* ``paradiffusion generate`` — paragraphs -> PNGs + grid, from a run (config + checkpoint) or a pipeline directory.
* ``paradiffusion export`` — checkpoint -> the released-weights directory layout (EMA weights, safetensors).
* ``paradiffusion cache-text`` — a run's frozen text states into its text cache, before training.
* ``paradiffusion <command>`` — commands that installed packages add (entry points, `paradiffusion.plugins`; a
  benchmark's data tools, e.g. ``paradiffusion data ...``).

Bad input never fails silently or with a traceback: a missing, empty, mis-encoded or corrupt input file, weights with
NaN/Inf, or a stage whose previous stage has not been run gets one line on stderr naming the file, line or field, and
exit code 2, before anything is built. A training run whose loss or gradient goes non-finite stops with one line and
exit code 1 (`paradiffusion.callbacks.NonFiniteGuard`, on by default). See docs/reliability.md.
"""
from __future__ import annotations

import argparse
import csv
import errno
import io
import json
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Iterator

import lightning as L
import torch
from lightning.pytorch.cli import LightningCLI

from paradiffusion.checks import MissingInputError, NonFiniteError, UserError, assert_finite_modules, load_checkpoint
from paradiffusion.plugins import Prompts

log = logging.getLogger(__name__)

OTHER_COMMANDS = ("generate", "export", "cache-text")  # besides LightningCLI's and the plugins' commands
LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")


class ParaDiffusionCLI(LightningCLI):
    """LightningCLI with the project's defaults: omegaconf interpolation, overwrite-safe config saving, a
    :class:`~paradiffusion.callbacks.NonFiniteGuard` on every trainer (configured under ``nonfinite:``), and the
    run's inputs checked before anything is built (:meth:`parse_arguments`, :meth:`before_instantiate_classes`)."""

    def __init__(self, args: list[str] | None = None, run: bool = True, check_init_from: bool = True, **kwargs: Any):
        self._subcommands = run
        self._args = list(sys.argv[1:] if args is None else args)
        self._check_init_from = check_init_from  # False: a checkpoint is loaded over the model (load_module)
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
        from paradiffusion.callbacks import NonFiniteGuard

        # Default-on for every run: `--nonfinite.action=skip`, `--nonfinite.max_consecutive_skips=N`, or a
        # `nonfinite:` section in a config. A guard listed under trainer.callbacks replaces this one.
        parser.add_lightning_class_args(NonFiniteGuard, "nonfinite")
        if not self._subcommands:
            # A run's saved config.yaml (written by `fit`) carries the subcommand's own keys; accept them when the
            # config is only used to rebuild the model (generate, export, notebooks).
            parser.add_argument("--ckpt_path", type=str | None, default=None)
            parser.add_argument("--weights_only", type=bool | None, default=None)

    # -- inputs, checked before anything is built (no model, no run directory) ------------------------------------
    def _run_config(self):
        sub = self.config.get("subcommand") if self._subcommands else None
        return (self.config[sub] if sub else self.config), sub

    def parse_arguments(self, parser, args) -> None:
        super().parse_arguments(parser, args)
        cfg, _ = self._run_config()
        ckpt = cfg.get("ckpt_path")
        # Before LightningCLI reads the checkpoint's hyperparameters (it loads the file right after parsing).
        if isinstance(ckpt, str) and ckpt not in ("last", "best", "hpc") and not ckpt.startswith("registry"):
            load_checkpoint(ckpt, "--ckpt_path")

    def before_instantiate_classes(self) -> None:
        cfg, _ = self._run_config()
        resuming = isinstance(cfg.get("ckpt_path"), str)
        model = cfg.get("model")
        init_from = _get(model, "init_args.init_from")
        if isinstance(init_from, str) and not resuming and self._check_init_from:
            field = "model.init_args.init_from"
            if not Path(init_from).exists():
                raise MissingInputError(f"{field}: {init_from} not found{_producer_hint(init_from, self._args)}")
            load_checkpoint(init_from, field)
        for field, value in _find_keys(cfg, "pretrained"):
            if isinstance(value, str) and not Path(value).is_dir():
                raise MissingInputError(f"{field}: {value} is not a directory (a Hugging Face model directory)"
                                        f"{_producer_hint(value, self._args)}")
        for field, value in _find_keys(cfg, "gguf_file"):
            if isinstance(value, str):
                from paradiffusion.models.gguf import resolve_gguf_path

                try:
                    resolve_gguf_path(value)
                except FileNotFoundError as e:
                    raise MissingInputError(f"{field}: {e}") from None
        data = cfg.get("data")
        train_path = _get(data, "init_args.train_path")
        if isinstance(train_path, str) and _get(data, "init_args.source") is not None:
            from paradiffusion.shards import shard_paths

            if not [p for p in shard_paths(train_path) if Path(p).exists()]:
                raise MissingInputError(f"data.init_args.train_path: nothing found at {train_path}")

    def instantiate_trainer(self, **kwargs: Any) -> L.Trainer:
        from paradiffusion.callbacks import NonFiniteGuard

        listed = self._get(self.config_init, "trainer", default={}).get("callbacks") or []
        listed = listed if isinstance(listed, list) else [listed]
        parser = self._parser(self.subcommand)
        keys = list(parser.callback_keys)
        if any(isinstance(c, NonFiniteGuard) for c in listed):  # one under trainer.callbacks replaces `nonfinite`
            parser.callback_keys = [k for k in keys if k != "nonfinite"]
        try:
            trainer = super().instantiate_trainer(**kwargs)
        finally:
            parser.callback_keys = keys
        from paradiffusion.checkpoint_io import install

        install(trainer)  # a save that fails (disk full) leaves the previous checkpoint whole
        return trainer


def _get(ns: Any, dotted: str) -> Any:
    """`ns[a][b]...` for a Namespace or dict, None where a level is missing."""
    for key in dotted.split("."):
        if ns is None or not hasattr(ns, "get"):
            return None
        ns = ns.get(key)
    return ns


def _find_keys(ns: Any, name: str) -> Iterator[tuple[str, Any]]:
    """(dotted field, value) for every key called `name` in a parsed config (a jsonargparse Namespace)."""
    for field, value in (ns.items() if hasattr(ns, "items") else []):  # Namespace.items(): flattened dotted keys
        if str(field).rsplit(".", 1)[-1] == name:
            yield str(field), value


def _config_files(args: list[str]) -> list[str]:
    files = []
    for i, a in enumerate(args):
        if a in ("--config", "-c") and i + 1 < len(args):
            files.append(args[i + 1])
        elif a.startswith("--config="):
            files.append(a.split("=", 1)[1])
    return files


def _usage_command(yaml_text: str) -> str | None:
    """The first `paradiffusion fit ...` command in a config's header comment (continuation lines joined)."""
    lines = [ln.lstrip("#").strip() for ln in yaml_text.splitlines() if ln.startswith("#")]
    for i, line in enumerate(lines):
        at = line.find("paradiffusion fit")
        if at < 0 or "..." in line or "<" in line:
            continue
        cmd, j = line[at:], i
        while cmd.endswith("\\") and j + 1 < len(lines):
            j += 1
            cmd = cmd[:-1].rstrip() + " " + lines[j]
        return " ".join(cmd.split())
    return None


def _producer_hint(missing: str, args: list[str]) -> str:
    """': it is written by X, which has not been run; run it first: <command>' when a config next to the run's own
    writes `missing` (its run directory, logger directory or export directory); else a generic hint."""
    import yaml

    target = os.path.normpath(missing)
    given = [Path(f) for f in _config_files(args)]
    dirs = {f.resolve().parent for f in given if f.is_file()}
    best: tuple[int, Path, str] | None = None
    for d in sorted(dirs | {p.parent for p in dirs}):
        for path in sorted(d.glob("*/*.yaml")) + sorted(d.glob("*.yaml")):
            if any(path.resolve() == f.resolve() for f in given if f.exists()):
                continue
            try:
                text = path.read_text(encoding="utf-8")
                cfg = yaml.safe_load(text) or {}
            except (OSError, UnicodeDecodeError, yaml.YAMLError):
                continue
            if not isinstance(cfg, dict):
                continue
            trainer, model = cfg.get("trainer") or {}, cfg.get("model") or {}
            trainer = trainer if isinstance(trainer, dict) else {}
            logger = _get(trainer, "logger.init_args") or {}
            outputs = [_get(model, "init_args.export_dir"), trainer.get("default_root_dir")]
            if isinstance(logger, dict) and logger.get("save_dir"):
                parts = [str(logger[k]) for k in ("save_dir", "name", "version") if logger.get(k) is not None]
                outputs.append(os.path.join(*parts))
            for out in outputs:
                if not isinstance(out, str):
                    continue
                out = os.path.normpath(out)
                if (target == out or target.startswith(out + os.sep)) and (best is None or len(out) > best[0]):
                    best = (len(out), path, text)
    if best is None:
        return " (it is written by an earlier stage or downloaded: run that stage first, or point this field at an " \
               "existing path)"
    _, path, text = best
    shown = os.path.relpath(path) if not os.path.relpath(path).startswith("..") else str(path)
    command = _usage_command(text) or f"paradiffusion fit --config {shown}"
    return f"; it is written by {shown}, which has not been run: run it first: {command}"


# --------------------------------------------------------------------------------------------------------------
# Loading a trained model outside the Trainer (generate, export, demo, notebook)
# --------------------------------------------------------------------------------------------------------------
def load_module(config: str | list[str], ckpt_path: str | None = None, overrides: list[str] | None = None) -> L.LightningModule:
    """Instantiate the run's module from its config(s) and load a checkpoint's weights (+ EMA) into it.

    The checkpoint is checked first (exists, loads with ``weights_only=True``, is a Lightning checkpoint, has no
    NaN/Inf), so a bad one is refused before the model is built. With a checkpoint, the config's ``init_from`` (the
    previous stage's weights, which the checkpoint's replace) is not read.
    """
    configs = [config] if isinstance(config, str) else list(config)
    args: list[str] = []
    for c in configs:
        if not Path(c).is_file():
            raise MissingInputError(f"--config: config not found: {c}")
        args += ["--config", c]
    checkpoint = load_checkpoint(ckpt_path, "--ckpt_path") if ckpt_path is not None else None
    if checkpoint == {}:  # a DeepSpeed checkpoint directory
        raise UserError(f"--ckpt_path: {ckpt_path} is a DeepSpeed checkpoint directory: convert it to one file first "
                        f"(lightning.pytorch.utilities.deepspeed.convert_zero_checkpoint_to_fp32_state_dict)")
    cli = ParaDiffusionCLI(args=args + list(overrides or []), run=False, check_init_from=checkpoint is None)
    module = cli.model
    if checkpoint is not None and hasattr(module, "_skip_init_from"):
        module._skip_init_from = True  # the checkpoint's weights win over init_from: no need to read it
    if hasattr(module, "configure_model"):
        module.configure_model()
    if checkpoint is not None:
        from paradiffusion.ema import EMAWeights

        module.on_load_checkpoint(checkpoint)
        module.load_state_dict(checkpoint["state_dict"])
        EMAWeights.restore(module, checkpoint)  # the EMA weights (`make_pipeline(use_ema=True)`), where it has them
    module.eval()
    return module


def _decode(path: Path, data: bytes) -> str:
    """UTF-8 text (a BOM is dropped); an undecodable byte is a user error naming the line and column."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise UserError(f"{path}:{line}: not UTF-8 text (byte 0x{data[e.start]:02x} at column {column}); "
                        f"save the file as UTF-8") from None


def _read_prompts(path: Path) -> Prompts:
    """Paragraphs from ``.txt`` (one per line), ``.csv`` (a ``Prompt``/``text``/``paragraph`` column, e.g.
    ParaPrompts-400), ``.jsonl`` (a ``paragraph``/``text``/``prompt`` field per record, ids from ``id``), or a file
    in an installed benchmark's own format (`paradiffusion.plugins.Benchmark.read_prompts`; its images are then
    also scored).

    A missing, unreadable, non-UTF-8 or empty file, a CSV without a text column, an empty CSV cell and a JSONL record
    without text are user errors naming the file (and line)."""
    if not path.exists():
        raise MissingInputError(f"--prompts: {path} not found")
    if not path.is_file():
        raise UserError(f"--prompts: {path} is not a file")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise UserError(f"--prompts: cannot read {path}: {e.strerror or e}") from None
    text = _decode(path, data)
    from paradiffusion.plugins import benchmarks

    for benchmark in benchmarks():
        prompts = benchmark.read_prompts(path, text)
        if prompts is not None:
            return prompts
    if path.suffix == ".jsonl":
        return _read_jsonl_prompts(path, text)
    if path.suffix == ".csv":
        reader = csv.DictReader(io.StringIO(text, newline=""))
        try:
            rows = [(reader.line_num, row) for row in reader]
        except csv.Error as e:
            raise UserError(f"{path}:{reader.line_num}: malformed CSV: {e}") from None
        if not rows:
            raise UserError(f"{path}: no rows (the file is empty or has only a header)")
        have = reader.fieldnames or []
        column = next((c for c in ("Prompt", "text", "paragraph", "prompt") if c in have), None)
        if column is None:
            raise UserError(f"{path}: needs a Prompt, text or paragraph column (have {list(have)})")
        empty = [line for line, r in rows if not (r.get(column) or "").strip()]
        if empty:
            raise UserError(f"{path}:{empty[0]}: empty {column} ({len(empty)} rows in all); an empty paragraph "
                            f"would silently draw an unconditional image")
        return Prompts([f"{i:04d}" for i in range(len(rows))], [r[column] for _, r in rows])
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise UserError(f"{path}: no paragraphs (the file is empty or has only blank lines)")
    return Prompts([f"{i:04d}" for i in range(len(lines))], lines)


def _read_jsonl_prompts(path: Path, text: str) -> Prompts:
    from paradiffusion.jsonl import iter_jsonl

    ids, texts = [], []
    try:
        for line, record in iter_jsonl(io.StringIO(text), path):
            field = next((k for k in ("paragraph", "text", "prompt") if k in record), None)
            value = record.get(field) if field else None
            if not isinstance(value, str) or not value.strip():
                raise UserError(f"{path}:{line}: needs a non-empty paragraph, text or prompt field (have "
                                f"{sorted(record)}); an empty paragraph would silently draw an unconditional image")
            ids.append(str(record.get("id", f"{len(ids):04d}")))
            texts.append(value)
    except ValueError as e:  # malformed JSON, a record that is not an object
        raise UserError(str(e)) from None
    if not texts:
        raise UserError(f"{path}: no records (the file is empty or has only blank lines)")
    return Prompts(ids, texts)


def _positive(v: str) -> int:
    n = int(v)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {n}")
    return n


def _truncated(pipeline: Any, texts: list[str]) -> list[tuple[int, int]]:
    """(index, token count) of every text longer than the text encoder's ``max_length`` (what the encoder reads is
    cut there: the rule of `tokenize_paragraphs`, which training counts as ``train/truncated``)."""
    encoder = pipeline.text_encoder
    ids = encoder.tokenizer(list(texts), add_special_tokens=True, truncation=False, verbose=False)["input_ids"]
    return [(i, len(x)) for i, x in enumerate(ids) if len(x) > encoder.max_length]


def _load_pipeline(directory: str) -> Any:
    from paradiffusion.pipeline import ParaDiffusionPipeline

    if not Path(directory).is_dir():
        raise MissingInputError(f"--pipeline: {directory} is not a directory (write one with `paradiffusion export`)")
    try:
        return ParaDiffusionPipeline.from_pretrained(directory)
    except (OSError, ValueError, KeyError) as e:  # missing parts, unreadable safetensors/config files
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"--pipeline {directory}: cannot load it ({reason})") from None


def _check_pipeline_finite(pipeline: Any, where: str) -> None:
    assert_finite_modules({"text_encoder": pipeline.text_encoder, "unet": pipeline.unet, "vae": pipeline.vae}, where)


def generate_main(argv: list[str]) -> int:
    from paradiffusion.evaluate import SamplingSettings, make_grid, sample, save_images, to_pil
    from paradiffusion.plugins import benchmarks

    p = argparse.ArgumentParser(prog="paradiffusion generate", description="paragraphs -> PNGs + grid")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--config", action="append", help="the run's config.yaml (repeatable); use with --ckpt_path")
    src.add_argument("--pipeline", help="a pipeline directory written by `paradiffusion export`")
    p.add_argument("--ckpt_path", help="checkpoint to load (with --config)")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--prompts", type=Path,
                      help=".txt (one per line), .csv (Prompt column), .jsonl (paragraph field) or an installed "
                           "benchmark's own file format (then the images are also scored)")
    for benchmark in benchmarks():  # named prompt sets of installed benchmarks (e.g. --split), scored
        benchmark.add_generate_arguments(what)
    p.add_argument("--n", type=_positive, default=16,
                   help="how many paragraphs (of a benchmark's prompt set, or the first N of --prompts)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--steps", type=_positive, default=20)
    p.add_argument("--guidance", type=float, default=3.0)
    p.add_argument("--sampler", choices=["dpm", "ddim"], default="dpm")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch_size", type=_positive, default=16)
    p.add_argument("--no_ema", action="store_true", help="use the raw weights instead of the EMA")
    a = p.parse_args(argv)
    if a.config and not a.ckpt_path:
        p.error("--config needs --ckpt_path")

    # The paragraphs first: a bad prompts file is reported before a model is loaded.
    if a.prompts is not None:
        prompts = _read_prompts(a.prompts).head(a.n)
    else:
        prompts = next((got for b in benchmarks() if (got := b.prompts(a, a.n, a.seed)) is not None), None)
        if prompts is None:
            p.error("one of the arguments --prompts or a benchmark's prompt set is required")
    ids, paragraphs = prompts.ids, prompts.texts
    if a.pipeline:
        pipeline = _load_pipeline(a.pipeline)
        _check_pipeline_finite(pipeline, f"--pipeline {a.pipeline}")
    else:
        pipeline = load_module(a.config, a.ckpt_path).make_pipeline(use_ema=not a.no_ema)
        _check_pipeline_finite(pipeline, f"--ckpt_path {a.ckpt_path} ({'raw' if a.no_ema else 'EMA'} weights)")
    cut = _truncated(pipeline, paragraphs)
    if cut:  # counted and reported, as training counts them (train/truncated)
        limit = pipeline.text_encoder.max_length
        print(f"paradiffusion generate: {len(cut)} of {len(paragraphs)} paragraphs are longer than the text encoder's "
              f"max_length={limit} tokens and were cut there: "
              + ", ".join(f"{ids[i]} ({n} tokens)" for i, n in cut[:5]) + (", ..." if len(cut) > 5 else ""),
              file=sys.stderr)
    settings = SamplingSettings(a.steps, a.guidance, a.sampler, a.batch_size)
    images = sample(pipeline, paragraphs, settings, seed=a.seed)  # (N, 3, R, R)
    save_images(images, ids, a.out)
    to_pil(make_grid(images)).save(a.out / "grid.png")
    tokens = dict(cut)
    with (a.out / "paragraphs.jsonl").open("w") as f:
        for i, (key, text) in enumerate(zip(ids, paragraphs)):
            row = {"id": key, "paragraph": text, **({"truncated": True, "tokens": tokens[i]} if i in tokens else {})}
            f.write(json.dumps(row) + "\n")
    print(f"wrote {len(ids)} images and grid.png to {a.out}" + (f" ({len(cut)} paragraphs truncated)" if cut else ""))
    if prompts.references and prompts.score is not None:
        scores = prompts.score(images, prompts.references)
        (a.out / "scores.json").write_text(json.dumps(scores, indent=2, sort_keys=True) + "\n")
        print(json.dumps({k: round(v, 4) for k, v in scores.items() if "/" not in k}, indent=2))
    return 0


def export_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="paradiffusion export",
                                description="checkpoint -> released ParaDiffusion weights layout (safetensors)")
    p.add_argument("--config", action="append", required=True, help="the run's config.yaml (repeatable)")
    p.add_argument("--ckpt_path", required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--overwrite", action="store_true",
                   help="replace a non-empty --out (the old contents are removed: no stale file is left in it)")
    p.add_argument("--no_ema", action="store_true", help="export the raw weights instead of the EMA")
    a = p.parse_args(argv)
    out: Path = a.out
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a directory")
    if out.is_dir() and any(out.iterdir()) and not a.overwrite:
        entries = sorted(x.name for x in out.iterdir())
        raise UserError(f"--out {out} is not empty ({len(entries)} entries, e.g. {entries[:3]}): choose a new "
                        f"directory, or pass --overwrite to replace it")
    module = load_module(a.config, a.ckpt_path)
    pipeline = module.make_pipeline(use_ema=not a.no_ema)
    _check_pipeline_finite(pipeline, f"--ckpt_path {a.ckpt_path} ({'raw' if a.no_ema else 'EMA'} weights)")
    _write_dir_atomically(out, pipeline.save_pretrained)
    print(f"exported {'raw' if a.no_ema else 'EMA'} weights to {out}")
    return 0


def _write_dir_atomically(out: Path, write: Any) -> None:
    """`write(tmp)` into a sibling temporary directory, then put it in place of `out` (whose old contents go):
    a failed or interrupted write (disk full) leaves `out` as it was and no partial directory behind."""
    out = out.absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        write(tmp)
        if out.exists():
            out.rename(old)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not out.exists():
            old.rename(out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def cache_text_main(argv: list[str]) -> int:
    """`paradiffusion cache-text --config ...`: compute the frozen LLM states of a run's training and validation
    paragraphs into its `data.text_cache` now (what `fit` would do first), e.g. once before several runs."""
    p = argparse.ArgumentParser(prog="paradiffusion cache-text", description=cache_text_main.__doc__.split("\n")[0])
    p.add_argument("--config", action="append", required=True, help="the run's configs, as for fit (repeatable)")
    p.add_argument("overrides", nargs="*", help="further --key=value settings, as for fit")
    a, rest = p.parse_known_args(argv)
    cli = ParaDiffusionCLI(args=[x for c in a.config for x in ("--config", c)] + a.overrides + rest, run=False)
    module, data = cli.model, cli.datamodule
    if getattr(data, "text_cache", None) is None:
        raise UserError("cache-text: the configs set no data.text_cache (add --data.init_args.text_cache=DIR)")
    module.configure_model()
    cache = data.build_text_cache(module.text_encoder)
    if cache is None:
        raise UserError("cache-text: the text encoder has no frozen blocks to cache (LoRA in every block)")
    print(f"text cache {cache.root}: {len(cache)} paragraphs")
    return 0


def main(argv: list[str] | None = None) -> int | None:
    from_sys = argv is None  # then LightningCLI reads sys.argv itself (given both, it warns on every run)
    argv = list(sys.argv[1:] if argv is None else argv)
    command = f"paradiffusion {argv[0]}" if argv and not argv[0].startswith("-") else "paradiffusion"
    try:
        if argv and argv[0] not in (*OTHER_COMMANDS, *LIGHTNING_COMMANDS) and not argv[0].startswith("-"):
            from paradiffusion.plugins import commands

            plugin = commands().get(argv[0])
            if plugin is not None:  # a command an installed package adds (entry points `paradiffusion.commands`)
                return plugin(argv[1:])
        if argv and argv[0] == "generate":
            return generate_main(argv[1:])
        if argv and argv[0] == "export":
            return export_main(argv[1:])
        if argv and argv[0] == "cache-text":
            return cache_text_main(argv[1:])
        if not argv or argv[0] in ("-h", "--help"):
            from paradiffusion.plugins import commands

            installed = f"Installed plugin commands: {', '.join(sorted(commands()))}\n" if commands() else ""
            print(__doc__.strip() + "\n\n" + installed)
        ParaDiffusionCLI(args=None if from_sys else argv)
    except (UserError, NonFiniteError) as e:  # bad input (2) or a run stopped by the non-finite guard (1)
        print(f"{command}: {e}", file=sys.stderr)
        return e.exit_code
    except OSError as e:
        if e.errno != errno.ENOSPC:
            raise
        print(f"{command}: disk full while writing{' ' + str(e.filename) if e.filename else ''}: checkpoints and "
              f"exports are written whole or not at all, so the previous ones are intact; free space and run again",
              file=sys.stderr)
        return 1
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
