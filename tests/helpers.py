"""Shared test helpers (not a test module)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXP = REPO / "experiments"

#: `model.init_args` entries of a 32 px, 2-level UNet (cross-attention dim 32) and its v-prediction scheduler: the
#: smallest ParaDiffusion the CLI-level tests train in seconds
TINY_UNET_AND_SCHEDULER = {
    "unet": {"class_path": "diffusers.UNet2DConditionModel", "init_args": {
        "sample_size": 32, "in_channels": 3, "out_channels": 3, "block_out_channels": [32, 64],
        "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
        "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"], "layers_per_block": 1,
        "cross_attention_dim": 32, "attention_head_dim": 2, "norm_num_groups": 16}},
    "noise_scheduler": {"class_path": "diffusers.DDPMScheduler", "init_args": {
        "beta_schedule": "squaredcos_cap_v2", "prediction_type": "v_prediction", "clip_sample": False,
        "timestep_spacing": "trailing"}},
}


def random_lm_dir(directory: Path, hidden_size: int = 128) -> Path:
    """A random-init Llama HF directory with a tiny BPE tokenizer: stands in for a stage-0 LM in fast tests."""
    from transformers import AutoModelForCausalLM

    from fixtures import build_tiny_tokenizer, tiny_llama_config

    build_tiny_tokenizer(directory)
    AutoModelForCausalLM.from_config(tiny_llama_config(hidden_size=hidden_size)).save_pretrained(directory)
    return directory


def tiny_stage_args(stage: int, lm_dir: Path, out: Path, *extra: str) -> list[str]:
    """`paradiffusion fit` arguments for a tiny stage, shrunk to seconds."""
    return [
        "--config", str(EXP / "base.yaml"), "--config", str(EXP / "model" / "tiny.yaml"),
        "--config", str(EXP / "tiny" / f"stage{stage}.yaml"),
        # a random 2-block LM instead of SmolLM2 (seconds, not minutes), read live (no text cache)
        "--config", str(Path(__file__).parent / "configs" / "random_lm.yaml"),
        f"--model.init_args.text_encoder.init_args.pretrained={lm_dir}",
        *(["--data.init_args.n_train=16"] if stage == 3 else []),
        f"--trainer.logger.init_args.save_dir={out}",
        "--trainer.max_steps=2", "--trainer.val_check_interval=2", "--trainer.num_sanity_val_steps=0",
        "--trainer.enable_progress_bar=false", "--data.init_args.batch_size=4", "--data.init_args.n_val=4",
        *extra,
    ]


def run_cli(args: list[str], timeout: int = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `paradiffusion ...` in a fresh interpreter (needed for DDP, which re-launches the command per rank)."""
    proc = subprocess.run([sys.executable, "-m", "paradiffusion.cli", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        raise AssertionError(f"paradiffusion {' '.join(args[:3])} … failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return proc
