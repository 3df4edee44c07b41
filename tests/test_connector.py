"""Connectors between the LLM and the UNet: identity at init, masking, bidirectionality, settings round trip."""
import pytest
import torch

from paradiffusion.models import LLMTextEncoder, TextConnector, TextRefiner, TokenGate
from fixtures import build_tiny_tokenizer, tiny_llama_config


def _states(seed=0, B=2, T=7, D=32):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(B, T, D, generator=g)  # (B, T, D)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, 4:] = 0  # the second row has 3 padding tokens
    return hidden, mask


def _randomise(module, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)


@pytest.mark.parametrize("connector", [TokenGate(32), TextRefiner(32, num_layers=2, num_heads=4)], ids=["gate", "refiner"])
def test_fresh_connector_is_identity(connector):
    hidden, mask = _states()
    out, out_mask = connector(hidden, mask)
    torch.testing.assert_close(out, hidden, atol=0, rtol=0)  # a stage can add it to loaded weights unchanged
    assert torch.equal(out_mask, mask)


def test_refiner_is_bidirectional_and_ignores_padding():
    refiner = TextRefiner(32, num_layers=1, num_heads=4)
    _randomise(refiner)
    hidden, mask = _states()
    out, _ = refiner(hidden, mask)
    later = hidden.clone()
    later[0, -1] = torch.randn(32, generator=torch.Generator().manual_seed(5))  # change the last token of row 0
    out_later, _ = refiner(later, mask)
    assert not torch.allclose(out_later[0, 0], out[0, 0])  # the first token sees what follows it (unlike the LLM)
    padded = hidden.clone()
    padded[1, 4:] = 100.0  # change only row 1's padding
    out_padded, _ = refiner(padded, mask)
    torch.testing.assert_close(out_padded[1, :4], out[1, :4])  # real tokens never attend to padding
    torch.testing.assert_close(out_padded[0], out[0])


def test_gate_can_silence_tokens():
    gate = TokenGate(32)
    with torch.no_grad():
        gate.score.bias.fill_(-30.0)
    hidden, mask = _states()
    out, _ = gate(hidden, mask)
    assert out.abs().max() < 1e-8  # a closed gate removes the token's key and value
    assert torch.equal(gate(hidden, mask)[1], mask)


@pytest.mark.parametrize("connector", [TokenGate(32), TextRefiner(32, num_layers=2, num_heads=8, mlp_ratio=2.0)],
                         ids=["gate", "refiner"])
def test_settings_round_trip(connector):
    _randomise(connector)
    rebuilt = TextConnector.from_settings(connector.settings())
    rebuilt.load_state_dict(connector.state_dict())
    hidden, mask = _states()
    torch.testing.assert_close(rebuilt(hidden, mask)[0], connector(hidden, mask)[0])


def test_bad_settings_and_widths_are_named(tmp_path):
    with pytest.raises(ValueError, match="unknown connector class 'Nope'"):
        TextConnector.from_settings({"class": "Nope"})
    with pytest.raises(ValueError, match="not divisible"):
        TextRefiner(30, num_heads=4)
    tok = str(build_tiny_tokenizer(tmp_path))
    with pytest.raises(ValueError, match="connector.dim=32 != out_dim=48"):
        LLMTextEncoder(llama_config=tiny_llama_config(), tokenizer=tok, out_dim=48, connector=TokenGate(32))


def test_encoder_trains_connector_at_the_unet_rate(tmp_path):
    tok = str(build_tiny_tokenizer(tmp_path))
    enc = LLMTextEncoder(llama_config=tiny_llama_config(), tokenizer=tok, freeze=True, out_dim=48,
                         connector=TextRefiner(48))
    extra = {id(p) for p in enc.projection_parameters()}
    assert {id(p) for p in enc.connector.parameters()} <= extra
    assert not enc.lora_parameters()  # a frozen LLM: the connector and projection are all that trains here
    t = enc.tokenize(["a red circle", "a blue square at the top"])
    hidden, _ = enc(t["input_ids"], t["attention_mask"])
    hidden.sum().backward()
    assert all(p.grad is not None for p in enc.connector.parameters() if p.requires_grad)


def test_embedding_skip_starts_at_zero_and_carries_token_identity(tmp_path):
    tok = str(build_tiny_tokenizer(tmp_path))
    torch.manual_seed(0)
    plain = LLMTextEncoder(llama_config=tiny_llama_config(), tokenizer=tok, freeze=True)
    skip = LLMTextEncoder(llama_config=tiny_llama_config(), tokenizer=tok, freeze=True, embedding_skip=True)
    skip.base_lm.load_state_dict(plain.base_lm.state_dict())  # the same LLM (building the skip consumed random numbers)
    t = plain.tokenize(["a red circle", "a blue square at the top"])
    with torch.no_grad():
        h0, _ = plain(t["input_ids"], t["attention_mask"])
        h1, _ = skip(t["input_ids"], t["attention_mask"])
    torch.testing.assert_close(h1, h0, atol=0, rtol=0)  # a fresh skip changes nothing
    out, _ = skip(t["input_ids"], t["attention_mask"])
    out.sum().backward()
    assert skip.embedding_skip[1].weight.grad.abs().sum() > 0  # it learns from the first step
    with torch.no_grad():
        skip.embedding_skip[1].weight.copy_(torch.eye(skip.hidden_size))
        h2, _ = skip(t["input_ids"], t["attention_mask"])
    embed = skip.base_lm.model.embed_tokens(t["input_ids"])
    torch.testing.assert_close(h2 - h0, skip.embedding_skip[0](embed))  # exactly the normalised token embedding
