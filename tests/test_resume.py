"""Bit-exact resume (docs/reliability.md, "Kill and resume"): a run killed with SIGKILL at any point and resumed from
``last.ckpt`` ends with the weights, the optimizer state, the EMA and the random streams of the run that was never
interrupted -- max abs difference exactly 0 on CPU in fp32 -- and every ``last.ckpt`` a kill leaves behind loads.

The batch layouts and the RNG state are checked in-process; the runs are real ``paradiffusion fit`` processes (a 32 px
UNet and a 2-block LM: each run takes seconds), killed by a callback at random steps or in the middle of a save.
"""
from __future__ import annotations

import io
import os
import random
import signal
import subprocess
import sys
import time
from itertools import islice
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from lightning.pytorch.callbacks import Callback

from helpers import REPO, random_lm_dir, TINY_UNET_AND_SCHEDULER
from paradiffusion.checks import load_checkpoint
from paradiffusion.resume import EpochBatches, ResumableLoader, StreamBatches, capture_rng, restore_rng
from parashapes import ParaShapesDataset, ParaShapesIterable

TESTS = Path(__file__).resolve().parent
N_STEPS = 10  # the uninterrupted run's budget: a multiple of the save interval, so last.ckpt holds its end


# ------------------------------------------------------------------------------------ callbacks the killed runs use
class KillAt(Callback):
    """SIGKILL this process when batch `step` starts (global_step == step: after step `step`'s checkpoint, if any)."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


class KillInSave(Callback):
    """SIGKILL this process half-way through writing its `nth` checkpoint (counted from 1): half the bytes are in the
    partial file, nothing is renamed."""

    def __init__(self, nth: int):
        self.nth = nth

    def setup(self, trainer, pl_module, stage):
        import paradiffusion.checkpoint_io as cio

        real_save, count = torch.save, [0]

        def save(obj, f, *args, **kwargs):
            if hasattr(f, "write"):
                count[0] += 1
                if count[0] == self.nth:
                    buf = io.BytesIO()
                    real_save(obj, buf, *args, **kwargs)
                    f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
                    f.flush()
                    os.fsync(f.fileno())
                    os.kill(os.getpid(), signal.SIGKILL)
            return real_save(obj, f, *args, **kwargs)

        cio.torch.save = save


class Slow(Callback):
    """Make each step take at least `seconds`, so an external kill at a random time lands at a random step."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        time.sleep(self.seconds)


# ------------------------------------------------------------------------------------------------------ helpers
def _config(lm_dir: Path, root: Path, finite: bool, callbacks: list[dict], every: int = 2) -> Path:
    """A whole `paradiffusion fit` config at test size; validation (the RNG fence) every 4 steps."""
    cfg = {
        "seed_everything": 0,
        "trainer": {
            "accelerator": "cpu", "devices": 1, "precision": "32-true", "max_steps": N_STEPS, "max_epochs": -1,
            "check_val_every_n_epoch": None, "val_check_interval": 4, "limit_val_batches": 1,
            "num_sanity_val_steps": 0, "enable_progress_bar": False, "enable_model_summary": False,
            "log_every_n_steps": 1, "gradient_clip_val": 1.0, "default_root_dir": str(root),
            "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger",
                       "init_args": {"save_dir": str(root), "name": "stage", "version": "run"}},
            "callbacks": [
                {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                 "init_args": {"save_top_k": 0, "save_last": True, "every_n_train_steps": every,
                               "save_on_train_epoch_end": True}},
                {"class_path": "paradiffusion.resume.ResumeState"},
                *callbacks,
            ],
        },
        "model": {"class_path": "paradiffusion.module.ParaDiffusion", "init_args": {
            "text_encoder": {"class_path": "paradiffusion.models.LLMTextEncoder", "init_args": {
                "pretrained": str(lm_dir), "max_length": 64, "lora": {"r": 4, "dropout": 0.1}, "out_dim": 32}},
            **TINY_UNET_AND_SCHEDULER,
            # caption dropout and LoRA dropout draw from the random streams too
            "warmup_steps": 2, "ema_decay": 0.9, "sample_steps": 2, "caption_dropout": 0.3}},
        "data": {"class_path": "paradiffusion.data.Stage1PretrainData", "init_args": {
            "train_data": {"class_path": "parashapes.ParaShapesIterable",
                           "init_args": {"split": "stage1", "resolution": 32}},
            "val_data": {"class_path": "parashapes.ParaShapesDataset",
                         "init_args": {"split": "val", "n": 4, "resolution": 32}},
            # finite: 10 items in shuffled epochs of 2 batches (2 left over), read by 2 workers
            "batch_size": 4, "n_train": 10 if finite else None, "num_workers": 2 if finite else 0}},
    }
    root.mkdir(parents=True, exist_ok=True)
    path = root / "config.in.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _fit(config: Path, *extra: str, killed: bool = False, wait: bool = True):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(
        [str(TESTS), str(REPO / "src"), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, "-m", "paradiffusion.cli", "fit", "--config", str(config), *extra],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if not wait:
        return proc
    return _finish(proc, killed)


def _finish(proc: subprocess.Popen, killed: bool) -> subprocess.Popen:
    out, err = proc.communicate(timeout=600)
    expected = -signal.SIGKILL if killed else 0
    assert proc.returncode == expected, f"rc {proc.returncode}, expected {expected}:\n{out[-2000:]}\n{err[-5000:]}"
    return proc


def _ckpt(root: Path) -> Path:
    return root / "stage" / "run" / "checkpoints" / "last.ckpt"


def _tensors(obj, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor in a checkpoint by its path (ModelCheckpoint's own bookkeeping left out)."""
    found = {}
    if isinstance(obj, torch.Tensor):
        found[prefix] = obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            if not str(k).startswith("ModelCheckpoint"):
                found.update(_tensors(v, f"{prefix}/{k}"))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            found.update(_tensors(v, f"{prefix}/{i}"))
    return found


def assert_same_run(ckpt: Path, reference: Path) -> None:
    """Weights, optimizer state, EMA and random streams equal bit for bit (max abs difference exactly 0)."""
    a, b = load_checkpoint(ckpt, "resumed"), load_checkpoint(reference, "reference")
    assert a["global_step"] == b["global_step"] == N_STEPS
    ta, tb = _tensors(a), _tensors(b)
    assert set(ta) == set(tb)
    assert any(k.startswith("/state_dict/") for k in ta) and any("optimizer_states" in k for k in ta)
    assert any("shadow" in k for k in ta), "no EMA in the checkpoint"
    assert any("/rng/torch" in k for k in ta), "no random-stream state in the checkpoint"
    diffs = {k: (ta[k].double() - tb[k].double()).abs().max().item() if ta[k].numel() else 0.0
             for k in ta if ta[k].shape == tb[k].shape}
    assert all(ta[k].shape == tb[k].shape for k in ta)
    bad = {k: d for k, d in diffs.items() if d != 0}
    assert not bad, f"{len(bad)} of {len(diffs)} tensors differ, e.g. {sorted(bad.items(), key=lambda x: -x[1])[:5]}"


@pytest.fixture(scope="module")
def lm_dir(tmp_path_factory) -> Path:
    return random_lm_dir(tmp_path_factory.mktemp("lm"), hidden_size=64)


# --------------------------------------------------------------------------------------- layouts and streams
def _ids(batch_items) -> list[str]:
    return [it["id"] for it in batch_items]


def test_stream_batches_are_the_same_for_any_worker_count_and_resume_at_the_next_batch():
    stream = ParaShapesIterable("stage1", resolution=32, seed=2)
    got = {}
    for workers in (0, 2):
        layout = StreamBatches(stream, 3)
        loader = ResumableLoader(layout, layout, num_workers=workers, collate_fn=_ids,
                                 persistent_workers=workers > 0)
        got[workers] = list(islice(iter(loader), 4))
        assert loader.state_dict()["batches"] == 4
        # a loader restored at batch 2 reads batches 2, 3, ... of the same layout
        loader.load_state_dict({"batches": 2, "layout": layout.describe()})
        assert list(islice(iter(loader), 2)) == got[workers][2:4]
    assert got[0] == got[2]
    # single process: the stream in its own order (what a run before this layout read)
    assert sum(got[0], []) == [x["id"] for x in islice(iter(stream), 12)]
    # two ranks: disjoint batches that together are the stream's first items
    ranks = [list(islice(iter(ResumableLoader(lay, lay, collate_fn=_ids)), 2))
             for lay in (StreamBatches(stream, 3, r, 2) for r in (0, 1))]
    assert sorted(sum(ranks[0] + ranks[1], [])) == sorted(x["id"] for x in islice(iter(stream), 12))


def test_epoch_batches_shuffle_by_epoch_and_resume_inside_an_epoch():
    data = ParaShapesDataset("stage3", 10, 32)
    layout = EpochBatches(data, 3, seed=5)
    loader = ResumableLoader(layout, layout, collate_fn=_ids, num_workers=2, persistent_workers=True)
    assert len(loader) == 3  # 10 // 3 batches an epoch: the remainder is dropped
    epochs = [list(iter(loader)) for _ in range(3)]
    for epoch in epochs:
        assert len(epoch) == 3 and len(set(sum(epoch, []))) == 9
    assert epochs[0] != epochs[1] != epochs[2]
    again = EpochBatches(data, 3, seed=5)
    assert list(iter(ResumableLoader(again, again, collate_fn=_ids))) == epochs[0]  # a function of (seed, epoch)
    # restored at global batch 4 (epoch 1, batch 1): the rest of epoch 1, then epoch 2
    restored = EpochBatches(data, 3, seed=5)
    loader = ResumableLoader(restored, restored, collate_fn=_ids)
    loader.load_state_dict({"batches": 4})
    assert list(iter(loader)) == epochs[1][1:] and list(iter(loader)) == epochs[2]
    # two ranks read disjoint halves of each epoch
    halves = [list(iter(ResumableLoader(lay, lay, collate_fn=_ids)))
              for lay in (EpochBatches(data, 2, r, 2, seed=5) for r in (0, 1))]
    assert len(halves[0]) == len(halves[1]) == 2 and not set(sum(halves[0], [])) & set(sum(halves[1], []))
    with pytest.raises(ValueError, match="fewer than one batch"):
        EpochBatches(data, 6, 0, 2)


def test_datamodule_reads_training_data_in_resumable_layouts():
    from lightning.pytorch.trainer.states import TrainerFn

    from paradiffusion.data import ImageTextDataModule

    stream = ParaShapesIterable("stage2", resolution=32, seed=3)
    dm = ImageTextDataModule(train_data=stream, batch_size=2)
    dm.collator = _ids
    progress = SimpleNamespace(total=SimpleNamespace(ready=3))
    dm.trainer = SimpleNamespace(global_rank=0, world_size=1, global_step=3, state=SimpleNamespace(fn=TrainerFn.FITTING),
                                 fit_loop=SimpleNamespace(epoch_loop=SimpleNamespace(batch_progress=progress)))
    loader = dm.train_dataloader()
    assert isinstance(loader, ResumableLoader) and isinstance(loader.dataset, StreamBatches)
    assert next(iter(loader)) == [x["id"] for x in islice(iter(stream), 6, 8)]  # training has taken 3 batches
    assert loader.state_dict()["batches"] == 3  # what training consumed, not what the loader prefetched
    dm.n_train = 5
    loader = dm.train_dataloader()
    assert isinstance(loader.dataset, EpochBatches) and len(loader) == 2


def test_random_streams_survive_a_weights_only_checkpoint(tmp_path):
    module = torch.nn.Linear(2, 2)
    module.noise_generator = torch.Generator().manual_seed(7)
    torch.manual_seed(1), random.seed(2), np.random.seed(3)
    np.random.standard_normal()  # a cached Gaussian in numpy's state

    def draw():
        return (torch.rand(3).tolist(), random.random(), np.random.standard_normal(),
                torch.rand(2, generator=module.noise_generator).tolist())

    torch.save({"rng": capture_rng(module)}, tmp_path / "s.pt")
    first = draw()
    draw()
    restore_rng(torch.load(tmp_path / "s.pt", weights_only=True)["rng"], module)
    assert draw() == first


# ------------------------------------------------------------------------------------------- kill and resume
@pytest.fixture(scope="module")
def reference_runs(tmp_path_factory, lm_dir) -> dict[str, Path]:
    """The uninterrupted N-step runs (stream and finite set), run side by side."""
    root = tmp_path_factory.mktemp("reference")
    procs = {kind: _fit(_config(lm_dir, root / kind, kind == "finite", []), wait=False)
             for kind in ("stream", "finite")}
    for proc in procs.values():
        _finish(proc, killed=False)
    return {kind: _ckpt(root / kind) for kind in procs}


@pytest.mark.parametrize("kind", ["stream", "finite"])
def test_sigkill_at_two_random_steps_then_resume_equals_the_uninterrupted_run(kind, tmp_path, lm_dir, reference_runs):
    # two kills at random steps, each resumed from the last.ckpt it left (saved every 2 steps, so a kill may lose
    # steps that the resumed run trains again), then the rest of the budget
    k1, k2 = sorted(random.Random().sample(range(2, N_STEPS), 2))
    root = tmp_path / "run"
    steps = []
    for kill in (k1, k2, None):
        cbs = [] if kill is None else [{"class_path": "test_resume.KillAt", "init_args": {"step": kill}}]
        config = _config(lm_dir, root, kind == "finite", cbs)
        resume = ["--ckpt_path", str(_ckpt(root))] if steps else []
        _fit(config, *resume, killed=kill is not None)
        steps.append(load_checkpoint(_ckpt(root), "last.ckpt")["global_step"])
    assert steps[:2] == [k1 - k1 % 2, k2 - k2 % 2], (k1, k2, steps)
    assert_same_run(_ckpt(root), reference_runs[kind])


def test_sigkill_during_saves_leaves_a_whole_last_ckpt_and_resume_is_exact(tmp_path, lm_dir, reference_runs):
    root = tmp_path / "run"
    ckpt = _ckpt(root)
    # 1. killed half-way through writing its 3rd checkpoint (saved every step): last.ckpt is the 2nd, whole
    _fit(_config(lm_dir, root, False, [{"class_path": "test_resume.KillInSave", "init_args": {"nth": 3}}], every=1),
         killed=True)
    assert load_checkpoint(ckpt, "last.ckpt")["global_step"] == 2
    partials = [p.name for p in ckpt.parent.iterdir() if ".partial-" in p.name]
    assert len(partials) == 1 and partials[0].startswith(".last.ckpt.partial-"), partials
    # 2. resumed, then SIGKILLed from outside at a random moment while it saves every step
    proc = _fit(_config(lm_dir, root, False, [{"class_path": "test_resume.Slow", "init_args": {"seconds": 0.2}}],
                        every=1), "--ckpt_path", str(ckpt), wait=False)
    deadline = time.monotonic() + 300
    while load_checkpoint(ckpt, "last.ckpt")["global_step"] < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(random.uniform(0.0, 1.0))
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=600)
    step = load_checkpoint(ckpt, "last.ckpt")["global_step"]  # whatever moment it died at, last.ckpt loads
    assert 3 <= step <= N_STEPS
    # 3. resumed to the end: the partial files the kills left are gone (removed by the next save), and the run
    # equals the uninterrupted one
    _fit(_config(lm_dir, root, False, [], every=1), "--ckpt_path", str(ckpt))
    if step < N_STEPS:
        assert [p.name for p in ckpt.parent.iterdir() if ".partial-" in p.name] == []
    assert_same_run(ckpt, reference_runs["stream"])


def test_last_ckpt_holds_the_step_training_stopped_at(tmp_path, lm_dir):
    """A stage stopped by max_steps between two periodic saves (here: 3 steps, saved every 200) still leaves its last
    step in last.ckpt (`SaveLastAtEnd`): the next stage's init_from starts from the weights the stage ended with."""
    from helpers import run_cli, tiny_stage_args

    run_cli(["fit", *tiny_stage_args(2, lm_dir, tmp_path / "runs", "--model.init_args.init_from=null",
                                     "--trainer.max_steps=3", "--trainer.val_check_interval=100")])
    ckpt = load_checkpoint(tmp_path / "runs" / "stage2" / "run" / "checkpoints" / "last.ckpt", "last.ckpt")
    assert ckpt["global_step"] == 3
    # resumed in a copy of the run directory, further: last.ckpt itself moves on (no last-v1.ckpt beside a stale one)
    import shutil

    shutil.copytree(tmp_path / "runs", tmp_path / "copy")
    ckpts = tmp_path / "copy" / "stage2" / "run" / "checkpoints"
    # base.yaml's checkpoint callbacks, saving every 2 steps instead of 200 (so the periodic save meets the old file)
    callbacks = yaml.safe_load((REPO / "experiments" / "base.yaml").read_text())["trainer"]["callbacks"]
    for cb in callbacks:
        if (cb.get("init_args") or {}).get("every_n_train_steps"):
            cb["init_args"]["every_n_train_steps"] = 2
    (tmp_path / "every2.yaml").write_text(yaml.safe_dump({"trainer": {"callbacks": callbacks}}))
    run_cli(["fit", *tiny_stage_args(2, lm_dir, tmp_path / "copy", "--model.init_args.init_from=null",
                                     "--trainer.max_steps=5", "--trainer.val_check_interval=100",
                                     "--config", str(tmp_path / "every2.yaml"),
                                     "--ckpt_path", str(ckpts / "last.ckpt"))])
    assert load_checkpoint(ckpts / "last.ckpt", "last.ckpt")["global_step"] == 5
    assert sorted(p.name for p in ckpts.iterdir() if p.name.startswith("last")) == ["last.ckpt"]
