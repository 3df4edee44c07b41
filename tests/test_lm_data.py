"""Stage-0 LM data: ParaShapes text (never the held-out phrasing), text files, packing, clear errors."""
from __future__ import annotations

import json
import re

import pytest
import torch

from paradiffusion.lm.data import LMTextDataModule, unigram_perplexity
from paradiffusion.lm.text_sources import file_texts
from paradiffusion.lm.tokenizer import SPECIAL_IDS

SMALL = dict(n_per_split=40, seq_len=64, batch_size=4, bpe_vocab_size=512)


@pytest.fixture(scope="module")
def dm():
    dm = LMTextDataModule(**SMALL)
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
    dm = LMTextDataModule(splits=[], text_files=[str(f)], seq_len=48, batch_size=4, bpe_vocab_size=300,
                          packing="document")
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
        LMTextDataModule(packing="blocks")


def test_train_val_split_by_document(dm):
    # Split whole documents (val text is unseen text), deterministic for a seed.
    train, val = dm.documents()
    assert len(train) + len(val) == 3 * SMALL["n_per_split"] and len(val) == round(0.05 * len(train + val))
    assert LMTextDataModule(**SMALL).documents() == (train, val)


def test_never_uses_heldout_phrasing(dm):
    from paradiffusion.parashapes.lexicon import HELDOUT

    wordings = {w for field in vars(HELDOUT).values() for ws in field.values() for w in ws}
    pattern = re.compile(r"\b(" + "|".join(re.escape(w) for w in sorted(wordings, key=len, reverse=True)) + r")\b")
    train, val = dm.documents()
    hits = [m.group(0) for d in train + val for m in [pattern.search(d)] if m]
    assert not hits, f"held-out wordings in LM text: {sorted(set(hits))[:10]}"


def test_never_generates_heldout_split(monkeypatch):
    import paradiffusion.parashapes as ps

    calls = []
    real = ps.generate_split

    def spy(split, n, seed=0, **kw):
        calls.append(split)
        return real(split, n, seed=seed, **kw)

    monkeypatch.setattr(ps, "generate_split", spy)
    LMTextDataModule(**SMALL).documents()
    assert calls and "heldout" not in calls and "test" not in calls
    for split in ("heldout", "test"):
        with pytest.raises(ValueError, match=f"'{split}'.*evaluation-only"):
            LMTextDataModule(splits=["stage2", split])


def test_tokenizer_dir_saved_then_loaded(tmp_path):
    a = LMTextDataModule(**SMALL, tokenizer_dir=str(tmp_path / "tok"))
    a.prepare_data()
    assert (tmp_path / "tok" / "tokenizer.json").is_file()
    a.setup()
    b = LMTextDataModule(splits=["stage3"], n_per_split=40, seq_len=64, tokenizer_dir=str(tmp_path / "tok"))
    b.setup()  # loads, does not retrain on its (different) text
    assert b.tokenizer.backend_tokenizer.to_str() == a.tokenizer.backend_tokenizer.to_str()


def test_text_files(tmp_path):
    (tmp_path / "a.txt").write_text("first paragraph\n\nsecond paragraph\n")
    (tmp_path / "b.jsonl").write_text(json.dumps({"text": "third"}) + "\n\n" + json.dumps({"text": "fourth"}) + "\n")
    (tmp_path / "c.csv").write_text('id,text\n1,"fifth, with comma"\n')
    assert file_texts(tmp_path / "a.txt") == ["first paragraph", "second paragraph"]
    assert file_texts(tmp_path / "b.jsonl") == ["third", "fourth"]
    assert file_texts(tmp_path / "c.csv") == ["fifth, with comma"]
    dm = LMTextDataModule(splits=[], text_files=[str(tmp_path / "a.txt")] * 20, seq_len=8, bpe_vocab_size=300)
    dm.setup()
    assert dm.stats["train_docs"] + dm.stats["val_docs"] == 40


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
        LMTextDataModule(splits=[], text_files=[])
    with pytest.raises(ValueError, match="fewer than one block"):
        (tmp_path / "s.txt").write_text("a b\nc d\n")
        LMTextDataModule(splits=[], text_files=[str(tmp_path / "s.txt")], seq_len=256, bpe_vocab_size=300).setup()


def test_unigram_perplexity_uniform():
    # Each of 4 tokens equally often -> perplexity ~4 (add-one smoothing over a vocab of 4 changes nothing).
    blocks = torch.arange(4).repeat(8).view(4, 8)
    assert unigram_perplexity(blocks, blocks, 4) == pytest.approx(4.0)


def test_response_template_scores_only_the_scene_list():
    # Instruction documents (paragraph, template, scene list): the loss sees the scene list and </s>, never the
    # paragraph; plain documents in the same corpus stay scored whole.
    from paradiffusion.parashapes import generate_split
    from paradiffusion.parashapes.describe import scene_list

    dm = LMTextDataModule(splits=["stage1"], summary_splits=["stage3"], n_per_split=30, seq_len=512, batch_size=2,
                          packing="document", response_template=" In short: ", bpe_vocab_size=600)
    dm.setup("fit")
    lists = {scene_list(s) for s in generate_split("stage3", 30, seed=0)}
    captions = {s.paragraph for s in generate_split("stage1", 30, seed=0)}
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
                assert int(doc_labels[-1]) == eos  # the LM learns where a restatement ends
                scored_lists += 1
            else:
                assert bool((doc_labels == doc_ids).all()) and text in captions
                scored_captions += 1
            start = end + 1
        assert bool((labels[ids == pad] == -100).all())
    assert scored_lists == 30 and scored_captions == 30
    with pytest.raises(ValueError, match="summary_splits needs data.response_template"):
        LMTextDataModule(summary_splits=["stage2"], packing="document")
    with pytest.raises(ValueError, match="response_template needs data.packing='document'"):
        LMTextDataModule(summary_splits=["stage2"], response_template=" In short: ")
    with pytest.raises(ValueError, match="evaluation-only"):
        LMTextDataModule(summary_splits=["test"], response_template=" In short: ", packing="document")


def test_summary_order_mention_writes_the_objects_in_the_order_the_paragraph_names_them():
    from paradiffusion.lm.text_sources import parashapes_summaries
    from paradiffusion.parashapes import generate_split
    from paradiffusion.parashapes.describe import scene_list

    docs = parashapes_summaries(["stage2"], 5, " In short: ", order="mention")
    assert docs == [s.paragraph + " In short: " + scene_list(s, "mention") for s in generate_split("stage2", 5)]
    assert docs != parashapes_summaries(["stage2"], 5, " In short: ")  # the default keeps the spec's order
    with pytest.raises(ValueError, match="data.summary_order='random'"):
        LMTextDataModule(summary_splits=["stage2"], response_template=" In short: ", packing="document",
                         summary_order="random")
