"""Speed check for a model config: seconds per training step and per sampled batch, on this machine.

    python scripts/bench.py --config experiments/model/tiny.yaml --batch-size 32 [--lm DIR]

Without `--lm`, the text encoder is a random Llama of the given width/depth (the stage-0 LM's shape) with a tiny
BPE tokenizer, so the figure does not depend on a trained stage-0 model.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import jsonargparse
import lightning as L
import torch
from lightning.pytorch.cli import LightningArgumentParser


def random_lm(directory: str, hidden_size: int, layers: int) -> str:
    """A random-init Llama HF directory (the stage-0 LM's shape) with a small byte-level BPE tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import AutoModelForCausalLM, LlamaConfig, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<pad>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(["a small red circle at the top left of a large blue square on a white background"] * 16,
                            trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))])
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>").save_pretrained(directory)
    config = LlamaConfig(vocab_size=400, hidden_size=hidden_size, intermediate_size=hidden_size * 2,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=1024, bos_token_id=1, eos_token_id=2, pad_token_id=0,
                         tie_word_embeddings=False)
    AutoModelForCausalLM.from_config(config).save_pretrained(directory)
    return str(Path(directory))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="experiments/model/tiny.yaml")
    ap.add_argument("--lm", default=None, help="stage-0 LM directory (default: random Llama)")
    ap.add_argument("--lm-hidden", type=int, default=256)
    ap.add_argument("--lm-layers", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--tokens", type=int, default=80, help="approximate paragraph length in words")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--sample-images", type=int, default=16)
    args = ap.parse_args(argv)
    torch.manual_seed(0)

    lm_dir = args.lm or random_lm(tempfile.mkdtemp(prefix="bench-lm-"), args.lm_hidden, args.lm_layers)

    parser = LightningArgumentParser(parser_mode="omegaconf")
    parser.add_lightning_class_args(L.LightningModule, "model", subclass_mode=True)
    parser.add_argument("--config", action=jsonargparse.ActionConfigFile)
    # the LM directory replaces whatever encoder source the model config names (tiny: SmolLM2's GGUF), as the
    # from-scratch arm does (experiments/tiny/scratch_lm.yaml)
    arm = Path(__file__).resolve().parents[1] / "experiments" / "tiny" / "scratch_lm.yaml"
    cfg = parser.parse_args(["--config", args.config, "--config", str(arm),
                             f"--model.init_args.text_encoder.init_args.pretrained={lm_dir}"])
    module = parser.instantiate(cfg).model
    module.configure_model()
    module.trainer = None
    optimizer = module.configure_optimizers()["optimizer"]

    size = module.unet.config.sample_size * (8 if module.vae is not None else 1)
    words = "a small red circle at the top left of a large blue square on a white background".split()
    texts = [" ".join(words[(i + j) % len(words)] for j in range(args.tokens)) for i in range(args.batch_size)]
    tok = module.text_encoder.tokenize(texts)
    batch = {"pixel_values": torch.rand(args.batch_size, 3, size, size) * 2 - 1, **tok, "text": texts}
    n_unet = sum(p.numel() for p in module.unet.parameters())
    n_train = sum(p.numel() for p in module.parameters() if p.requires_grad)
    print(f"UNet {n_unet / 1e6:.2f}M params, trainable {n_train / 1e6:.2f}M, T={tok['input_ids'].shape[1]} tokens, "
          f"threads={torch.get_num_threads()}")

    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        loss = module.diffusion_step(batch, module.hparams.caption_dropout)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    steady = sorted(times[2:])[len(times[2:]) // 2] if len(times) > 2 else times[-1]
    print(f"train: {steady:.2f} s/step at batch {args.batch_size} (median after warm-up; all: "
          f"{', '.join(f'{t:.2f}' for t in times)})")

    pipe = module.make_pipeline(use_ema=False)
    t0 = time.perf_counter()
    pipe(texts[: args.sample_images], num_inference_steps=module.hparams.sample_steps,
         guidance_scale=module.hparams.guidance_scale, batch_size=args.sample_images)
    print(f"sample: {time.perf_counter() - t0:.2f} s for {args.sample_images} images "
          f"({module.hparams.sample_steps} {module.hparams.sampler} steps, CFG {module.hparams.guidance_scale})")


if __name__ == "__main__":
    main()
