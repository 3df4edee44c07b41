"""Datasets (infinite/finite, worker- and rank-aware, the DataModule's protocol), storage formats and the
`parashapes` / `paradiffusion data` CLI."""
from __future__ import annotations

import hashlib
import json
import shutil
import sys
import subprocess
from itertools import islice
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from paradiffusion.cli import main as top_main
from parashapes import ParaShapesDataset, ParaShapesIterable, generate_split, iter_webdataset
from parashapes.describe import scene_list
from parashapes.storage import write_webdataset


def test_iterable_items_and_equivalence():
    it = ParaShapesIterable("stage2", resolution=32, seed=1)
    items = list(islice(iter(it), 4))
    ds = ParaShapesDataset("stage2", 4, 32, None, 1)
    for i, item in enumerate(items):
        assert set(item) == {"id", "image", "text", "text_kind", "spec"} and item["text_kind"] == "paragraph"
        assert item["image"].shape == (3, 32, 32) and item["image"].dtype == torch.float32
        assert item["id"] == ds[i]["id"] and torch.equal(item["image"], ds[i]["image"])
        assert item["text"] == item["spec"]["paragraph"]
    assert len(ds) == 4
    lists = ParaShapesDataset("stage2", 4, 32, None, 1, text="scene_list")
    assert [x["text"] for x in lists] == [scene_list(x["spec"]) for x in items] and lists[0]["text_kind"] == "scene_list"
    with pytest.raises(ValueError, match="text must be one of"):
        ParaShapesIterable("stage2", text="summary")


def test_datasets_follow_the_datamodule_protocol(tmp_path):
    from types import SimpleNamespace

    from paradiffusion.data import ImageTextDataModule
    from paradiffusion.data.stages import dataset_texts
    from paradiffusion.resume import StreamBatches
    from parashapes import ParaShapesFolder
    from parashapes.storage import write_folder

    stream = ParaShapesIterable("stage2", resolution=32, seed=3)
    first = stream.take(4)  # the stream's first items, as a finite dataset
    assert isinstance(first, ParaShapesDataset) and [x["id"] for x in first] == [x["id"] for x in islice(stream, 4)]
    assert first.take(10).n == 4 and first.take(2).texts() == first.texts()[:2]
    resumed = stream.resume(step=5, rank=1, world_size=2)  # a resumed run draws fresh scenes, dealt over ranks
    assert (resumed.seed, resumed._rank, resumed._world, resumed.split) == (3 + 7919 * 5, 1, 2, "stage2")
    # what the DataModule hands the trainer: the stream read by index in this rank's batches (item_at), which the
    # training loader positions where training stands (tests/test_resume.py)
    dm = ImageTextDataModule(train_data=stream, val_data=ParaShapesDataset("val", 8, 32), n_val=3, batch_size=2)
    dm.trainer = SimpleNamespace(global_step=7, global_rank=1, world_size=2)
    train = dm.train_dataset()
    assert isinstance(train, StreamBatches) and train.stream is stream and (train.rank, train.world_size) == (1, 2)
    assert [x["id"] for x in islice(iter(train), 2)] == [stream.item_at(i)["id"] for i in (2, 3)]
    assert dataset_texts(dm._eval_dataset("val")) == ParaShapesDataset("val", 3, 32).texts()
    dm.n_train = 5  # a finite training set: the stream's first 5 scenes, whatever the step
    assert dataset_texts(dm.train_dataset()) == stream.take(5).texts()
    # a split written to disk reads back with its specs
    write_folder(first.specs, tmp_path / "f", 32)
    folder = ParaShapesFolder(tmp_path / "f", 32)
    assert folder.texts() == first.texts() and folder[1]["spec"] == first[1]["spec"]
    assert torch.allclose(folder[1]["image"], first[1]["image"], atol=1 / 255)
    with pytest.raises(FileNotFoundError, match="not a ParaShapes folder"):
        ParaShapesFolder(tmp_path, 32)


def test_ranks_and_workers_do_not_repeat():
    ids = []
    for rank in range(2):
        it = ParaShapesIterable("stage1", seed=0, rank=rank, world_size=2)
        dl = torch.utils.data.DataLoader(it, batch_size=None, num_workers=2)
        ids.append([x["id"] for x in islice(iter(dl), 20)])
    assert not set(ids[0]) & set(ids[1])
    assert len(set(ids[0])) == 20
    expected = {f"stage1-0-{i:07d}" for i in range(40)}
    assert set(ids[0]) | set(ids[1]) == expected  # together: exactly the first 40 indices


def test_webdataset_roundtrip_is_deterministic(tmp_path):
    specs = generate_split("stage3", 7, seed=0)
    a = write_webdataset(specs, tmp_path / "a", 32, "curated", shard_size=3)
    b = write_webdataset(specs, tmp_path / "b", 32, "curated", shard_size=3)
    assert [p.name for p in a] == ["00000.tar", "00001.tar", "00002.tar"]
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]
    got = list(iter_webdataset(tmp_path / "a"))
    assert [k for k, *_ in got] == ["000000000", "000000001", "000000002", "000010000", "000010001",
                                    "000010002", "000020000"]
    for (key, img, text, meta), s in zip(got, specs):
        assert img.size == (32, 32) and text == s.paragraph and meta["id"] == s.id and meta["caption"] == text
        assert meta["objects"] == [o.to_dict() for o in s.objects]


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.iterdir()):
        h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()


def test_cli_generate_score_render(tmp_path, capsys):
    out = tmp_path / "test32"
    args = ["data", "generate", "--split", "test", "--n", "12", "--resolution", "32", "--style", "plain",
            "--seed", "0", "--out", str(out)]
    assert top_main(args) == 0
    first = _digest(out)
    shutil.rmtree(out)
    assert top_main(args) == 0 and _digest(out) == first  # byte-identical
    capsys.readouterr()

    assert top_main(["data", "score", "--specs", str(out / "specs.jsonl"), "--images", str(out),
                     "--json", str(tmp_path / "s.json")]) == 0
    summary = json.loads(capsys.readouterr().out)
    for key in ("scene_exact", "object_exact", "presence", "position", "size", "shape", "background", "by_mention"):
        assert key in summary
    assert summary["scene_exact"] == 1.0 and summary["failures"]["count"] == 0
    assert len(json.loads((tmp_path / "s.json").read_text())["scenes"]) == 12

    # the chance level: perfect renders judged against the next scene's spec are mostly wrong, reported by image id
    assert top_main(["data", "score", "--specs", str(out / "specs.jsonl"), "--images", str(out), "--against-shifted",
                     "--json", str(tmp_path / "c.json")]) == 0
    chance = json.loads(capsys.readouterr().out)
    assert chance["against_shifted"] and chance["num_scenes"] == 12
    assert chance["scene_exact"] < 0.5 and chance["object_exact"] < summary["object_exact"]
    ids = [json.loads(line)["id"] for line in (out / "specs.jsonl").read_text().splitlines()]
    assert [r["id"] for r in json.loads((tmp_path / "c.json").read_text())["scenes"]] == ids

    # missing, unreadable and wrong-size images are failures, reported by id; never skipped
    specs = [json.loads(line) for line in (out / "specs.jsonl").read_text().splitlines()]
    (out / f"{specs[0]['id']}.png").unlink()
    (out / f"{specs[1]['id']}.png").write_bytes(b"not a png")
    Image.new("RGB", (32, 20)).save(out / f"{specs[2]['id']}.png")
    Image.open(out / f"{specs[3]['id']}.png").resize((100, 100)).save(out / f"{specs[3]['id']}.png")
    code = top_main(["data", "score", "--specs", str(out / "specs.jsonl"), "--images", str(out), "--strict"])
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert code == 1 and summary["num_scenes"] == 12 and summary["failures"]["count"] == 3
    assert summary["failures"]["missing"][0]["id"] == specs[0]["id"]
    assert summary["failures"]["unreadable"][0]["id"] == specs[1]["id"]
    assert summary["failures"]["bad_size"][0]["id"] == specs[2]["id"]
    assert summary["scene_exact"] == 9 / 12  # the rescaled 100 px image is still judged correct
    assert "3 of 12 images could not be judged" in captured.err

    # hand-written specs: render, then an invalid file gives exit 2 with file:line
    hand = tmp_path / "hand.jsonl"
    hand.write_text(json.dumps({"id": "mine", "paragraph": "x", "background": "gray", "objects": [
        {"shape": "square", "color": "cyan", "size": "large", "position": "center"}]}) + "\n")
    assert top_main(["data", "render", "--specs", str(hand), "--out", str(tmp_path / "r"), "--resolution", "64",
                     "--style", "curated"]) == 0
    assert np.asarray(Image.open(tmp_path / "r" / "mine.png")).shape == (64, 64, 3)
    hand.write_text('{"id": "x", "paragraph": "", "background": "gray", "objects": [{"shape": "oval", '
                    '"color": "cyan", "size": "large", "position": "center"}]}\n')
    capsys.readouterr()
    assert top_main(["data", "render", "--specs", str(hand), "--out", str(tmp_path / "r2")]) == 2
    assert f"{hand}:1: field 'objects[0].shape': unknown value 'oval'" in capsys.readouterr().err


def test_console_script_webdataset(tmp_path):
    # the script installed beside this interpreter (the venv's bin/, which need not be on PATH, e.g. in CI)
    exe = shutil.which("paradiffusion", path=str(Path(sys.executable).parent))
    assert exe, "console script not installed (pip install -e .)"
    r = subprocess.run([exe, "data", "generate", "--split", "heldout", "--n", "5", "--resolution", "48",
                        "--seed", "2", "--out", str(tmp_path / "wds"), "--format", "webdataset"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["n"] == 5
    samples = list(iter_webdataset(str(tmp_path / "wds" / "*.tar")))
    assert len(samples) == 5 and samples[0][1].size == (48, 48)
    assert samples[0][3]["id"] == "heldout-2-0000000"
    # the benchmark's own console script: the same tools (`paradiffusion data` is a plugin entry point naming them)
    exe = shutil.which("parashapes", path=str(Path(sys.executable).parent))
    assert exe, "console script not installed (pip install -e .)"
    r = subprocess.run([exe, "generate", "--split", "heldout", "--n", "5", "--resolution", "48", "--seed", "2",
                        "--out", str(tmp_path / "wds2"), "--format", "webdataset"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "wds2" / "00000.tar").read_bytes() == (tmp_path / "wds" / "00000.tar").read_bytes()
    r = subprocess.run([exe, "generate", "--split", "heldout", "--n", "0", "--out", str(tmp_path / "x")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith("parashapes generate: error:")


def test_generate_reads_spec_files_through_the_plugin_and_plain_jsonl_itself(tmp_path):
    from paradiffusion.checks import UserError
    from paradiffusion.cli import _read_prompts
    from parashapes import save_specs

    specs = generate_split("test", 3, seed=0)
    save_specs(specs, tmp_path / "specs.jsonl")
    got = _read_prompts(tmp_path / "specs.jsonl")  # ParaShapes' plugin claims its spec files: scored
    assert got.ids == [s.id for s in specs] and got.texts == [s.paragraph for s in specs]
    assert got.references == [s.to_dict() for s in specs] and got.score is not None
    images = torch.stack([ParaShapesDataset("test", 3, 32)[i]["image"] for i in range(3)])  # the scenes themselves
    assert got.score(images, got.references)["object_exact"] > 0.9
    plain = tmp_path / "plain.jsonl"
    plain.write_text(json.dumps({"id": "a", "paragraph": "a red circle"}) + "\n" + json.dumps({"text": "a square"}) + "\n")
    got = _read_prompts(plain)  # not scenes: the library's own JSONL reader, nothing to score
    assert (got.ids, got.texts, got.references) == (["a", "0001"], ["a red circle", "a square"], None)
    plain.write_text(json.dumps({"id": "a", "caption": "x"}) + "\n")
    with pytest.raises(UserError, match=r"plain.jsonl:1: needs a non-empty paragraph, text or prompt field"):
        _read_prompts(plain)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({**specs[0].to_dict(), "background": "mauve"}) + "\n{not json\n")
    with pytest.raises(UserError, match=r"bad.jsonl:1: .*\(and 1 more problems\)"):
        _read_prompts(bad)
