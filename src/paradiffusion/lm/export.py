"""Write the stage-0 LM as an ordinary Hugging Face model directory (the Llama-2-7b-hf layout).

`config.json`, `generation_config.json`, `model.safetensors` and the tokenizer files: loadable with
`AutoModelForCausalLM.from_pretrained(dir)` / `AutoTokenizer.from_pretrained(dir)` offline, and so by
`LLMTextEncoder(pretrained=dir)`.

Command line: `python -m paradiffusion.lm.export CKPT OUT_DIR`.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase

from paradiffusion.lm.tokenizer import write_tokenizer_files

# Key under which `CausalLMPretrain.on_save_checkpoint` stores what export needs besides the weights.
CKPT_KEY = "paradiffusion_lm"


def save_hf_dir(
    model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerBase | dict[str, str], out_dir: str | Path
) -> Path:
    """Save `model` (safetensors) and the tokenizer (object, or its files as {name: text}) to `out_dir`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir))  # safetensors is the default serialisation
    if isinstance(tokenizer, dict):
        write_tokenizer_files(tokenizer, out_dir)
    else:
        tokenizer.save_pretrained(str(out_dir))
    return out_dir


def export_hf(ckpt_path: str | Path, out_dir: str | Path) -> Path:
    """Export a `CausalLMPretrain` Lightning checkpoint to a Hugging Face model directory; returns `out_dir`.

    The checkpoint is self-contained: it carries the LlamaConfig and the tokenizer files next to the weights.
    For sharded (DeepSpeed) checkpoints, consolidate to a single file first.
    """
    ckpt_path = Path(ckpt_path)
    if not ckpt_path.is_file():
        raise FileNotFoundError(f"{ckpt_path}: no such checkpoint file")
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    meta = ckpt.get(CKPT_KEY)
    if meta is None:
        raise ValueError(f"{ckpt_path}: no '{CKPT_KEY}' entry; not a CausalLMPretrain checkpoint")
    config = LlamaConfig(**meta["llama_config"])
    # The module holds the LlamaForCausalLM as `self.model`: strip that one prefix.
    state = {k[len("model.") :]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    with torch.device("meta"):  # no throwaway random init; weights are assigned from the checkpoint
        model = LlamaForCausalLM(config)
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    # A tied lm_head is re-pointed at the embedding by tie_weights(); anything else missing is an error.
    model.tie_weights()
    missing = [k for k in missing if not (config.tie_word_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        raise ValueError(f"{ckpt_path}: state dict mismatch: missing {missing}, unexpected {unexpected}")
    return save_hf_dir(model.eval(), meta["tokenizer_files"], out_dir)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m paradiffusion.lm.export", description=export_hf.__doc__)
    parser.add_argument("ckpt_path")
    parser.add_argument("out_dir")
    args = parser.parse_args(argv)
    print(export_hf(args.ckpt_path, args.out_dir))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
