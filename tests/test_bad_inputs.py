"""The bad-input matrix of docs/reliability.md: one test per row, each in seconds.

User errors exit 2 with one line on stderr naming the file, line or field, and no traceback; nothing is built (no run
directory) before the inputs are checked. A run whose loss or gradient goes non-finite stops (exit 1) or skips the
step: no NaN/Inf reaches the weights, the EMA or a checkpoint, and `init_from`, `export` and `generate` refuse weights
that have them, naming the tensor.
"""
from __future__ import annotations

import copy
import errno
import io
import json
import re
import tarfile
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import torch
import yaml
from diffusers import DDPMScheduler
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from PIL import Image
from torch.utils.data import DataLoader

from helpers import EXP, REPO, random_lm_dir, TINY_UNET_AND_SCHEDULER
from paradiffusion.callbacks import NonFiniteGuard
from paradiffusion.checks import NonFiniteError, NonFiniteWeightsError, UserError, load_checkpoint
from paradiffusion.checkpoint_io import AtomicCheckpointIO
from paradiffusion.cli import ParaDiffusionCLI, load_module
from paradiffusion.cli import main as cli_main
from paradiffusion.models import LLMTextEncoder, LoRASettings
from fixtures import build_tiny_tokenizer, tiny_llama_config, tiny_unet
from paradiffusion.module import ParaDiffusion

NAN = float("nan")


# ---------------------------------------------------------------------------------------------------- helpers
@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Test-size models gain nothing from intra-op threads, and on a busy 2-core machine two OpenMP threads fighting
    another process made a 16 px training step take 8 s instead of 0.1 s."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run(capsys, *args) -> tuple[int, str]:
    """`paradiffusion ARGS` in this process: (exit code, stderr); argparse's exits count as exit codes."""
    capsys.readouterr()
    try:
        code = cli_main([str(a) for a in args])
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err


def assert_user_error(code: int, err: str, *fragments: str) -> str:
    """Exit 2, no traceback, and one last stderr line that names everything in `fragments`."""
    assert code == 2, err[-3000:]
    assert "Traceback" not in err and "Namespace(" not in err, err[-3000:]
    line = err.strip().splitlines()[-1]
    assert line.startswith("paradiffusion"), line
    for fragment in fragments:
        assert fragment in line, (fragment, line)
    return line


def tiny_config(lm_dir: Path, runs: Path, **model_args) -> dict:
    """A whole `paradiffusion fit` config at test size: 16 px ... 32 px UNet, 2-layer 64-wide LM, 64-token cap."""
    return {
        "seed_everything": 0,
        "trainer": {
            "accelerator": "cpu", "devices": 1, "precision": "32-true", "max_steps": 10, "max_epochs": -1,
            "check_val_every_n_epoch": None, "limit_val_batches": 0, "num_sanity_val_steps": 0,
            "enable_progress_bar": False, "enable_model_summary": False, "log_every_n_steps": 1,
            "gradient_clip_val": 1.0, "default_root_dir": str(runs),
            "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger",
                       "init_args": {"save_dir": str(runs), "name": "stage", "version": "run"}},
            "callbacks": [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                           "init_args": {"save_top_k": 0, "save_last": True, "every_n_train_steps": 1}}],
        },
        "model": {"class_path": "paradiffusion.module.ParaDiffusion", "init_args": {
            "text_encoder": {"class_path": "paradiffusion.models.LLMTextEncoder", "init_args": {
                "pretrained": str(lm_dir), "max_length": 64, "lora": {"r": 4}, "out_dim": 32}},
            **TINY_UNET_AND_SCHEDULER,
            "warmup_steps": 2, "ema_decay": 0.9, "sample_steps": 2, **model_args}},
        "data": {"class_path": "paradiffusion.data.Stage1PretrainData",
                 "init_args": {"train_data": {"class_path": "parashapes.ParaShapesIterable",
                                              "init_args": {"split": "stage1", "resolution": 32}},
                               "resolution": 32, "batch_size": 4, "n_val": 4}},
    }


@pytest.fixture(scope="module")
def lm_dir(tmp_path_factory) -> Path:
    return random_lm_dir(tmp_path_factory.mktemp("lm"), hidden_size=64)


@pytest.fixture(scope="module")
def run_files(tmp_path_factory, lm_dir) -> SimpleNamespace:
    """A run's config.yaml and checkpoints: good, NaN in a weight, Inf in an EMA weight."""
    root = tmp_path_factory.mktemp("run")
    cfg = root / "config.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config(lm_dir, root / "runs")))
    module = load_module(str(cfg))
    good = {"state_dict": {k: v.clone() for k, v in module.state_dict().items()}, "ema": module.ema.state_dict()}
    torch.save(good, root / "good.ckpt")
    nan = copy.deepcopy(good)
    nan["state_dict"]["unet.conv_in.weight"][0, 0, 0, 0] = NAN
    torch.save(nan, root / "nan.ckpt")
    ema_inf = copy.deepcopy(good)
    ema_inf["ema"]["shadow"]["unet.conv_out.bias"][0] = float("inf")
    torch.save(ema_inf, root / "ema_inf.ckpt")
    return SimpleNamespace(root=root, config=cfg, good=root / "good.ckpt", nan=root / "nan.ckpt",
                           ema_inf=root / "ema_inf.ckpt")


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory) -> str:
    return str(build_tiny_tokenizer(tmp_path_factory.mktemp("tok")))


def make_module(tok_dir: str, **kw) -> ParaDiffusion:
    torch.manual_seed(0)
    enc = LLMTextEncoder(llama_config=tiny_llama_config(), tokenizer=tok_dir, lora=LoRASettings(r=4), out_dim=32)
    sched = DDPMScheduler(beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction", clip_sample=False,
                          timestep_spacing="trailing")
    return ParaDiffusion(enc, tiny_unet(cross_attention_dim=32), sched,
                         **(dict(unet_lr=1e-3, lora_lr=1e-4, warmup_steps=1, ema_decay=0.9) | kw))


def loader(module: ParaDiffusion, nan_batches: set[int] = frozenset(), n_batches: int = 8) -> DataLoader:
    """Batches of 2 (16 px); the batches in `nan_batches` carry a NaN pixel (a non-finite loss)."""
    items = []
    for i in range(2 * n_batches):
        img = torch.full((3, 16, 16), 0.5)
        img[:, 4:12, 4:12] = i % 3 / 2
        if i // 2 in nan_batches:
            img[0, 0, 0] = NAN
        items.append({"id": f"item{i}", "text": f"a square of shade {i % 3}", "image": img})

    def collate(batch):
        tok = module.text_encoder.tokenize([b["text"] for b in batch])
        return {"pixel_values": torch.stack([2 * b["image"] - 1 for b in batch]), **tok,
                "text": [b["text"] for b in batch], "id": [b["id"] for b in batch]}

    return DataLoader(items, batch_size=2, collate_fn=collate)


def trainer(tmp_path: Path, callbacks: list, max_steps: int = 5) -> L.Trainer:
    return L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                     default_root_dir=tmp_path, gradient_clip_val=1.0, max_steps=max_steps, limit_val_batches=0,
                     callbacks=callbacks, log_every_n_steps=1)


def all_finite(module: ParaDiffusion) -> bool:
    tensors = [*module.state_dict().values(), *(module.ema.shadow.values() if module.ema else [])]
    return all(bool(torch.isfinite(t).all()) for t in tensors if t.is_floating_point())


# ======================================================================================= 1. non-finite guard
def test_nan_loss_stops_before_the_weights_the_ema_or_a_checkpoint_take_it(tok_dir, tmp_path):
    module = make_module(tok_dir)
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_top_k=0, save_last=True, every_n_train_steps=1)
    t = trainer(tmp_path, [NonFiniteGuard(), ckpt])
    with pytest.raises(NonFiniteError, match=r"non-finite loss \(nan\) at global_step 2 .*ids \['item4', 'item5'\]"):
        t.fit(module, loader(module, nan_batches={2}))
    assert t.global_step == 2 and all_finite(module) and module.ema.num_updates == 2
    saved = load_checkpoint(tmp_path / "ckpt" / "last.ckpt", "last.ckpt")  # finite (else this raises)
    assert saved["global_step"] == 2


def test_cli_run_that_diverges_exits_1_with_one_line_and_leaves_no_nan_checkpoint(run_files, tmp_path, capsys):
    # The reproduction: unet_lr=1000 with no warm-up, 10 steps (before: exit 0, NaN in last.ckpt).
    runs = tmp_path / "runs"
    code, err = run(capsys, "fit", "--config", run_files.config, "--model.init_args.unet_lr=1000",
                    "--model.init_args.warmup_steps=0", f"--trainer.logger.init_args.save_dir={runs}")
    line = err.strip().splitlines()[-1]
    assert code == 1 and "Traceback" not in err, err[-3000:]
    assert re.match(r"paradiffusion fit: non-finite loss \(nan\) at global_step \d+ ", line), line
    assert "--nonfinite.action=skip" in line
    last = runs / "stage" / "run" / "checkpoints" / "last.ckpt"
    assert last.is_file()
    load_checkpoint(last, "last.ckpt")  # the last good step's weights and EMA: all finite


def test_skip_mode_drops_the_step_and_its_ema_update_and_counts_it(tok_dir, tmp_path):
    class Snapshot(Callback):
        """Weights, EMA and optimizer state as the bad batch (2) starts and as the next one (3) starts."""

        def __init__(self):
            self.at = {}

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx in (2, 3):
                opt = trainer.optimizers[0]
                self.at[batch_idx] = {
                    "weights": {k: p.detach().clone() for k, p in pl_module.trainable_named_parameters().items()},
                    "ema": {k: v.clone() for k, v in pl_module.ema.shadow.items()},
                    "ema_updates": pl_module.ema.num_updates,
                    "opt": [{k: v.clone() if torch.is_tensor(v) else v for k, v in s.items()} for s in opt.state.values()],
                }

    module = make_module(tok_dir)
    guard, snap = NonFiniteGuard(action="skip", max_consecutive_skips=3), Snapshot()
    t = trainer(tmp_path, [guard, snap], max_steps=5)
    t.fit(module, loader(module, nan_batches={2}))
    assert t.global_step == 5 and guard.skipped == 1 and guard.consecutive == 0
    assert float(t.callback_metrics["train/skipped_steps"]) == 1.0
    before, after = snap.at[2], snap.at[3]
    assert all(torch.equal(before["weights"][k], after["weights"][k]) for k in before["weights"])
    assert all(torch.equal(before["ema"][k], after["ema"][k]) for k in before["ema"])
    assert before["ema_updates"] == after["ema_updates"] == 2 and module.ema.num_updates == 4
    assert len(before["opt"]) == len(after["opt"])
    for s0, s1 in zip(before["opt"], after["opt"]):
        assert all(torch.equal(s0[k], s1[k]) if torch.is_tensor(s0[k]) else s0[k] == s1[k] for k in s0)
    assert all_finite(module)
    assert not any(k for k in module.ema.__dict__ if k == "update")  # the one-shot EMA skip left nothing behind


def test_skip_mode_stops_after_n_bad_steps_in_a_row(tok_dir, tmp_path):
    module = make_module(tok_dir)
    guard = NonFiniteGuard(action="skip", max_consecutive_skips=3)
    with pytest.raises(NonFiniteError, match="3 steps in a row were non-finite and skipped"):
        trainer(tmp_path, [guard], max_steps=8).fit(module, loader(module, nan_batches={1, 2, 3, 4, 5, 6, 7}))
    assert guard.skipped == 3 and all_finite(module) and module.ema.num_updates == 1


def test_nonfinite_gradient_with_a_finite_loss_is_caught(tok_dir, tmp_path):
    class PoisonGradient(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx == 1:
                pl_module.unet.conv_out.weight.register_hook(lambda g: torch.full_like(g, float("inf")))

    module = make_module(tok_dir)
    with pytest.raises(NonFiniteError, match=r"non-finite gradient of 'unet.conv_out.weight' \(loss finite\) "
                                             r"at global_step 1"):
        trainer(tmp_path, [NonFiniteGuard(), PoisonGradient()]).fit(module, loader(module))
    assert all_finite(module)


def test_a_checkpoint_with_nan_is_refused_when_written(tok_dir, tmp_path):
    module = make_module(tok_dir)
    t = trainer(tmp_path, [NonFiniteGuard()], max_steps=1)
    t.fit(module, loader(module))
    with torch.no_grad():
        module.unet.conv_in.bias[0] = NAN
    with pytest.raises(NonFiniteError, match=r"tensor 'unet.conv_in.bias' has 1 NaN .*refused to write it"):
        t.save_checkpoint(tmp_path / "bad.ckpt")
    assert not (tmp_path / "bad.ckpt").exists()


def test_cli_puts_one_guard_and_atomic_checkpoints_on_every_trainer(run_files):
    def guards(*extra):
        cli = ParaDiffusionCLI(args=["--config", str(run_files.config), *extra], run=False)
        assert isinstance(cli.trainer.strategy.checkpoint_io, AtomicCheckpointIO)
        return [c for c in cli.trainer.callbacks if isinstance(c, NonFiniteGuard)]

    (default,) = guards()
    assert default.action == "stop"
    (skip,) = guards("--nonfinite.action=skip", "--nonfinite.max_consecutive_skips=4")
    assert (skip.action, skip.max_consecutive_skips) == ("skip", 4)
    (listed,) = guards("--trainer.callbacks+=paradiffusion.callbacks.NonFiniteGuard",
                       "--trainer.callbacks.max_consecutive_skips=7")  # one under trainer.callbacks replaces it
    assert listed.max_consecutive_skips == 7


def test_init_from_with_nan_weights_is_refused_naming_the_tensor(run_files, tmp_path, capsys):
    runs = tmp_path / "runs"
    code, err = run(capsys, "fit", "--config", run_files.config, f"--model.init_args.init_from={run_files.nan}",
                    f"--trainer.logger.init_args.save_dir={runs}", f"--trainer.default_root_dir={runs}")
    assert_user_error(code, err, "model.init_args.init_from", str(run_files.nan), "'unet.conv_in.weight' has 1 NaN")
    assert not runs.exists()  # refused before anything was built
    # the module refuses too, when built outside the CLI (the EMA weights it would start from hold an Inf)
    cli = ParaDiffusionCLI(args=["--config", str(run_files.config)], run=False)
    cli.model.hparams.init_from = str(run_files.ema_inf)
    with pytest.raises(NonFiniteWeightsError, match=r"'ema:unet.conv_out.bias' has 1 Inf"):
        cli.model.configure_model()


def test_export_and_generate_refuse_nan_weights_naming_the_tensor(run_files, tmp_path, capsys):
    cfg = run_files.config
    code, err = run(capsys, "export", "--config", cfg, "--ckpt_path", run_files.nan, "--out", tmp_path / "x")
    assert_user_error(code, err, "--ckpt_path", "'unet.conv_in.weight' has 1 NaN")
    assert not (tmp_path / "x").exists()
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red circle\n")
    code, err = run(capsys, "generate", "--config", cfg, "--ckpt_path", run_files.ema_inf, "--prompts", prompts,
                    "--out", tmp_path / "g")
    assert_user_error(code, err, "'ema:unet.conv_out.bias' has 1 Inf")
    # an exported pipeline whose files were damaged afterwards
    from safetensors.torch import load_file, save_file

    assert run(capsys, "export", "--config", cfg, "--ckpt_path", run_files.good, "--out", tmp_path / "pipe")[0] == 0
    weights = tmp_path / "pipe" / "unet" / "diffusion_pytorch_model.safetensors"
    state = load_file(str(weights))
    state["conv_in.weight"][0, 0, 0, 0] = NAN
    save_file(state, str(weights))
    code, err = run(capsys, "generate", "--pipeline", tmp_path / "pipe", "--prompts", prompts, "--out", tmp_path / "g")
    assert_user_error(code, err, "--pipeline", "'unet.conv_in.weight' has 1 NaN")
    assert not (tmp_path / "g").exists()


# ======================================================================================= 3. bad inputs
@pytest.mark.parametrize("name,content,fragment", [
    ("empty.txt", b"", "empty.txt: no paragraphs"),
    ("blank.txt", b"\n  \n\n", "blank.txt: no paragraphs"),
    ("header.csv", b"Prompt\n", "header.csv: no rows"),
    ("cells.csv", b"Prompt\nA red circle.\n\"\"\n", "cells.csv:3: empty Prompt"),
    ("columns.csv", b"caption\nA red circle.\n", "needs a Prompt, text or paragraph column (have ['caption'])"),
    ("empty.jsonl", b"\n", "empty.jsonl: no specs"),
    ("latin1.txt", b"A red circle.\nA blue square.\nA caf\xe9 sign.\n", "latin1.txt:3: not UTF-8 text (byte 0xe9 at column 6)"),
    ("latin1.csv", b"Prompt\nA caf\xe9 sign.\n", "latin1.csv:2: not UTF-8 text (byte 0xe9 at column 6)"),
    ("latin1.jsonl", b'{"id": "caf\xe9"}\n', "latin1.jsonl"),
    ("missing.txt", None, "--prompts: "),
], ids=["empty-txt", "blank-txt", "header-only-csv", "empty-cell-csv", "no-column-csv", "empty-jsonl",
        "latin1-txt", "latin1-csv", "latin1-jsonl", "missing"])
def test_bad_prompts_files_are_named(tmp_path, capsys, name, content, fragment):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    # the prompts are read before any model is loaded: the (missing) pipeline is never reached
    code, err = run(capsys, "generate", "--pipeline", tmp_path / "no_pipeline", "--prompts", path, "--out", tmp_path / "o")
    assert_user_error(code, err, fragment)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("args,fragment", [
    (["data", "generate", "--split", "test", "--n", "0"], "argument --n: must be >= 1"),
    (["data", "generate", "--split", "test", "--n", "-3"], "argument --n: must be >= 1"),
    (["data", "generate", "--split", "test", "--n", "2", "--resolution", "8"], "argument --resolution: must be in 32..512"),
    (["data", "generate", "--split", "nope", "--n", "2"], "argument --split: invalid choice: 'nope'"),
    (["generate", "--pipeline", "p", "--split", "test", "--n", "0"], "argument --n: must be >= 1"),
    (["generate", "--pipeline", "p", "--split", "nope"], "argument --split: invalid choice: 'nope'"),
], ids=["data-n0", "data-n-neg", "data-resolution", "data-split", "generate-n0", "generate-split"])
def test_bad_counts_sizes_and_splits_are_refused(tmp_path, capsys, args, fragment):
    code, err = run(capsys, *args, "--out", tmp_path / "out")
    assert_user_error(code, err, fragment)
    assert not (tmp_path / "out").exists()  # `data generate --n 0` used to write an empty split with exit 0


def _bad_checkpoint(kind: str, good: Path, tmp: Path) -> Path:
    path = tmp / f"{kind}.ckpt"
    if kind == "truncated":
        data = good.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "garbage":
        path.write_bytes(b"this is not a checkpoint" * 10)
    elif kind == "not_lightning":
        torch.save({"weights": torch.zeros(2)}, path)
    elif kind == "pickled_object":
        torch.save({"state_dict": {}, "obj": SimpleNamespace(a=1)}, path)  # weights_only refuses to unpickle it
    elif kind == "directory":
        path.mkdir()
    return path


@pytest.mark.parametrize("kind,fragment", [
    ("missing", "checkpoint not found"),
    ("empty", "is empty (0 bytes)"),
    ("truncated", "is not a readable checkpoint"),
    ("garbage", "is not a readable checkpoint"),
    ("not_lightning", "is not a Lightning checkpoint (no 'state_dict'; has ['weights'])"),
    ("pickled_object", "refused: weights_only=True"),
    ("directory", "is a directory, not a checkpoint file"),
])
def test_missing_or_corrupt_ckpt_path_is_refused_before_anything_is_built(run_files, tmp_path, capsys, kind, fragment):
    ckpt = _bad_checkpoint(kind, run_files.good, tmp_path)
    runs = tmp_path / "runs"
    code, err = run(capsys, "fit", "--config", run_files.config, "--ckpt_path", ckpt,
                    f"--trainer.logger.init_args.save_dir={runs}", f"--trainer.default_root_dir={runs}")
    assert_user_error(code, err, "--ckpt_path", str(ckpt), fragment)
    assert not runs.exists()  # before: the model was built and a run directory with config.yaml was left behind
    if kind in ("missing", "truncated"):
        for cmd in (["export", "--out", tmp_path / "x"], ["generate", "--split", "test", "--out", tmp_path / "g"]):
            code, err = run(capsys, cmd[0], "--config", run_files.config, "--ckpt_path", ckpt, *cmd[1:])
            assert_user_error(code, err, "--ckpt_path", fragment)


class _Checked(Exception):
    pass


class _ChecksOnly(ParaDiffusionCLI):
    """The real CLI up to its input checks; stops before building anything (a check that does not fire must not
    start a real stage)."""

    def instantiate_classes(self) -> None:
        raise _Checked()


def test_a_stage_whose_previous_stage_has_not_run_says_which_command_to_run(run_files, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no runs/ here
    base = ["fit", "--config", str(EXP / "base.yaml"), "--config", str(EXP / "model" / "tiny.yaml")]
    # stage 2 before stage 1 (its init_from checkpoint)
    with pytest.raises(UserError) as e:
        _ChecksOnly(args=[*base, "--config", str(EXP / "tiny" / "stage2.yaml")])
    assert str(e.value).startswith("model.init_args.init_from: runs/tiny/stage1/run/checkpoints/last.ckpt not found; "
                                   "it is written by "), e.value
    assert str(e.value).endswith("stage1.yaml, which has not been run: run it first: paradiffusion fit --config "
                                 "experiments/base.yaml --config experiments/model/tiny.yaml --config "
                                 "experiments/tiny/stage1.yaml"), e.value
    # the scratch-LM arm before stage 0 (its text encoder directory; before: the cause was buried in a Namespace dump)
    with pytest.raises(UserError) as e:
        _ChecksOnly(args=[*base, "--config", str(EXP / "tiny" / "stage1.yaml"), "--config",
                          str(EXP / "tiny" / "scratch_lm.yaml")])
    assert str(e.value).startswith("model.init_args.text_encoder.init_args.pretrained: runs/tiny/stage0/hf is not a "
                                   "directory"), e.value
    assert str(e.value).endswith("stage0_lm.yaml, which has not been run: run it first: paradiffusion fit --config "
                                 "experiments/tiny/stage0_lm.yaml"), e.value
    assert "\n" not in str(e.value)
    # through the entry point: exit 2, that one line, nothing built
    runs = tmp_path / "runs"
    code, err = run(capsys, "fit", "--config", run_files.config, f"--model.init_args.init_from={runs}/stage1/last.ckpt",
                    f"--trainer.logger.init_args.save_dir={runs}", f"--trainer.default_root_dir={runs}")
    assert_user_error(code, err, f"paradiffusion fit: model.init_args.init_from: {runs}/stage1/last.ckpt not found")
    assert not runs.exists()


def test_unknown_config_keys_and_wrong_types_are_refused(run_files, capsys):
    code, err = run(capsys, "fit", "--config", run_files.config, "--model.init_args.unet_lrr=1")
    assert code == 2 and "unet_lrr" in err and "Traceback" not in err
    code, err = run(capsys, "fit", "--config", run_files.config, "--model.init_args.unet_lr=fast")
    assert code == 2 and "unet_lr" in err and "Traceback" not in err


def test_generate_counts_and_reports_truncated_paragraphs(run_files, tmp_path, capsys):
    prompts = tmp_path / "p.txt"
    prompts.write_text("A red circle at the top left.\n" + " ".join(["A blue square at the bottom."] * 1000) + "\n")
    code, err = run(capsys, "generate", "--config", run_files.config, "--ckpt_path", run_files.good, "--prompts",
                    prompts, "--steps", 1, "--out", tmp_path / "g")
    assert code == 0, err[-3000:]
    assert re.search(r"1 of 2 paragraphs are longer than the text encoder's max_length=64 tokens and were cut "
                     r"there: 0001 \(\d+ tokens\)", err), err[-2000:]
    rows = [json.loads(line) for line in (tmp_path / "g" / "paragraphs.jsonl").read_text().splitlines()]
    assert "truncated" not in rows[0] and rows[1]["truncated"] is True and rows[1]["tokens"] > 1000


def test_export_refuses_a_non_empty_out_and_overwrite_leaves_no_stale_file(run_files, tmp_path, capsys):
    out = tmp_path / "pipe"
    out.mkdir()
    (out / "stale.txt").write_text("the user's old file")
    args = ["export", "--config", run_files.config, "--ckpt_path", run_files.good, "--out", out]
    code, err = run(capsys, *args)
    assert_user_error(code, err, f"--out {out} is not empty", "['stale.txt']", "--overwrite")
    assert (out / "stale.txt").read_text() == "the user's old file"
    assert run(capsys, *args, "--overwrite")[0] == 0
    assert not (out / "stale.txt").exists() and (out / "unet" / "config.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe"]  # no partial or old copy left beside it
    (tmp_path / "file").write_text("x")
    assert_user_error(*run(capsys, "export", *args[1:5], "--out", tmp_path / "file"), "is a file, not a directory")


# ======================================================================================= 4. more input classes
def test_disk_full_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.ones(3)}, "global_step": 1}, path)

    def full_disk(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("paradiffusion.checkpoint_io.torch.save", full_disk)
    with pytest.raises(OSError, match="No space left"):
        AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.zeros(3)}, "global_step": 2}, path)
    assert load_checkpoint(path, "last.ckpt")["global_step"] == 1  # the previous checkpoint, whole
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no partial file


def test_disk_full_during_export_exits_1_and_keeps_the_old_export(run_files, tmp_path, monkeypatch, capsys):
    out = tmp_path / "pipe"
    out.mkdir()
    (out / "model_index.json").write_text("{}")

    def full_disk(self, directory, **kwargs):
        Path(directory).mkdir(parents=True)
        (Path(directory) / "unet").mkdir()
        raise OSError(errno.ENOSPC, "No space left on device", str(Path(directory) / "unet" / "x.safetensors"))

    monkeypatch.setattr("paradiffusion.pipeline.ParaDiffusionPipeline.save_pretrained", full_disk)
    code, err = run(capsys, "export", "--config", run_files.config, "--ckpt_path", run_files.good, "--out", out,
                    "--overwrite")
    assert code == 1 and "Traceback" not in err
    assert "paradiffusion export: disk full while writing" in err.strip().splitlines()[-1]
    assert [p.name for p in out.iterdir()] == ["model_index.json"]  # the previous export is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe"]  # and no partial directory is left


def _shard(tmp_path: Path) -> tuple[Path, bytes]:
    from parashapes import generate_split
    from parashapes.storage import write_webdataset

    (shard,) = write_webdataset(generate_split("stage1", 4, seed=0), tmp_path / "wds", 32, "plain", 10)
    return shard, shard.read_bytes()


def test_interrupted_webdataset_shard_cut_after_its_last_sample_reads_whole(tmp_path):
    from paradiffusion.data.sources import WebDatasetSource

    shard, data = _shard(tmp_path)
    shard.write_bytes(data[: len(data) - 1500])  # only the zero padding after the last member is lost
    src = WebDatasetSource(str(shard), 32)
    assert len(list(src)) == 4 and src.stats["ok"] == 4


@pytest.mark.parametrize("keep", [0.5, 0.04], ids=["cut-mid-shard", "cut-in-first-member"])
def test_interrupted_webdataset_shard_is_counted_not_fatal_or_silent(tmp_path, keep):
    from paradiffusion.data.sources import WebDatasetSource

    shard, data = _shard(tmp_path)
    shard.write_bytes(data[: int(len(data) * keep)])  # a download interrupted part-way
    src = WebDatasetSource(str(shard), 32)
    items = list(src)  # before: cut in a member -> tarfile.ReadError mid-run; cut between -> samples silently lost
    assert src.stats["ok"] == len(items) < 4
    assert src.stats["skipped_truncated"] >= 1


def test_webdataset_caption_that_is_not_utf8_is_counted_not_fatal(tmp_path):
    from paradiffusion.data.sources import WebDatasetSource

    png = io.BytesIO()
    Image.new("RGB", (32, 32), (255, 0, 0)).save(png, format="PNG")
    with tarfile.open(tmp_path / "00000.tar", "w") as tar:
        for name, data in [("a.png", png.getvalue()), ("a.txt", b"a red image"),
                           ("b.png", png.getvalue()), ("b.txt", b"a caf\xe9 sign")]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    src = WebDatasetSource(str(tmp_path / "00000.tar"), 32)
    assert [it["text"] for it in src] == ["a red image"]  # before: UnicodeDecodeError mid-run
    assert src.stats["skipped_unreadable"] == 1


def test_manifest_paths_resolve_against_its_folder_even_outside_it(tmp_path):
    from paradiffusion.data.sources import ManifestDataset

    (tmp_path / "sub").mkdir()
    Image.new("RGB", (32, 32), (255, 0, 0)).save(tmp_path / "outside.png")
    manifest = tmp_path / "sub" / "m.jsonl"
    manifest.write_text(json.dumps({"image": "../outside.png", "text": "a red image"}) + "\n"
                        + json.dumps({"image": str(tmp_path / "outside.png"), "text": "the same, absolute"}) + "\n")
    ds = ManifestDataset(manifest, 32)
    assert [r[1].resolve() for r in ds.records] == [(tmp_path / "outside.png").resolve()] * 2
    assert torch.equal(ds[0]["image"], ds[1]["image"]) and ds[0]["image"][0].mean() == 1.0
    # a path written relative to the working directory instead of the manifest is named, with the manifest line
    manifest.write_text(json.dumps({"image": "sub/../outside_typo.png", "text": "x"}) + "\n")
    with pytest.raises(FileNotFoundError, match=r"m.jsonl:1: image file not found: .*sub/sub/../outside_typo.png"):
        ManifestDataset(manifest, 32)[0]


def test_manifest_with_a_missing_image_is_refused_when_read_not_mid_run(tmp_path):
    from paradiffusion.data.sources import ManifestDataset

    Image.new("RGB", (32, 32)).save(tmp_path / "a.png")
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"image": "a.png", "text": "x"}) + "\n" + json.dumps({"image": "b.png", "text": "y"}) + "\n")
    with pytest.raises(FileNotFoundError, match=r"m.jsonl:2: image file not found"):
        ManifestDataset(manifest, 32)  # before: only when record 2 is drawn, hours into a run


MODES = {
    "RGBA": lambda: Image.new("RGBA", (32, 32), (255, 0, 0, 0)),  # fully transparent (hidden colour: red)
    "LA": lambda: Image.new("LA", (32, 32), (0, 0)),
    "P+transparency": lambda: _transparent_palette(),
    "L": lambda: Image.new("L", (32, 32), 200),
    "1": lambda: Image.new("1", (32, 32), 1),
    "CMYK": lambda: Image.new("CMYK", (32, 32), (0, 255, 255, 0)),
    "I;16": lambda: Image.fromarray(np.full((32, 32), 32768, dtype=np.uint16)),  # 16-bit PNG, mid gray
}


def _transparent_palette() -> Image.Image:
    im = Image.new("P", (32, 32), 0)
    im.putpalette([0, 0, 0] * 256)
    im.info["transparency"] = 0
    return im


def _roundtrip(mode: str) -> Image.Image:
    buf = io.BytesIO()
    MODES[mode]().save(buf, format="JPEG" if mode == "CMYK" else "PNG")
    buf.seek(0)
    im = Image.open(buf)
    im.load()
    return im


@pytest.mark.parametrize("mode", list(MODES))
def test_mixed_image_modes_all_load_as_rgb_in_range(mode):
    from paradiffusion.data.sources import to_tensor

    t = to_tensor(_roundtrip(mode), 32)
    assert t.shape == (3, 32, 32) and t.dtype == torch.float32 and 0 <= float(t.min()) <= float(t.max()) <= 1


@pytest.mark.parametrize("mode,expected", [("RGBA", 1.0), ("LA", 1.0), ("P+transparency", 1.0), ("I;16", 0.5)])
def test_transparent_and_16_bit_images_look_as_a_viewer_shows_them(mode, expected):
    from paradiffusion.data.sources import to_tensor

    t = to_tensor(_roundtrip(mode), 32)  # before: transparent -> its hidden colour (red/black); 16-bit -> white
    assert torch.allclose(t, torch.full_like(t, expected), atol=0.01), t.mean((1, 2))


def test_security_checkpoints_load_weights_only_and_exports_are_safetensors():
    src = REPO / "src" / "paradiffusion"
    loads = [(p, line) for p in src.rglob("*.py") for line in p.read_text().splitlines()
             if "torch.load(" in line and not line.lstrip().startswith("#")]
    assert loads and all("weights_only=True" in line for _, line in loads), [f"{p}: {ln}" for p, ln in loads]
    text = "\n".join(p.read_text() for p in src.rglob("*.py"))
    assert "trust_remote_code=True" not in text and "safe_serialization=False" not in text
    assert "pickle.load" not in text
