"""Real-data sources (manifest, WebDataset shards) and the collate function."""
from __future__ import annotations

import io
import json
import tarfile
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from paradiffusion.data import ManifestDataset, ParagraphCollator, WebDatasetSource, to_tensor


def _png(path, color=(255, 0, 0), size=(48, 32)):
    Image.new("RGB", size, color).save(path)


def test_to_tensor_resizes_and_center_crops():
    im = Image.new("RGB", (64, 32), (0, 0, 0))
    im.paste((255, 255, 255), (16, 0, 48, 32))  # white centre band, exactly the center crop
    x = to_tensor(im, 16)
    assert x.shape == (3, 16, 16)
    assert x.min() >= 0 and x.max() <= 1
    assert x.mean() > 0.95  # the crop kept the centre, not the black sides


def test_manifest_jsonl_and_csv(tmp_path):
    _png(tmp_path / "a.png")
    _png(tmp_path / "b.png", (0, 255, 0))
    (tmp_path / "m.jsonl").write_text(json.dumps({"image": "a.png", "text": "a red thing"}) + "\n\n"
                                      + json.dumps({"image": "b.png", "text": "a green thing", "id": "b"}) + "\n")
    ds = ManifestDataset(tmp_path / "m.jsonl", resolution=16)
    assert len(ds) == 2
    item = ds[1]
    assert item["id"] == "b" and item["text"] == "a green thing" and item["image"].shape == (3, 16, 16)
    assert item["image"][1].mean() > 0.99
    (tmp_path / "m.csv").write_text("image,text\na.png,hello\n")
    assert ManifestDataset(tmp_path / "m.csv", resolution=8)[0]["text"] == "hello"


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"image": "a.png"}\n', r"m.jsonl:1: missing field 'text'"),
        ('{"image": "a.png", "text": "x"}\n{not json\n', r"m.jsonl:2: malformed JSON"),
        ('[1, 2]\n', r"m.jsonl:1: expected a JSON object"),
    ],
)
def test_manifest_errors_name_the_line(tmp_path, content, message):
    _png(tmp_path / "a.png")
    (tmp_path / "m.jsonl").write_text(content)
    with pytest.raises(ValueError, match=message):
        ManifestDataset(tmp_path / "m.jsonl", resolution=16)


def test_manifest_missing_image_names_the_record(tmp_path):
    (tmp_path / "m.jsonl").write_text(json.dumps({"image": "nope.png", "text": "x"}) + "\n")
    ds = ManifestDataset(tmp_path / "m.jsonl", resolution=16)
    with pytest.raises(FileNotFoundError, match="nope.png"):
        ds[0]


def _tar(path, samples):
    with tarfile.open(path, "w") as tar:
        for name, data in samples:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _png_bytes(color):
    buf = io.BytesIO()
    Image.new("RGB", (20, 20), color).save(buf, format="PNG")
    return buf.getvalue()


def test_webdataset_reads_img2dataset_layout_and_counts_skips(tmp_path, caplog):
    _tar(tmp_path / "00000.tar", [
        ("000000000.png", _png_bytes((255, 0, 0))), ("000000000.txt", b"red square"),
        ("000000000.json", json.dumps({"key": "000000000"}).encode()),
        ("000000001.png", _png_bytes((0, 0, 255))),  # caption missing: a partial download
        ("000000002.jpg", b"not an image"), ("000000002.txt", b"broken"),
    ])
    _tar(tmp_path / "00001.tar", [("000000003.png", _png_bytes((0, 255, 0))), ("000000003.txt", b"green")])
    src = WebDatasetSource(str(tmp_path / "*.tar"), resolution=8)
    items = list(src)
    assert [it["text"] for it in items] == ["red square", "green"]
    assert items[0]["image"].shape == (3, 8, 8)
    assert src.stats == Counter(ok=2, skipped_incomplete=1, skipped_unreadable=1)


def test_webdataset_splits_shards_across_ranks(tmp_path):
    for i in range(4):
        _tar(tmp_path / f"{i:05d}.tar", [(f"{i}.png", _png_bytes((i, 0, 0))), (f"{i}.txt", str(i).encode())])
    seen = [[it["text"] for it in WebDatasetSource(str(tmp_path / "*.tar"), 8, rank=r, world_size=2)] for r in (0, 1)]
    assert sorted(seen[0] + seen[1]) == ["0", "1", "2", "3"]
    assert not set(seen[0]) & set(seen[1])


def test_webdataset_missing_shards_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no WebDataset shards"):
        WebDatasetSource(str(tmp_path / "*.tar"), 8)


class _ByteTokenizer:
    """A stand-in tokenizer: one id per character, BOS=1, pad=0."""

    pad_token_id = 0

    bos_token_id = 1
    eos_token_id = None

    def __call__(self, texts, add_special_tokens=True, truncation=False, verbose=False):
        return {"input_ids": [[1] + [2 + (ord(c) % 50) for c in t] for t in texts]}


def test_collator_pads_to_longest_and_counts_truncation():
    collate = ParagraphCollator(_ByteTokenizer(), max_length=6)
    items = [
        {"id": "a", "text": "abc", "image": torch.zeros(3, 4, 4)},
        {"id": "b", "text": "abcdefghij", "image": torch.ones(3, 4, 4)},
    ]
    batch = collate(items)
    assert batch["input_ids"].shape == (2, 6)  # capped at max_length
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 0, 0], [1] * 6]
    assert int(batch["num_truncated"]) == 1
    assert batch["pixel_values"].min() == -1 and batch["pixel_values"].max() == 1
    assert "spec" not in batch
    short = collate(items[:1])
    assert short["input_ids"].shape == (1, 4)  # dynamic padding: no padding to max_length
    assert "restated" not in batch  # paragraphs: a model with a rewriter restates them


def test_collator_marks_scene_lists_as_read_as_they_are_and_refuses_mixed_batches():
    collate = ParagraphCollator(_ByteTokenizer(), max_length=64)
    lists = [{"id": str(i), "text": "gray background. small red circle at top.", "text_kind": "scene_list",
              "image": torch.zeros(3, 4, 4)} for i in range(2)]
    assert collate(lists)["restated"] == [it["text"] for it in lists]
    with pytest.raises(ValueError, match=r"mixes text kinds \['paragraph', 'scene_list'\]"):
        collate([lists[0], {"id": "p", "text": "a paragraph", "image": torch.zeros(3, 4, 4)}])
