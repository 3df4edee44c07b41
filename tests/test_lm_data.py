"""Stage-0 LM data: injected text sources (ParaShapes text, never the held-out phrasing), text files, packing,
clear errors."""
from __future__ import annotations

import json
import re

import pytest
import torch

from paradiffusion.lm.data import LMTextDataModule, unigram_perplexity
from paradiffusion.lm.text_sources import TextFiles, TextSource, file_texts
from paradiffusion.lm.tokenizer import SPECIAL_IDS
from parashapes.lm import ParaShapesText

N_PER_SPLIT = 40
SMALL = dict(seq_len=64, batch_size=4, bpe_vocab_size=512)


def small(**kw) -> LMTextDataModule:
    """ParaShapes text of the three training splits, 40 scenes each."""
    return LMTextDataModule(sources=[ParaShapesText(n_per_split=N_PER_SPLIT)], **SMALL, **kw)


@pytest.fixture(scope="module")
def dm():
    dm = small()
    dm.setup("fit")
    return dm


def test_blocks_and_loaders(dm):
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape == (4, 64) and batch["input_ids"].dtype == torch.long
    assert torch.equal(batch["input_ids"], batch["labels"])  # the HF loss shifts labels itself
    assert int(batch["input_ids"].max()) < len(dm.tokenizer)
    assert len(dm.val_set) >= 1 and dm.stats["val_docs"] >= 1
    # Every document is "<s> text </s>": as many BOS as EOS in the packed stream (up to the cut-off tail).
    blocks = dm.train_set.blocks
    n_bos = int((blocks == SPECIAL_IDS["bos_token_id"]).sum())
    assert abs(n_bos - int((blocks == SPECIAL_IDS["eos_token_id"]).sum())) <= 1
    assert n_bos >= dm.stats["train_docs"] - 64  # all but what the dropped tail (< seq_len tokens) held
    assert 1.0 < dm.unigram_ppl < len(dm.tokenizer)


def test_document_packing_keeps_documents_whole(tmp_path):
    # A summary is learnable only next to its paragraph: with packing="document" no document straddles blocks,
    # every block starts with <s>, and padding is ignored by the loss (and by the unigram baseline).
    docs = [f"doc {i} " + "word " * (3 + i % 17) + "end" for i in range(60)] + ["long " * 200]
    f = tmp_path / "docs.txt"
    f.write_text("\n".join(docs) + "\n")
    dm = LMTextDataModule(text_files=[str(f)], seq_len=48, batch_size=4, bpe_vocab_size=300, packing="document")
    with pytest.warns(UserWarning, match=r"1 of \d+ train documents are longer than seq_len=48"):
        dm.setup("fit")
    bos, eos, pad = SPECIAL_IDS["bos_token_id"], SPECIAL_IDS["eos_token_id"], SPECIAL_IDS["pad_token_id"]
    ids, labels = dm.train_set.blocks, dm.train_set.labels
    assert ids.shape[1] == 48 and bool((ids[:, 0] == bos).all())
    assert torch.equal(labels == -100, ids == pad) and bool((labels != -100).any(dim=1).all())
    # Whole documents: as many <s> as </s> in every block, except the one cut document (which loses its </s>).
    n_bos, n_eos = (ids == bos).sum(dim=1), (ids == eos).sum(dim=1)
    assert int((n_bos != n_eos).sum()) <= 1 and int(n_bos.sum()) == dm.stats["train_docs"]
    decoded = [dm.tokenizer.decode(b[b != pad], skip_special_tokens=False) for b in ids]
    train_docs = dm.documents()[0]
    short = [d for d in train_docs if not d.startswith("long")]
    assert sum(text.count("end") for text in decoded) == len(short)
    batch = next(iter(dm.train_dataloader()))
    assert batch["labels"].shape == (4, 48) and int((batch["labels"] == -100).sum()) > 0
    assert 1.0 < dm.unigram_ppl < len(dm.tokenizer)
    with pytest.raises(ValueError, match="data.packing='blocks'"):
        LMTextDataModule(text_files=[str(f)], packing="blocks")


def test_train_val_split_by_document(dm):
    # Split whole documents (val text is unseen text), deterministic for a seed.
    train, val = dm.documents()
    assert len(train) + len(val) == 3 * N_PER_SPLIT and len(val) == round(0.05 * len(train + val))
    assert small().documents() == (train, val)


def test_never_uses_heldout_phrasing(dm):
    from parashapes.lexicon import HELDOUT

    wordings = {w for field in vars(HELDOUT).values() for ws in field.values() for w in ws}
    pattern = re.compile(r"\b(" + "|".join(re.escape(w) for w in sorted(wordings, key=len, reverse=True)) + r")\b")
    train, val = dm.documents()
    hits = [m.group(0) for d in train + val for m in [pattern.search(d)] if m]
    assert not hits, f"held-out wordings in LM text: {sorted(set(hits))[:10]}"


def test_never_generates_heldout_split(monkeypatch):
    import parashapes as ps

    calls = []
    real = ps.generate_split

    def spy(split, n, seed=0, **kw):
        calls.append(split)
        return real(split, n, seed=seed, **kw)

    monkeypatch.setattr(ps, "generate_split", spy)
    small().documents()
    assert calls and "heldout" not in calls and "test" not in calls
    for split in ("heldout", "test"):  # refused when the source is built (config time), before any text is made
        with pytest.raises(ValueError, match=f"'{split}'.*evaluation-only"):
            ParaShapesText(splits=["stage2", split])
    with pytest.raises(ValueError, match="unknown split"):
        ParaShapesText(splits=["stage9"])


def test_tokenizer_dir_saved_then_loaded(tmp_path):
    a = small(tokenizer_dir=str(tmp_path / "tok"))
    a.prepare_data()
    assert (tmp_path / "tok" / "tokenizer.json").is_file()
    a.setup()
    b = LMTextDataModule(sources=[ParaShapesText(splits=["stage3"], n_per_split=40)], seq_len=64,
                         tokenizer_dir=str(tmp_path / "tok"))
    b.setup()  # loads, does not retrain on its (different) text
    assert b.tokenizer.backend_tokenizer.to_str() == a.tokenizer.backend_tokenizer.to_str()


def test_text_files(tmp_path):
    (tmp_path / "a.txt").write_text("first paragraph\n\nsecond paragraph\n")
    (tmp_path / "b.jsonl").write_text(json.dumps({"text": "third"}) + "\n\n" + json.dumps({"text": "fourth"}) + "\n")
    (tmp_path / "c.csv").write_text('id,text\n1,"fifth, with comma"\n')
    assert file_texts(tmp_path / "a.txt") == ["first paragraph", "second paragraph"]
    assert file_texts(tmp_path / "b.jsonl") == ["third", "fourth"]
    assert file_texts(tmp_path / "c.csv") == ["fifth, with comma"]
    dm = LMTextDataModule(text_files=[str(tmp_path / "a.txt")] * 20, seq_len=8, bpe_vocab_size=300)
    dm.setup()
    assert dm.stats["train_docs"] + dm.stats["val_docs"] == 40
    # a source and text files together: both are read, the source first
    both = LMTextDataModule(sources=[TextFiles([str(tmp_path / "b.jsonl")])], text_files=[str(tmp_path / "c.csv")])
    assert [d for s in both.sources for d in s.documents()] == ["third", "fourth", "fifth, with comma"]


def test_any_text_source_class_can_be_injected():
    class Numbers(TextSource):
        def documents(self) -> list[str]:
            return [f"number {i} is {'even' if i % 2 == 0 else 'odd'}" for i in range(200)] + [""]  # "" is dropped

    dm = LMTextDataModule(sources=[Numbers()], seq_len=16, batch_size=4, bpe_vocab_size=300)
    train, val = dm.documents()
    assert len(train) + len(val) == 200 and "" not in train + val
    dm.setup()
    assert dm.stats["train_docs"] == len(train)
    with pytest.raises(TypeError):
        TextSource()  # abstract: a source must say what its documents are


def test_errors_name_file_line_field(tmp_path):
    missing = tmp_path / "missing.jsonl"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        file_texts(missing)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"text": "ok"}) + "\n" + json.dumps({"caption": "x"}) + "\n")
    with pytest.raises(ValueError, match=re.escape(f"{bad}:2: field 'text' missing")):
        file_texts(bad)
    bad.write_text('{"text": "ok"}\n{"text": \n')
    with pytest.raises(ValueError, match=re.escape(f"{bad}:2: malformed JSON")):
        file_texts(bad)
    bad.write_text('{"text": 3}\n')
    with pytest.raises(ValueError, match=re.escape(f"{bad}:1: field 'text' is int")):
        file_texts(bad)
    csv_path = tmp_path / "x.csv"
    csv_path.write_text("id,caption\n1,a\n")
    with pytest.raises(ValueError, match=re.escape(f"{csv_path}:1: no column 'text'")):
        file_texts(csv_path)
    with pytest.raises(ValueError, match="unsupported text file type '.parquet'"):
        (tmp_path / "x.parquet").write_text("")
        file_texts(tmp_path / "x.parquet")
    with pytest.raises(ValueError, match="no text source"):
        LMTextDataModule(sources=[], text_files=[])
    with pytest.raises(ValueError, match="fewer than one block"):
        (tmp_path / "s.txt").write_text("a b\nc d\n")
        LMTextDataModule(text_files=[str(tmp_path / "s.txt")], seq_len=256, bpe_vocab_size=300).setup()


def test_unigram_perplexity_uniform():
    # Each of 4 tokens equally often -> perplexity ~4 (add-one smoothing over a vocab of 4 changes nothing).
    blocks = torch.arange(4).repeat(8).view(4, 8)
    assert unigram_perplexity(blocks, blocks, 4) == pytest.approx(4.0)


def test_response_template_scores_only_the_response(tmp_path):
    # Instruction documents (prompt, template, response): the loss sees the response and </s>, never the prompt;
    # plain documents in the same corpus stay scored whole.
    from parashapes import generate_split
    from parashapes.describe import scene_list

    specs = generate_split("stage3", 30, seed=0)
    lists = {scene_list(s) for s in specs}
    captions = {s.paragraph for s in generate_split("stage1", 30, seed=0)}
    instructions = tmp_path / "instructions.jsonl"
    instructions.write_text("".join(json.dumps({"text": s.paragraph + " In short: " + scene_list(s)}) + "\n"
                                    for s in specs))
    dm = LMTextDataModule(sources=[ParaShapesText(splits=["stage1"], n_per_split=30)], text_files=[str(instructions)],
                          seq_len=512, batch_size=2, packing="document", response_template=" In short: ",
                          bpe_vocab_size=600)
    dm.setup("fit")
    eos, pad = dm.tokenizer.eos_token_id, dm.tokenizer.pad_token_id
    scored_lists = scored_captions = 0
    for ids, labels in zip(torch.cat([dm.train_set.blocks, dm.val_set.blocks]),
                           torch.cat([dm.train_set.labels, dm.val_set.labels])):
        # split each block back into its documents at </s>
        ends = (ids == eos).nonzero().flatten().tolist()
        start = 0
        for end in ends:
            doc_ids, doc_labels = ids[start: end + 1], labels[start: end + 1]
            text = dm.tokenizer.decode(doc_ids, skip_special_tokens=True)
            scored = dm.tokenizer.decode(doc_ids[doc_labels != -100], skip_special_tokens=True)
            if "In short:" in text:
                assert scored.strip() in lists and text.split(" In short: ")[1] == scored.strip()
                assert int(doc_labels[-1]) == eos  # the LM learns where a response ends
                scored_lists += 1
            else:
                assert bool((doc_labels == doc_ids).all()) and text in captions
                scored_captions += 1
            start = end + 1
        assert bool((labels[ids == pad] == -100).all())
    assert scored_lists == 30 and scored_captions == 30
    with pytest.raises(ValueError, match="response_template needs data.packing='document'"):
        LMTextDataModule(text_files=[str(instructions)], response_template=" In short: ")
