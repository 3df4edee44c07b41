"""LLM text encoder: LoRA trainability and identity at init, reference match, pad invariance, truncation."""
import pytest
import torch
from transformers import LlamaModel

from paradiffusion.models import LLMTextEncoder, LoRASettings
from fixtures import build_tiny_tokenizer, tiny_llama_config, tiny_unet


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    return str(build_tiny_tokenizer(tmp_path_factory.mktemp("tok")))


def _encoder(tok_dir, **kw):
    torch.manual_seed(0)
    return LLMTextEncoder(llama_config=tiny_llama_config(), tokenizer=tok_dir, **kw)


def test_only_lora_trainable_and_identity_at_init(tok_dir):
    base = _encoder(tok_dir)
    lora = _encoder(tok_dir, lora=LoRASettings(r=4, alpha=8))
    trainable = [n for n, p in lora.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    frozen = _encoder(tok_dir, freeze=True)
    assert not any(p.requires_grad for p in frozen.parameters())
    tok = base.tokenize(["a red circle at the top", "a big blue square on a white background at the bottom"])
    with torch.no_grad():
        h0, _ = base(tok["input_ids"], tok["attention_mask"])
        h1, _ = lora(tok["input_ids"], tok["attention_mask"])
    assert torch.equal(h0, h1)  # B = 0 at init: the adapter is an exact no-op


def test_reference_match_with_transformers_llamamodel(tok_dir):
    enc = _encoder(tok_dir, lora=LoRASettings(r=4))
    ref = LlamaModel(tiny_llama_config())
    missing, unexpected = ref.load_state_dict(
        {k.removeprefix("model."): v for k, v in enc.base_lm.state_dict().items()
         if k.startswith("model.") and "lora_" not in k and ".base_layer." not in k}
        | {k.removeprefix("model.").replace(".base_layer.", "."): v for k, v in enc.base_lm.state_dict().items()
           if ".base_layer." in k}, strict=True)
    tok = enc.tokenize(["two objects: a purple square near the top", "x"])
    with torch.no_grad():
        ours, mask = enc(tok["input_ids"], tok["attention_mask"])
        theirs = ref(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"]).last_hidden_state
    real = mask.bool()
    torch.testing.assert_close(ours[real], theirs[real], atol=1e-6, rtol=1e-6)


def test_penultimate_layer_and_projection(tok_dir):
    enc = _encoder(tok_dir, hidden_layer=-2, out_dim=48)
    tok = enc.tokenize(["a red circle"])
    h, _ = enc(tok["input_ids"], tok["attention_mask"])
    assert h.shape == (1, tok["input_ids"].shape[1], 48)
    assert enc.projection_parameters()[0].requires_grad


def test_dynamic_padding_and_truncation_counted(tok_dir):
    enc = _encoder(tok_dir, max_length=16)
    tok = enc.tokenize(["", "a red circle", "word " * 100])
    assert tok["input_ids"].shape == (3, 16)
    assert tok["attention_mask"][0].sum() == 1  # the empty paragraph keeps its BOS token
    assert tok["truncated"].tolist() == [False, False, True] and enc.num_truncated == 1
    short = enc.tokenize(["a red circle", "a"])
    assert short["input_ids"].shape[1] == short["attention_mask"].sum(1).max()  # padded to the longest, not 16


def test_pad_invariance_through_unet(tok_dir):
    """The same paragraph batched with a much longer one gives the same noise prediction (fp32, ≤ 1e-5)."""
    enc = _encoder(tok_dir, lora=LoRASettings(r=4))
    torch.manual_seed(1)
    unet = tiny_unet(cross_attention_dim=enc.out_dim).eval()
    para = "a small red circle at the top left"
    long = " ".join(["a large blue square at the bottom right on a white background."] * 20)
    x, t = torch.randn(1, 3, 16, 16), torch.tensor([500])
    with torch.no_grad():
        alone = enc.tokenize([para])
        both = enc.tokenize([para, long])
        assert both["input_ids"].shape[1] > 4 * alone["input_ids"].shape[1]
        h1, m1 = enc(alone["input_ids"], alone["attention_mask"])
        h2, m2 = enc(both["input_ids"], both["attention_mask"])
        e1 = unet(x, t, encoder_hidden_states=h1, encoder_attention_mask=m1).sample
        e2 = unet(x.repeat(2, 1, 1, 1), t.repeat(2), encoder_hidden_states=h2, encoder_attention_mask=m2).sample[:1]
    assert (e1 - e2).abs().max() <= 1e-5
