"""Training callbacks: sample fixed validation paragraphs with the EMA weights and score their faithfulness; stop or
skip a step whose loss or gradient is not finite (`NonFiniteGuard`)."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Literal

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger

from paradiffusion.checks import NonFiniteError
from paradiffusion.evaluate import SamplingSettings, make_grid, sample, score, text_dependence, to_pil

log = logging.getLogger(__name__)

HEADLINE = ("scene_exact", "object_exact", "presence", "position", "size", "shape", "background", "extra_objects")


class SampleAndScore(Callback):
    """After each validation: draw images for fixed ParaShapes paragraphs, log a grid + the paragraphs to
    TensorBoard, write them under ``<log_dir>/samples/``, and log the faithfulness metrics as ``val/<key>``.

    The paragraphs and seeds are the same at every validation, so the grids form a visual learning curve. Every
    rank computes the same numbers (same paragraphs, same seeds), so logged values agree across DDP ranks without
    a gather.

    With ``oracle_lists`` (default: whenever the model has a text rewriter and the datamodule trains on scene lists,
    ``data.train_text=scene_list``) it also draws the same scenes from their canonical scene lists, bypassing the
    rewriter, and logs ``val/oracle_<metric>``: what the model draws from a perfect restatement. The gap between
    ``val/<metric>`` and ``val/oracle_<metric>`` is the rewriter's share of the errors, the oracle score the UNet's.

    With ``text_use_n > 0`` it also logs ``val/text_use``: the denoising loss with shuffled paragraphs over the loss
    with the true ones on ``text_use_n`` ``split`` images (see :func:`paradiffusion.evaluate.text_dependence`;
    1.00 = the model ignores its text), and ``val/text_use_<train split>`` on the text style the stage trains on
    when its writer differs (stage-1 captions, stage-3 curated paragraphs). The attribute scores alone cannot tell a model that
    reads its text from one that draws plausible shapes from its prior.
    """

    def __init__(
        self,
        split: str = "val",
        n: int = 16,
        seed: int = 1234,
        num_inference_steps: int = 20,
        guidance_scale: float = 3.0,
        sampler: str = "dpm",
        use_ema: bool = True,
        every_n_validations: int = 1,
        text_use_n: int = 64,
        oracle_lists: bool | None = None,
    ):
        self.split, self.n, self.seed, self.use_ema = split, n, seed, use_ema
        self.oracle_lists = oracle_lists
        self.text_use_n = text_use_n
        self.settings = SamplingSettings(num_inference_steps, guidance_scale, sampler, batch_size=n)
        self.every_n_validations = every_n_validations
        self._validations = 0
        self._specs = None

    def _fixed_specs(self):
        if self._specs is None:
            from paradiffusion.parashapes import generate_split

            self._specs = generate_split(self.split, self.n, seed=self.seed)
        return self._specs

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self._validations += 1
        if (self._validations - 1) % self.every_n_validations:
            return
        specs = self._fixed_specs()
        pipeline = pl_module.make_pipeline(use_ema=self.use_ema)
        images = sample(pipeline, [s.paragraph for s in specs], self.settings, seed=self.seed)  # (N, 3, R, R)
        scores = score(images, specs)
        headline = {f"val/{k}": scores[k] for k in HEADLINE if k in scores}
        headline.update(self._text_use(trainer, pl_module))
        oracle = self._oracle_scores(pipeline, specs) if self._use_oracle_lists(trainer, pipeline) else {}
        headline.update({f"val/oracle_{k}": v for k, v in oracle.items() if k in HEADLINE})
        pl_module.log_dict(headline, sync_dist=False)
        # `trainer.log_dir` is a collective under DDP (rank 0 broadcasts it): every rank must ask, not only rank 0.
        log_dir = trainer.log_dir or trainer.default_root_dir
        restated = pipeline.restate([s.paragraph for s in specs]) if pipeline.text_rewriter is not None else None
        if trainer.is_global_zero:
            self._write(trainer, log_dir, images, specs, {**scores, **{f"oracle_{k}": v for k, v in oracle.items()}},
                        restated)

    def _use_oracle_lists(self, trainer: L.Trainer, pipeline) -> bool:
        if self.oracle_lists is not None:
            return self.oracle_lists
        return pipeline.text_rewriter is not None and getattr(trainer.datamodule, "train_text", None) == "scene_list"

    def _oracle_scores(self, pipeline, specs) -> dict[str, float]:
        """The same scenes and seeds drawn from their scene lists with no rewriter, scored."""
        from paradiffusion.parashapes.describe import scene_list

        rewriter, pipeline.text_rewriter = pipeline.text_rewriter, None
        try:
            images = sample(pipeline, [scene_list(s) for s in specs], self.settings, seed=self.seed)  # (N, 3, R, R)
        finally:
            pipeline.text_rewriter = rewriter
        return score(images, specs)

    def _text_use(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        """Shuffled/true denoising loss on the validation text style and, if different, the training one."""
        if self.text_use_n <= 0:
            return {}
        from paradiffusion.parashapes.generate import SPLIT_WRITER

        splits = {self.split: "val/text_use"}
        dm = trainer.datamodule
        train_split = getattr(dm, "train_split", None) if getattr(dm, "source", None) == "parashapes" else None
        # a second measurement only where the stage's text is written differently (stage-1 captions, stage-3 curated)
        if train_split in SPLIT_WRITER and SPLIT_WRITER[train_split] != SPLIT_WRITER.get(self.split):
            splits[train_split] = f"val/text_use_{train_split}"
        out = {}
        with torch.no_grad():  # the loaded weights are the EMA ones here (the module swaps them in for validation)
            for split, name in splits.items():
                out[name] = text_dependence(pl_module, split=split, n=self.text_use_n, seed=self.seed)["shuffled_over_true"]
        return out

    def _write(self, trainer: L.Trainer, log_dir: str, images: torch.Tensor, specs, scores: dict,
               restated: list[str] | None = None) -> None:
        grid = make_grid(images)  # (3, H', W')
        step = trainer.global_step
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image("val/samples", grid, step)
                text = "\n\n".join(f"**{i}** ({s.id}): {s.paragraph}"
                                     + (f"\n\n&rarr; *restated:* {restated[i]}" if restated else "")
                                     for i, s in enumerate(specs))
                logger.experiment.add_text("val/paragraphs", text, step)
        out = Path(log_dir) / "samples"
        out.mkdir(parents=True, exist_ok=True)
        to_pil(grid).save(out / f"step_{step:07d}.png")
        with (out / "scores.jsonl").open("a") as f:
            f.write(json.dumps({"step": step, **scores}) + "\n")


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
        _restore_ema_update(pl_module)  # a skip whose EMA update never came (partial accumulation at an epoch end)
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
        _skip_next_ema_update(pl_module)
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
        if ema is not None and hasattr(ema, "shadow"):  # the module adds the EMA after the callbacks' hook
            named += [(f"ema:{k}", v) for k, v in ema.shadow.items()]
        try:
            assert_finite(named, f"checkpoint at step {trainer.global_step}")
        except NonFiniteWeightsError as e:
            raise NonFiniteError(f"{e} (refused to write it)") from None

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        _restore_ema_update(pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        _restore_ema_update(pl_module)


def _skip_next_ema_update(pl_module: L.LightningModule) -> None:
    """Make the module's next `ema.update(...)` (in its `on_train_batch_end`, after this step) a no-op, once."""
    ema = getattr(pl_module, "ema", None)
    if ema is None or not hasattr(ema, "update"):
        return

    def skip_once(*args, **kwargs) -> None:
        ema.__dict__.pop("update", None)  # the class's update is back for the next step

    ema.update = skip_once


def _restore_ema_update(pl_module: L.LightningModule) -> None:
    ema = getattr(pl_module, "ema", None)
    if ema is not None and hasattr(ema, "__dict__"):
        ema.__dict__.pop("update", None)
