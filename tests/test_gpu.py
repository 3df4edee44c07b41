"""GPU checks (marked `gpu`; run them all with `bash scripts/gpu_check.sh`): DeepSpeed ZeRO-2 fit + resume in
bf16-mixed, ZeRO-3 with the model built in `configure_model`, and the SmolLM2 (GGUF) encoder with LoRA.
Each runs the real CLI in a subprocess for a few steps. `SMOLLM2_GGUF=<file>` swaps in another GGUF for the SmolLM2 check
(e.g. a 2-block copy from `scripts/shrink_gguf.py` where the 98 MB file cannot be brought)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from helpers import EXP, random_lm_dir, run_cli, tiny_stage_args

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

GPU = ["--trainer.accelerator=gpu", "--trainer.devices=1", "--trainer.precision=bf16-mixed",
       "--trainer.callbacks+=paradiffusion.callbacks.ParameterChecksum"]


def _global_step(run: Path) -> int:
    """The step a fit ended at, as written by the ParameterChecksum callback (a DeepSpeed checkpoint is a directory
    in DeepSpeed's own pickle format, which we do not unpickle)."""
    return json.loads((run / "param_checksum_rank0.json").read_text())["global_step"]


def test_zero2_fit_then_resume(tmp_path):
    lm = random_lm_dir(tmp_path / "lm")
    base = tiny_stage_args(2, lm, tmp_path / "runs", "--model.init_args.init_from=null",
                           "--trainer.strategy=deepspeed_stage_2", *GPU)
    run_cli(["fit", *base, "--trainer.max_steps=4", "--trainer.val_check_interval=2"])
    run = tmp_path / "runs" / "stage2" / "run"
    last = run / "checkpoints" / "last.ckpt"
    assert last.exists() and _global_step(run) == 4
    run_cli(["fit", *base, "--trainer.max_steps=6", "--trainer.val_check_interval=2", f"--ckpt_path={last}"])
    assert _global_step(run) == 6


def test_zero3_builds_in_configure_model(tmp_path):
    lm = random_lm_dir(tmp_path / "lm")
    run_cli(["fit", *tiny_stage_args(2, lm, tmp_path / "runs", "--model.init_args.init_from=null",
                                     "--model.init_args.ema_decay=null", "--trainer.strategy=deepspeed_stage_3", *GPU)])
    assert (tmp_path / "runs" / "stage2" / "run" / "checkpoints" / "last.ckpt").exists()


def test_smollm2_encoder_with_lora_on_gpu(tmp_path):
    args = ["fit", "--config", str(EXP / "base.yaml"), "--config", str(EXP / "model" / "smollm2.yaml"),
            "--config", str(EXP / "smollm2" / "stage2.yaml"), "--model.init_args.init_from=null",
            f"--trainer.logger.init_args.save_dir={tmp_path}", "--trainer.max_steps=3", "--trainer.val_check_interval=3",
            "--trainer.num_sanity_val_steps=0", "--data.init_args.batch_size=8", "--data.init_args.n_val=8",
            "--data.init_args.num_workers=2"]
    if os.environ.get("SMOLLM2_GGUF"):
        args.append(f"--model.init_args.text_encoder.init_args.gguf_file={os.environ['SMOLLM2_GGUF']}")
    run_cli(args, timeout=900)
    assert (tmp_path / "stage2" / "run" / "checkpoints" / "last.ckpt").exists()
