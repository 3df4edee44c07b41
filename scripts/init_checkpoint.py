"""A small starting-weights file for `init_from`, from a Lightning checkpoint: the EMA weights as the weights (what
the next stage takes by default), no optimizer state — 19 MB instead of 66 MB for the tiny model, so it can travel
to a GPU node — and, with ``--lm``, the LLM's weights replaced by those of another Hugging Face model directory of
the same shapes (a stage-0 LM trained longer with the same tokenizer), so a stage can start from one run's UNet
with another LM.

    python scripts/init_checkpoint.py runs/full4/stage1/run/checkpoints/last.ckpt runs/gpu_init/stage1_ema.ckpt
    python scripts/init_checkpoint.py runs/full4/stage1/run/checkpoints/last.ckpt runs/gpu_init/stage1_lm1500.ckpt \\
        --lm runs/lm1500/hf
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
from safetensors.torch import load_file

LM_PREFIX = "text_encoder.lm."  # the module's LLM (LlamaForCausalLM) keys: text_encoder.lm.<HF key>


def init_checkpoint(ckpt_path: Path, out: Path, raw: bool = False, lm: Path | None = None) -> dict[str, int]:
    """Write ``{"state_dict", "global_step"}`` to ``out``; returns how many weights came from the EMA / the LM."""
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    state = dict(ckpt["state_dict"])
    counts = {"ema": 0, "lm": 0}
    if not raw and "ema" in ckpt:
        shadow = {k: v for k, v in ckpt["ema"]["shadow"].items() if k in state}
        state.update({k: v.to(state[k].dtype) for k, v in shadow.items()})
        counts["ema"] = len(shadow)
    if lm is not None:
        lm_state = load_file(str(lm / "model.safetensors"))
        for k in [k for k in state if k.startswith(LM_PREFIX)]:
            hf_key = k[len(LM_PREFIX):]
            if hf_key not in lm_state:
                raise KeyError(f"{lm}/model.safetensors lacks {hf_key} (a different architecture?)")
            if lm_state[hf_key].shape != state[k].shape:
                raise ValueError(f"{lm}: {hf_key} has shape {tuple(lm_state[hf_key].shape)}, the checkpoint's LLM "
                                 f"{tuple(state[k].shape)} (same tokenizer and width needed)")
            state[k] = lm_state[hf_key]
            counts["lm"] += 1
        if counts["lm"] == 0:
            raise ValueError(f"{ckpt_path} holds no LLM weights ({LM_PREFIX}*) to replace (checkpoint_frozen=False?)")
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": state, "global_step": ckpt.get("global_step")}, out)
    return counts


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("ckpt", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--raw", action="store_true", help="keep the raw weights instead of the EMA ones")
    p.add_argument("--lm", type=Path, default=None, help="HF model directory whose weights replace the LLM's")
    a = p.parse_args()
    counts = init_checkpoint(a.ckpt, a.out, a.raw, a.lm)
    print(f"{counts['ema']} weights from the EMA, {counts['lm']} LLM weights from {a.lm}; "
          f"wrote {a.out} ({a.out.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
