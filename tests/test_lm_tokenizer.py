"""Stage-0 tokenizer: byte-level BPE, Llama-like behaviour, deterministic, loads offline with AutoTokenizer."""
from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from paradiffusion.lm.tokenizer import SPECIAL_IDS, load_tokenizer, train_bpe_tokenizer

CORPUS = [
    "The picture shows a navy background. A small red circle sits at the top left of the scene.",
    "In the bottom right, one can see a large green square, and next to it a yellow star.",
    "Two blue triangles, one small and one large, share the center of a beige canvas.",
] * 30


@pytest.fixture(scope="module")
def tok():
    return train_bpe_tokenizer(CORPUS, vocab_size=400)


@pytest.mark.parametrize(
    "text",
    [
        "A small red circle sits at the top left.",
        "Unseen words: zebra, quartz; ÜNÏCÖDE ☃ and emoji 🙂, tabs\tand  double  spaces\nnew line.",
        "",
    ],
)
def test_round_trip(tok, text):
    # Byte-level: every string is encodable without <unk>, and decoding gives it back exactly.
    ids = tok(text)["input_ids"]
    assert SPECIAL_IDS["unk_token_id"] not in ids
    assert tok.decode(ids, skip_special_tokens=True) == text


def test_deterministic():
    a = train_bpe_tokenizer(CORPUS, vocab_size=400).backend_tokenizer.to_str()
    b = train_bpe_tokenizer(CORPUS, vocab_size=400).backend_tokenizer.to_str()
    assert a == b


def test_llama_like_specials_and_padding(tok):
    assert (tok.unk_token, tok.bos_token, tok.eos_token, tok.pad_token) == ("<unk>", "<s>", "</s>", "<pad>")
    for name, idx in SPECIAL_IDS.items():
        assert getattr(tok, name) == idx
    batch = tok(["A red circle.", "A small red circle sits at the top left of the scene."], padding=True)
    short, long = batch["input_ids"]
    # BOS first, no EOS (as Llama-2-7b-hf), right padding with the pad token and a 0 mask there.
    assert short[0] == long[0] == SPECIAL_IDS["bos_token_id"]
    assert SPECIAL_IDS["eos_token_id"] not in long
    n = sum(batch["attention_mask"][0])
    assert short[n:] == [SPECIAL_IDS["pad_token_id"]] * (len(short) - n) and n < len(short)
    assert batch["attention_mask"][0][n:] == [0] * (len(short) - n)
    assert all(batch["attention_mask"][1])


def test_save_load_offline(tok, tmp_path):
    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path, local_files_only=True)
    texts = ["A red circle.", "Two blue triangles share the center."]
    assert loaded(texts, padding=True)["input_ids"] == tok(texts, padding=True)["input_ids"]
    assert loaded.padding_side == "right" and loaded.pad_token_id == SPECIAL_IDS["pad_token_id"]
    assert load_tokenizer(tmp_path)(texts[0])["input_ids"][0] == SPECIAL_IDS["bos_token_id"]


def test_errors(tmp_path):
    with pytest.raises(ValueError, match="vocab_size=100"):
        train_bpe_tokenizer(CORPUS, vocab_size=100)
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nope")):
        load_tokenizer(tmp_path / "nope")
