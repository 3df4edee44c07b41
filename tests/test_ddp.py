"""DDP on CPU (gloo, 2 processes) with the real module and DataModule: both ranks train and end in sync.

Lightning refuses DeepSpeed on CPU; the DeepSpeed ZeRO checks live in tests/test_gpu.py (scripts/gpu_check.sh).
"""
from __future__ import annotations

import json
import os

import pytest
import torch

from helpers import random_lm_dir, run_cli, tiny_stage_args


def test_ddp_two_processes_agree(tmp_path):
    lm = random_lm_dir(tmp_path / "lm")
    args = ["fit", *tiny_stage_args(2, lm, tmp_path / "runs", "--model.init_args.init_from=null",
                                     "--trainer.strategy=ddp", "--trainer.devices=2", "--trainer.accelerator=cpu",
                                     "--trainer.callbacks+=paradiffusion.callbacks.ParameterChecksum")]
    env = dict(os.environ, OMP_NUM_THREADS="1")  # 2 ranks on 2 cores: one thread each
    run_cli(args, timeout=900, env=env)
    run = tmp_path / "runs" / "stage2" / "run"
    records = [json.loads((run / f"param_checksum_rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["rank"] for r in records] == [0, 1]
    assert all(r["world_size"] == 2 and r["global_step"] == 2 for r in records)
    assert records[0]["num_tensors"] == records[1]["num_tensors"] > 0
    # gradients are all-reduced, so both replicas hold the same weights after the optimizer steps
    assert records[0]["sum"] == pytest.approx(records[1]["sum"], rel=1e-9, abs=1e-9)
    assert records[0]["abs_sum"] == pytest.approx(records[1]["abs_sum"], rel=1e-9)
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True, mmap=True)["global_step"] == 2


def test_cli_destroys_the_process_group_it_leaves(tmp_path):
    # Lightning keeps the process group after fit; the CLI ends it so gloo's threads do not outlive the interpreter.
    import torch.distributed as dist

    from paradiffusion.cli import _destroy_process_group

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    assert dist.is_initialized()
    _destroy_process_group()
    assert not dist.is_initialized()
    _destroy_process_group()  # nothing to end: a no-op (single-process runs)
