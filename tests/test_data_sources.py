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
    with pytest.raises(FileNotFoundError, match=r"m.jsonl:1: image file not found: .*nope.png"):
        ManifestDataset(tmp_path / "m.jsonl", resolution=16)  # when the manifest is read, not mid-run


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


def test_webdataset_repeat_reshuffles_shards_per_pass_by_seed(tmp_path):
    """`repeat=True` cycles without end, each pass in a fresh shard order drawn from `seed` (+ the pass number), so
    the same seed gives the same stream; `resume(step, ...)` offsets the seed by the step."""
    from itertools import islice

    for i in range(6):
        _tar(tmp_path / f"{i:05d}.tar", [(f"{i}.png", _png_bytes((i, 0, 0))), (f"{i}.txt", str(i).encode())])
    src = WebDatasetSource(str(tmp_path / "*.tar"), 8, repeat=True, seed=3)
    texts = [it["text"] for it in islice(iter(src), 18)]  # three passes
    passes = [texts[0:6], texts[6:12], texts[12:18]]
    assert all(sorted(p) == [str(i) for i in range(6)] for p in passes)  # every shard once per pass
    assert len({tuple(p) for p in passes}) > 1  # reshuffled between passes
    assert texts == [it["text"] for it in islice(iter(WebDatasetSource(str(tmp_path / "*.tar"), 8, repeat=True,
                                                                     seed=3)), 18)]  # the seed fixes the stream
    order = lambda s: [it["text"] for it in islice(iter(s), 6)]
    assert order(src.resume(5, 0, 1)) == order(WebDatasetSource(str(tmp_path / "*.tar"), 8, repeat=True, seed=8))
    once = WebDatasetSource(str(tmp_path / "*.tar"), 8)
    assert [it["text"] for it in once] == [str(i) for i in range(6)]  # no repeat: one pass in shard order


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


def test_collator_passes_through_the_keys_every_item_has():
    collate = ParagraphCollator(_ByteTokenizer(), max_length=64)
    items = [{"id": str(i), "text": "a red circle", "image": torch.zeros(3, 4, 4), "spec": {"n": i}, "extra": i}
             for i in range(2)]
    batch = collate(items)
    assert batch["spec"] == [{"n": 0}, {"n": 1}] and batch["extra"] == [0, 1]
    del items[1]["extra"]
    assert "extra" not in collate(items) and "image" not in collate(items)  # only keys every item has
    items[0]["input_ids"] = "not this"
    assert torch.is_tensor(collate(items)["input_ids"])  # an item never overrides what the collator computes


def test_image_folder_pairs_images_with_their_caption_files(tmp_path):
    from paradiffusion.data import ImageFolder

    (tmp_path / "sub").mkdir()
    for name, colour in (("a", (255, 0, 0)), ("sub/b", (0, 0, 255))):
        (tmp_path / f"{name}.png").write_bytes(_png_bytes(colour))
        (tmp_path / f"{name}.txt").write_text(f" the {name} image \n")
    ds = ImageFolder(tmp_path, 8)
    assert len(ds) == 2 and ds.texts() == ["the a image", "the sub/b image"]
    item = ds[1]
    assert item["id"] == "sub/b" and item["image"].shape == (3, 8, 8) and float(item["image"][2].mean()) == 1.0
    (tmp_path / "c.png").write_bytes(_png_bytes((0, 0, 0)))
    with pytest.raises(ValueError, match=r"c.png: no caption file \(c.txt\)"):
        ImageFolder(tmp_path, 8)
    (tmp_path / "c.txt").write_text("  \n")
    with pytest.raises(ValueError, match="c.txt: empty caption"):
        ImageFolder(tmp_path, 8)
    with pytest.raises(FileNotFoundError, match="image folder not found"):
        ImageFolder(tmp_path / "nope", 8)


class _Stream(torch.utils.data.IterableDataset):
    """A stream that follows the DataModule's protocol: `resume` records where it is asked to start."""

    resolution = 8

    def __init__(self, step=None, rank=None, world_size=None):
        self.step, self.rank, self.world_size = step, rank, world_size

    def resume(self, step, rank, world_size):
        return _Stream(step, rank, world_size)

    def __iter__(self):
        yield {"id": "0", "text": "x", "image": torch.zeros(3, 8, 8)}


def test_datamodule_reads_injected_datasets_by_the_protocol(tmp_path):
    from torch.utils.data import Subset

    from paradiffusion.data import ImageTextDataModule, ManifestDataset
    from paradiffusion.data.stages import dataset_texts

    for i in range(5):
        Image.new("RGB", (8, 8), (i, 0, 0)).save(tmp_path / f"{i}.png")
    (tmp_path / "m.jsonl").write_text("".join(json.dumps({"image": f"{i}.png", "text": f"t{i}"}) + "\n"
                                               for i in range(5)))
    manifest = ManifestDataset(tmp_path / "m.jsonl", 8)
    dm = ImageTextDataModule(train_data=_Stream(), val_data=manifest, n_val=3)
    assert dm.resolution == 8  # from the datasets
    stream = dm.train_dataset()  # no trainer: step 0, rank 0 of 1
    assert (stream.step, stream.rank, stream.world_size) == (0, 0, 1)
    val = dm._eval_dataset("val")
    assert isinstance(val, Subset) and len(val) == 3 and dataset_texts(val) == ["t0", "t1", "t2"]
    assert dataset_texts(ImageTextDataModule(train_data=manifest, n_train=2).train_dataset()) == ["t0", "t1"]
    with_val = ImageTextDataModule(val_data=manifest, batch_size=2)
    with_val.collator = ParagraphCollator(_ByteTokenizer())
    assert next(iter(with_val.val_dataloader()))["text"] == ["t0", "t1"]
    assert ImageTextDataModule().val_dataloader() == []  # no validation data: no validation
    # the same reader by kind: a user's manifest, its resolution given
    by_source = ImageTextDataModule(source="manifest", train_path=str(tmp_path / "m.jsonl"), resolution=8)
    assert dataset_texts(by_source.train_dataset()) == [f"t{i}" for i in range(5)]
    with pytest.raises(ValueError, match="no training data"):
        ImageTextDataModule(val_data=manifest).train_dataset()
    with pytest.raises(ValueError, match="no test data: set data.test_data"):
        ImageTextDataModule(val_data=manifest).test_dataloader()
    with pytest.raises(ValueError, match="cannot be cut"):
        ImageTextDataModule(train_data=_Stream(), n_train=4).train_dataset()
    with pytest.raises(ValueError, match="disagree on the image resolution: resolution=16, train_data=8"):
        ImageTextDataModule(train_data=_Stream(), resolution=16)
    with pytest.raises(ValueError, match="both name the training pairs"):
        ImageTextDataModule(train_data=manifest, source="manifest", train_path="m.jsonl")
    with pytest.raises(ValueError, match="needs data.train_path"):
        ImageTextDataModule(source="webdataset", resolution=8)
    with pytest.raises(ValueError, match="needs data.resolution"):
        ImageTextDataModule(source="manifest", train_path="m.jsonl")
    with pytest.raises(ValueError, match="text_cache needs a finite training set"):
        ImageTextDataModule(train_data=_Stream(), text_cache=str(tmp_path / "cache"))
    with pytest.raises(ValueError, match="n_val=-1"):
        ImageTextDataModule(n_val=-1)
