"""Sentence context (`models.sentences`, `LLMTextEncoder(sentence_context=True)`): boundaries, means over a
sentence's real tokens only, identity at init, and what it adds once trained."""
import torch

from paradiffusion.models import LLMTextEncoder
from paradiffusion.models.sentences import sentence_end_table, sentence_ids, sentence_mean
from fixtures import build_tiny_tokenizer, tiny_llama_config


def test_sentence_ids_put_the_end_token_in_its_own_sentence():
    ends = torch.zeros(10, dtype=torch.bool)
    ends[[7, 8]] = True  # say 7 = ".", 8 = "?"
    ids = torch.tensor([[1, 3, 4, 7, 5, 8, 6, 6], [1, 7, 7, 3, 0, 0, 0, 0]])
    assert sentence_ids(ids, ends).tolist() == [[0, 0, 0, 0, 1, 1, 2, 2], [0, 0, 1, 2, 2, 2, 2, 2]]


def test_sentence_mean_averages_real_tokens_of_the_same_sentence_only():
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(2, 6, 5, generator=g)  # (B, T, H)
    sentence = torch.tensor([[0, 0, 0, 1, 1, 2], [0, 0, 1, 1, 1, 1]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])  # row 1: two padding tokens in sentence 1
    out = sentence_mean(hidden, sentence, mask)
    torch.testing.assert_close(out[0, 0], hidden[0, :3].mean(0))
    torch.testing.assert_close(out[0, 2], hidden[0, :3].mean(0))  # the first token sees the end of its sentence
    torch.testing.assert_close(out[0, 4], hidden[0, 3:5].mean(0))
    torch.testing.assert_close(out[0, 5], hidden[0, 5])
    torch.testing.assert_close(out[1, 2], hidden[1, 2:4].mean(0))  # padding never enters a mean
    changed = hidden.clone()
    changed[1, 4:] += 100.0
    changed[0, 3:] += 100.0  # another sentence changes: sentence 0 does not see it
    again = sentence_mean(changed, sentence, mask)
    torch.testing.assert_close(again[1, :4], out[1, :4])
    torch.testing.assert_close(again[0, :3], out[0, :3])


def test_end_table_marks_full_stops_not_words(tmp_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(build_tiny_tokenizer(tmp_path)))
    table = sentence_end_table(tok)
    assert table.shape[0] >= len(tok)
    ids = tok("a red circle. a blue square? yes")["input_ids"]
    marked = [tok.convert_tokens_to_string([tok.convert_ids_to_tokens(i)]) for i in ids if table[i]]
    assert len(marked) == 2 and all(m.strip()[-1] in ".?" for m in marked)
    sid = sentence_ids(torch.tensor([ids]), table)[0].tolist()
    assert sid[0] == 0 and sid[-1] == 2 and sid == sorted(sid)


def test_encoder_sentence_context_starts_at_zero_then_adds_the_sentence_mean(tmp_path):
    tok = str(build_tiny_tokenizer(tmp_path))
    torch.manual_seed(0)
    plain = LLMTextEncoder(llama_config=tiny_llama_config(), tokenizer=tok, freeze=True, out_dim=48)
    ctx = LLMTextEncoder(llama_config=tiny_llama_config(), tokenizer=tok, freeze=True, out_dim=48,
                         sentence_context=True)
    ctx.base_lm.load_state_dict(plain.base_lm.state_dict())
    ctx.proj.load_state_dict(plain.proj.state_dict())
    assert "sentence_ends" not in ctx.state_dict()  # rebuilt from the tokenizer, never saved
    t = plain.tokenize(["a red circle. it is at the top.", "a blue square at the left"])
    with torch.no_grad():
        h0, _ = plain(t["input_ids"], t["attention_mask"])
        h1, _ = ctx(t["input_ids"], t["attention_mask"])
    torch.testing.assert_close(h1, h0, atol=0, rtol=0)  # a fresh head changes nothing (init_from may add it)
    out, _ = ctx(t["input_ids"], t["attention_mask"])
    out.sum().backward()
    assert ctx.sentence_context.weight.grad.abs().sum() > 0  # it learns from the first step
    assert ctx.settings()["sentence_context"] and "sentence_context" in ctx.heads()
    with torch.no_grad():
        ctx.sentence_context.weight.copy_(torch.eye(48, ctx.hidden_size))
        h2, _ = ctx(t["input_ids"], t["attention_mask"])
        states = ctx.base_lm.model.norm(ctx.encode_prefix(t["input_ids"], t["attention_mask"]))  # (B, T, H)
    sid = sentence_ids(t["input_ids"], ctx.sentence_ends)
    assert sid[0].max() == 1 and sid[1].max() == 0  # two sentences, then one
    expect = sentence_mean(states, sid, t["attention_mask"])[..., :48]
    real = t["attention_mask"].bool()
    torch.testing.assert_close((h2 - h0)[real], expect[real])
