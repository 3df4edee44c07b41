"""experiments/model/*.yaml parse with the project's LightningCLI parser; tiny instantiates from a stage-0
directory; the 7B configuration builds on the meta device (no weights materialised)."""
from pathlib import Path

import jsonargparse
import lightning as L
import pytest
import torch
from diffusers import AutoencoderKL
from lightning.pytorch.cli import LightningArgumentParser
from transformers import AutoModelForCausalLM, LlamaConfig

from fixtures import build_tiny_tokenizer, tiny_llama_config
from paradiffusion.models.unet import count_parameters

MODEL_DIR = Path(__file__).resolve().parents[1] / "experiments" / "model"


def parse(name: str, *overrides: str):
    parser = LightningArgumentParser(parser_mode="omegaconf")
    parser.add_lightning_class_args(L.LightningModule, "model", subclass_mode=True)
    parser.add_argument("--config", action=jsonargparse.ActionConfigFile)
    cfg = parser.parse_args(["--config", str(MODEL_DIR / f"{name}.yaml"), *overrides])
    return parser, cfg


@pytest.mark.parametrize("name", ["tiny", "smollm2", "llama2-7b"])
def test_model_yaml_parses(name):
    _, cfg = parse(name)
    init = cfg.model.init_args
    assert cfg.model.class_path == "paradiffusion.module.ParaDiffusion"
    assert init.text_encoder.init_args.max_length == 512
    attention = ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert init.text_encoder.init_args.lora.target_modules == attention  # the paper's attention-only LoRA
    if name == "tiny":  # the CPU path: SmolLM2's first 4 blocks, frozen (so their states can be cached)
        te = init.text_encoder.init_args
        assert te.gguf_file.endswith("SmolLM2-135M-Instruct.Q4_1.gguf") and te.num_blocks == 4 and te.freeze


def test_tiny_yaml_with_the_scratch_lm_arm_instantiates_from_a_stage0_dir(tmp_path):
    lm_dir = tmp_path / "stage0"
    build_tiny_tokenizer(lm_dir)
    AutoModelForCausalLM.from_config(tiny_llama_config(hidden_size=128)).save_pretrained(lm_dir)
    parser, cfg = parse("tiny", "--config", str(MODEL_DIR.parent / "tiny" / "scratch_lm.yaml"),
                        "--config", str(MODEL_DIR.parent / "tiny" / "lora_top.yaml"),
                        f"--model.init_args.text_encoder.init_args.pretrained={lm_dir}")
    module = parser.instantiate(cfg).model
    module.configure_model()
    assert module.unet.config.cross_attention_dim == module.text_encoder.out_dim == 256
    trainable = {n.split(".")[0] for n, p in module.named_parameters() if p.requires_grad}
    assert trainable == {"text_encoder", "unet"}
    assert all("lora_" in n or n.startswith("proj.") for n, p in module.text_encoder.named_parameters() if p.requires_grad)
    assert module.text_encoder.prefix_blocks == 1  # lora_top.yaml: LoRA in the top one of the 2 blocks
    n_unet = count_parameters(module.unet)
    print(f"tiny UNet {n_unet / 1e6:.2f}M params")
    assert 2e6 < n_unet < 8e6


def test_llama2_7b_builds_on_meta_device(tmp_path):
    """Llama-2-7b config.json (no weights) + the 7B model YAML → parameter counts without allocating."""
    lm_dir = tmp_path / "Llama-2-7b-hf"
    build_tiny_tokenizer(lm_dir)
    LlamaConfig(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096,
                rms_norm_eps=1e-5, tie_word_embeddings=False).save_pretrained(lm_dir)
    parser, cfg = parse("llama2-7b", f"--model.init_args.text_encoder.init_args.pretrained={lm_dir}",
                        "--model.init_args.vae=null")
    with torch.device("meta"):
        module = parser.instantiate(cfg).model  # text encoder is lazy: tokenizer + config only
        module.text_encoder.materialize(empty_weights=True)
        vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512),
                            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                            layers_per_block=2, scaling_factor=0.13025)  # the SDXL-VAE architecture
    assert all(p.device.type == "meta" for p in module.parameters())
    lora = sum(p.numel() for p in module.text_encoder.lora_parameters())
    llm = count_parameters(module.text_encoder.base_lm) - lora
    unet = count_parameters(module.unet)
    print(f"\nLlama-2-7b {llm / 1e9:.2f}B (LoRA r=64: {lora / 1e6:.1f}M trainable), "
          f"UNet {unet / 1e9:.2f}B (cross_attention_dim 4096), SDXL-VAE {count_parameters(vae) / 1e6:.1f}M")
    assert 6.6e9 < llm < 6.8e9 and 1.1e9 < unet < 1.5e9
    assert lora == 32 * 4 * 2 * 64 * 4096
    assert module.unet.config.cross_attention_dim == module.text_encoder.out_dim == 4096
