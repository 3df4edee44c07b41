"""Training callbacks: stop or skip a step whose loss or gradient is not finite (`NonFiniteGuard`), keep validation
off the training random streams (`ValidationRNGFence`) and log the learning rates and truncated paragraphs
(`TrainingLogs`) — `ParaDiffusion` brings these two to every run — a ``last.ckpt`` at the end of the budget
(`SaveLastAtEnd`) and a parameter checksum across ranks (`ParameterChecksum`). A benchmark's validation and test scoring comes as its own callbacks,
named in the configs' ``trainer.callbacks`` (e.g. ParaShapes' ``SampleAndScore`` in ``experiments/base.yaml``)."""
from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path
from typing import Literal

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.seed import isolate_rng

from paradiffusion.checks import NonFiniteError

log = logging.getLogger(__name__)


class ParameterChecksum(Callback):
    """At the end of fit, write a checksum of the trainable parameters of this rank to
    ``<dirpath>/param_checksum_rank<r>.json``: a cheap check that DDP/ZeRO ranks stayed in sync."""

    def __init__(self, dirpath: str | None = None):
        self.dirpath = dirpath

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        params = [p.detach().double().cpu() for p in pl_module.parameters() if p.requires_grad]
        record = {
            "rank": trainer.global_rank,
            "world_size": trainer.world_size,
            "global_step": trainer.global_step,
            "num_tensors": len(params),
            "sum": float(sum(p.sum() for p in params)),
            "abs_sum": float(sum(p.abs().sum() for p in params)),
        }
        out = Path(self.dirpath or trainer.log_dir or trainer.default_root_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"param_checksum_rank{trainer.global_rank}.json").write_text(json.dumps(record) + "\n")


class SaveLastAtEnd(Callback):
    """Write ``last.ckpt`` when training ends at its budget, whatever step that is.

    Lightning's ``ModelCheckpoint(every_n_train_steps=N, save_last=True)`` saves every N steps only: a run stopped by
    ``max_steps`` between two saves leaves ``last.ckpt`` up to N - 1 steps behind (a 300-step stage saved every 200
    left its step-200 weights), and the next stage's ``init_from`` would start from those. Not called when training
    stops on an exception (a non-finite loss, an interrupt): then ``last.ckpt`` stays the last good save."""

    def __init__(self) -> None:
        self._saved_step: int | None = None

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        self._saved_step = trainer.global_step

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self._saved_step == trainer.global_step:
            return
        for cb in trainer.checkpoint_callbacks:
            if getattr(cb, "save_last", None) and cb.dirpath is not None:
                trainer.save_checkpoint(str(Path(cb.dirpath) / f"{cb.CHECKPOINT_NAME_LAST}{cb.FILE_EXTENSION}"))
                return


class ValidationRNGFence(Callback):
    """Validation must not change what training draws next: anything in it that drew from the global streams would
    shift the noise, timesteps and caption dropout of every later step, so how often a run validates would change its
    trajectory. (Measured before the evaluation loaders got their own generators: runs validating every 10 steps and
    never parted at step 10.) The loaders and samplers draw from their own seeded generators; this fence covers
    whatever else a callback or library draws: the torch, CUDA, Python and NumPy streams are saved as validation
    starts and restored as it ends (Lightning's `isolate_rng`)."""

    def __init__(self) -> None:
        self._fence: contextlib.ExitStack | None = None

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._close()
        self._fence = contextlib.ExitStack()
        self._fence.enter_context(isolate_rng())

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._close()  # the streams as they were when validation started

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._close()

    def _close(self) -> None:
        if self._fence is not None:
            self._fence.close()
            self._fence = None


class TrainingLogs(Callback):
    """What `ParaDiffusion` logs besides its loss: each parameter group's learning rate as the step uses it
    (``train/lr_<group>``) and how many paragraphs were cut at ``max_length`` (``train/truncated``, summed over the
    epoch): never silent."""

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        for group in trainer.optimizers[0].param_groups:
            pl_module.log(f"train/lr_{group.get('name', 'group')}", group["lr"], batch_size=len(batch["pixel_values"]))

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        if "num_truncated" in batch:  # suite collate: a per-batch count
            count = torch.as_tensor(batch["num_truncated"]).float().sum()
        elif "truncated" in batch:  # LLMTextEncoder.tokenize: a per-row flag
            count = torch.as_tensor(batch["truncated"]).float().sum()
        else:  # no flag: a row at the cap was (probably) truncated
            count = (batch["attention_mask"].sum(1) >= pl_module.text_encoder.max_length).float().sum()
        pl_module.log("train/truncated", count, reduce_fx="sum", on_step=False, on_epoch=True,
                      batch_size=len(batch["pixel_values"]))


class NonFiniteGuard(Callback):
    """A non-finite loss or gradient never reaches the weights, the EMA or a checkpoint.

    Checked once per optimizer step, after backward and before gradient clipping and ``optimizer.step`` (every
    micro-batch's loss under gradient accumulation; the gradients after DDP's all-reduce; the decision is agreed
    across ranks, so all stop or skip together):

    * ``action="stop"`` (default): raise :class:`paradiffusion.checks.NonFiniteError` naming the step, the batch ids
      and the first bad loss or gradient; ``paradiffusion fit`` prints it as one line and exits 1. Nothing of the
      step is applied and no checkpoint is written on the way out.
    * ``action="skip"``: drop the step's gradients (``optimizer.step`` then changes no weight and no optimizer
      state), skip the EMA update of that step, count it (``train/skipped_steps``, cumulative, kept across resume)
      and go on; stop as above after ``max_consecutive_skips`` skipped steps in a row. A skipped step still counts
      toward ``max_steps`` and the learning-rate schedule, like a skipped fp16 step. Not possible under DeepSpeed
      (the engine holds the gradients): there a bad step stops the run.

    Every checkpoint is also checked as it is written (``check_checkpoints``): one with NaN/Inf is refused.
    ``paradiffusion fit`` adds a guard to every run (``--nonfinite.action=skip`` etc., or a ``nonfinite:`` section
    in a config); one listed under ``trainer.callbacks`` replaces it. Under fp16 mixed precision the gradient
    scaler's own inf/NaN skips are left to it: only the loss is checked.
    """

    def __init__(self, action: Literal["stop", "skip"] = "stop", max_consecutive_skips: int = 10,
                 check_checkpoints: bool = True):
        if action not in ("stop", "skip"):
            raise ValueError(f"NonFiniteGuard: action={action!r}, expected 'stop' or 'skip'")
        if max_consecutive_skips < 1:
            raise ValueError(f"NonFiniteGuard: max_consecutive_skips={max_consecutive_skips}, expected >= 1")
        self.action, self.max_consecutive_skips, self.check_checkpoints = action, max_consecutive_skips, check_checkpoints
        self.skipped = 0  # cumulative (checkpointed)
        self.consecutive = 0
        self._loss_ok: torch.Tensor | None = None  # all micro-batch losses of this optimizer step finite
        self._bad_loss: torch.Tensor | None = None
        self._batch_ids: list | None = None
        self._batch_idx = 0

    # -- state ----------------------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"skipped": self.skipped, "consecutive": self.consecutive}

    def load_state_dict(self, state: dict) -> None:
        self.skipped, self.consecutive = int(state.get("skipped", 0)), int(state.get("consecutive", 0))

    # -- per batch ------------------------------------------------------------------------------------------------
    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        _skip_ema_update(pl_module, False)  # a skip whose EMA update never came (partial accumulation at an epoch end)
        self._batch_idx = batch_idx
        self._batch_ids = list(batch["id"][:4]) if isinstance(batch, dict) and isinstance(batch.get("id"), list) else None

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        finite = torch.isfinite(loss.detach()).all()  # stays on the device: one sync per optimizer step, not two
        if self._loss_ok is None:
            self._loss_ok, self._bad_loss = finite, loss.detach().float().reshape(-1)[:1]
        else:
            self._bad_loss = torch.where(self._loss_ok, loss.detach().float().reshape(-1)[:1], self._bad_loss)
            self._loss_ok = self._loss_ok & finite

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer) -> None:
        loss_ok, bad_loss = self._loss_ok, self._bad_loss
        self._loss_ok = self._bad_loss = None
        grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        ok = loss_ok if loss_ok is not None else torch.tensor(True)
        if grads and scaler is None:
            # The max-norm is NaN/Inf exactly when a gradient holds NaN/Inf (the 2-norm of a large finite fp16
            # gradient can overflow); one fused kernel per device and dtype.
            norms = torch._foreach_norm(grads, float("inf"))
            device = norms[0].device
            ok = ok.to(device) & torch.isfinite(torch.stack([n.float().to(device) for n in norms])).all()
        bad = trainer.strategy.reduce_boolean_decision(not bool(ok), all=False)  # any rank: all ranks act alike
        if not bad:
            self.consecutive = 0
            if self.action == "skip":
                pl_module.log("train/skipped_steps", float(self.skipped), on_step=True, on_epoch=False, batch_size=1)
            return
        what = self._describe(pl_module, optimizer, loss_ok, bad_loss, check_grads=scaler is None)
        where = (f"global_step {trainer.global_step} (epoch {trainer.current_epoch}, batch {self._batch_idx}"
                 + (f", ids {self._batch_ids}" if self._batch_ids else "") + ")")
        if self.action == "stop":
            raise NonFiniteError(
                f"{what} at {where}: stopped before the weights, the EMA or a checkpoint took it. Lower the learning "
                f"rate or raise the warm-up (model.init_args.*_lr, warmup_steps), or skip such steps with "
                f"--nonfinite.action=skip")
        if "DeepSpeed" in type(trainer.strategy).__name__:
            raise NonFiniteError(f"{what} at {where}: stopped (nonfinite.action=skip is not possible under DeepSpeed, "
                                 f"whose engine applies the gradients itself)")
        for g in optimizer.param_groups:  # no gradient: AdamW/SGD leave the weight and its state untouched
            for p in g["params"]:
                p.grad = None
        _skip_ema_update(pl_module, True)
        self.skipped += 1
        self.consecutive += 1
        pl_module.log("train/skipped_steps", float(self.skipped), on_step=True, on_epoch=False, batch_size=1)
        log.warning("NonFiniteGuard: %s at %s: step skipped (%d in a row, %d in all)", what, where,
                    self.consecutive, self.skipped)
        if self.consecutive >= self.max_consecutive_skips:
            raise NonFiniteError(f"{what} at {where}: {self.consecutive} steps in a row were non-finite and skipped "
                                 f"(nonfinite.max_consecutive_skips={self.max_consecutive_skips}); stopped. The run "
                                 f"has diverged: lower the learning rate or resume from an earlier checkpoint")

    @staticmethod
    def _describe(pl_module, optimizer, loss_ok, bad_loss, check_grads: bool) -> str:
        if loss_ok is not None and not bool(loss_ok):
            return f"non-finite loss ({float(bad_loss[0])})"
        if not check_grads:
            return "non-finite loss"
        names = {id(p): n for n, p in pl_module.named_parameters()}
        for g in optimizer.param_groups:
            for p in g["params"]:
                if p.grad is not None and not bool(torch.isfinite(p.grad).all()):
                    return f"non-finite gradient of {names.get(id(p), '<unnamed parameter>')!r} (loss finite)"
        return "non-finite gradient on another rank"

    # -- checkpoints ----------------------------------------------------------------------------------------------
    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        if not self.check_checkpoints:
            return
        from paradiffusion.checks import NonFiniteWeightsError, assert_finite, checkpoint_tensors

        ema = getattr(pl_module, "ema", None)
        named = list(checkpoint_tensors({"state_dict": checkpoint.get("state_dict", {})}))
        if ema is not None and hasattr(ema, "shadow"):  # `ema.EMAWeights` may add it to the checkpoint after this hook
            named += [(f"ema:{k}", v) for k, v in ema.shadow.items()]
        try:
            assert_finite(named, f"checkpoint at step {trainer.global_step}")
        except NonFiniteWeightsError as e:
            raise NonFiniteError(f"{e} (refused to write it)") from None

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        _skip_ema_update(pl_module, False)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        _skip_ema_update(pl_module, False)


def _skip_ema_update(pl_module: L.LightningModule, skip: bool) -> None:
    """Make the module's next EMA update (`ema.EMAWeights`, after this step) a no-op, once; or cancel that."""
    ema = getattr(pl_module, "ema", None)
    if ema is not None and hasattr(ema, "skip_next_update"):
        ema.skip_next_update = skip
