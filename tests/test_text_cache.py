"""Text-state cache: the frozen prefix / trainable top split matches transformers, and the cache's hit, miss, stale
and partial-shard cases; a step on cached states equals a step on live states."""
import json

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from paradiffusion.data.text_cache import StaleCacheError, TextStateCache, open_text_cache, pad_states, text_key
from paradiffusion.models import LLMTextEncoder, LoRASettings
from fixtures import build_tiny_tokenizer, tiny_llama_config

TEXTS = ["a red circle at the top", "a big blue square on a white background at the bottom right", "",
         "a small green triangle", "two shapes: a pink circle on the left and a cyan square in the center"]


@pytest.fixture(scope="module")
def lm_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("lm")
    build_tiny_tokenizer(d)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(tiny_llama_config(layers=4)).save_pretrained(d)
    return str(d)


def _encoder(lm_dir, **kw):
    torch.manual_seed(0)
    return LLMTextEncoder(pretrained=lm_dir, **kw).eval()


def test_block_split_matches_transformers_hidden_states(lm_dir):
    """encode_prefix = hidden_states[K] of transformers' LlamaModel; prefix + top blocks + norm = its output."""
    enc = _encoder(lm_dir, freeze=True)
    tok = enc.tokenize(TEXTS)
    with torch.no_grad():
        ref = enc.base_lm.model(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"],
                                output_hidden_states=True)
        two = _encoder(lm_dir, freeze=True, num_blocks=2)
        prefix = two.encode_prefix(tok["input_ids"], tok["attention_mask"])
        full, _ = enc(tok["input_ids"], tok["attention_mask"])
        split, _ = enc(tok["input_ids"], tok["attention_mask"], enc.encode_prefix(tok["input_ids"], tok["attention_mask"]))
    real = tok["attention_mask"].bool()
    assert two.prefix_blocks == 2 and len(two.base_lm.model.layers) == 2
    assert torch.equal(prefix[real], ref.hidden_states[2][real])
    assert torch.equal(full[real], ref.last_hidden_state[real])
    assert torch.equal(split, full)


def test_lora_only_in_the_top_blocks(lm_dir):
    enc = _encoder(lm_dir, lora=LoRASettings(r=4), trainable_blocks=1)
    assert enc.prefix_blocks == 3
    adapted = {n.split(".layers.")[1].split(".")[0] for n, p in enc.named_parameters() if p.requires_grad}
    assert adapted == {"3"}
    with pytest.raises(ValueError, match="trainable_blocks"):
        _encoder(lm_dir, freeze=True, trainable_blocks=1)
    with pytest.raises(ValueError, match="num_blocks"):
        _encoder(lm_dir, num_blocks=9)


def test_cache_hit_miss_and_reuse(lm_dir, tmp_path):
    enc = _encoder(lm_dir, freeze=True, num_blocks=2)
    cache = open_text_cache(tmp_path, enc)
    assert cache.missing(TEXTS + TEXTS[:2]) == TEXTS  # distinct, in order
    added = cache.build(TEXTS, enc.tokenize, enc.encode_prefix, batch_size=2, shard_size=2, progress=False)
    assert added == len(TEXTS) and len(cache) == len(TEXTS)
    assert cache.build(TEXTS, enc.tokenize, enc.encode_prefix, progress=False) == 0  # all hits: nothing recomputed
    tok = enc.tokenize(TEXTS)
    with torch.no_grad():
        live = enc.encode_prefix(tok["input_ids"], tok["attention_mask"])  # (B, T, H)
    states, mask = pad_states([cache.get(t) for t in TEXTS], tok["input_ids"].shape[1])
    assert torch.equal(mask, tok["attention_mask"])
    real = mask.bool()
    assert torch.allclose(states[real], live[real], atol=2e-3, rtol=2e-3)  # fp16 storage
    assert torch.equal(cache.batch_states(TEXTS, tok["attention_mask"]), states)  # what collate and pipeline read
    assert cache.batch_states(TEXTS + ["never cached"], enc.tokenize(TEXTS + ["never cached"])["attention_mask"]) is None
    with pytest.raises(ValueError, match="another tokenizer or max_length"):
        cache.batch_states(TEXTS, torch.ones_like(tok["attention_mask"]))
    reopened = open_text_cache(tmp_path, enc)  # another run / stage: the same states, read from disk
    assert len(reopened) == len(TEXTS) and torch.equal(reopened.get(TEXTS[1]), cache.get(TEXTS[1]))
    with pytest.raises(KeyError, match="no states for paragraph"):
        cache.get("a paragraph that was never cached")
    # A different prefix depth lives in its own subdirectory: no collision
    assert open_text_cache(tmp_path, _encoder(lm_dir, freeze=True, num_blocks=3)).root != cache.root


def test_stale_cache_is_refused_or_rebuilt(tmp_path):
    ident = {"lm": "aaa", "tokenizer": "t", "prefix_blocks": 2, "max_length": 512, "dim": 8}
    cache = TextStateCache(tmp_path, ident)
    cache._write_shard([(text_key("x"), np.ones((3, 8), np.float16))])
    with pytest.raises(StaleCacheError, match=r"prefix_blocks: cached 2, now 4"):
        TextStateCache(tmp_path, {**ident, "prefix_blocks": 4})
    with pytest.raises(StaleCacheError, match="lm: cached 'aaa', now 'bbb'"):
        TextStateCache(tmp_path, {**ident, "lm": "bbb"})
    rebuilt = TextStateCache(tmp_path, {**ident, "lm": "bbb"}, rebuild=True)
    assert len(rebuilt) == 0 and json.loads((tmp_path / "meta.json").read_text())["lm"] == "bbb"


def test_partial_shards_are_never_read(tmp_path):
    ident = {"lm": "a", "tokenizer": "t", "prefix_blocks": 1, "max_length": 16, "dim": 4}
    cache = TextStateCache(tmp_path, ident)
    cache._write_shard([(text_key("one"), np.ones((2, 4), np.float16))])
    cache._write_shard([(text_key("two"), np.ones((5, 4), np.float16))])
    # a build killed between the array and its index: the array has no index
    np.save(tmp_path / "shard-00002.npy", np.ones((7, 4), np.float16))
    # a truncated array under a complete index
    (tmp_path / "shard-00001.npy").write_bytes((tmp_path / "shard-00001.npy").read_bytes()[:100])
    reopened = TextStateCache(tmp_path, ident)
    assert "one" in reopened and "two" not in reopened and len(reopened) == 1
    assert reopened.discarded == 2
    assert sorted(p.name for p in tmp_path.glob("shard-*")) == ["shard-00000.json", "shard-00000.npy"]
    assert reopened.missing(["one", "two"]) == ["two"]  # recomputed by the next build


def test_a_training_step_on_cached_states_equals_the_live_step(lm_dir, tmp_path):
    from diffusers import DDPMScheduler

    from fixtures import tiny_unet
    from paradiffusion.module import ParaDiffusion

    torch.manual_seed(0)
    module = ParaDiffusion(_encoder(lm_dir, lora=LoRASettings(r=4), trainable_blocks=1, out_dim=64),
                           tiny_unet(cross_attention_dim=64), DDPMScheduler(num_train_timesteps=100), ema_decay=None)
    module.configure_model()
    enc = module.text_encoder
    cache = open_text_cache(tmp_path, enc)
    cache.build(TEXTS, enc.tokenize, enc.encode_prefix, progress=False)
    tok = enc.tokenize(TEXTS)
    batch = {"pixel_values": torch.rand(len(TEXTS), 3, 16, 16) * 2 - 1, "text": TEXTS,
             "input_ids": tok["input_ids"], "attention_mask": tok["attention_mask"]}
    cached = dict(batch, prefix_states=pad_states([cache.get(t) for t in TEXTS], tok["input_ids"].shape[1])[0])
    losses = []
    for b in (batch, cached):
        torch.manual_seed(1)  # the same caption dropout, noise and timesteps
        losses.append(module.diffusion_step(dict(b), caption_dropout=0.5))
    assert torch.allclose(losses[0], losses[1], rtol=1e-2)  # equal up to the fp16 storage of the states
    losses[1].backward()
    lora_grads = [p.grad for n, p in enc.named_parameters() if "lora_B" in n]
    assert lora_grads and all(g is not None for g in lora_grads)  # LoRA in the top block learns from cached input
