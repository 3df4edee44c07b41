"""The weights a checkpoint carries besides the raw ones, and what a stage takes from it: the exponential moving average
of the trainable weights (`EMA`) and the callback that keeps it during a run (`EMAWeights`); `load_init_from` (a
previous stage's weights, its EMA ones by default) and `prune_frozen` (checkpoints without the frozen weights).

A module that has an EMA holds it as ``module.ema`` (``ParaDiffusion`` builds it in ``configure_model``, after any
``init_from`` weights are in, and brings an `EMAWeights` along from ``configure_callbacks``). The shadow copy lives in
a plain dict, so the module's ``state_dict`` stays the raw weights; checkpoints carry the average as
``checkpoint["ema"] = {"decay", "num_updates", "shadow"}``, which resume continues and ``init_from`` / export read.

Why not Lightning's ``EMAWeightAveraging``: it deep-copies the whole module (the frozen LLM and VAE included), averages
in the weights' own dtype without a warm-up, swaps only for validation, puts the average into ``state_dict`` (and the
raw weights under another key), restores its state only when fitting, and writes the average over the raw weights
when training ends.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info
from torch import nn


class EMA:
    """EMA with the usual warm-up: decay_t = min(decay, (1 + t) / (10 + t)), so short runs are not dominated
    by the random init. `swap_in` / `swap_out` exchange the weights with the average and back (bit for bit)."""

    def __init__(self, named_params: dict[str, nn.Parameter], decay: float = 0.999, warmup: bool = True) -> None:
        self.decay = decay
        self.warmup = warmup
        self.num_updates = 0
        self.shadow: dict[str, torch.Tensor] = {k: p.detach().clone().float() for k, p in named_params.items()}
        self.raw: dict[str, torch.Tensor] | None = None  # the raw weights while the average is swapped in
        self.skip_next_update = False  # set by `callbacks.NonFiniteGuard` for a step it dropped

    @property
    def active(self) -> bool:
        """Whether the weights currently hold the average (`swap_in` without `swap_out` yet)."""
        return self.raw is not None

    def current_decay(self) -> float:
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))

    @torch.no_grad()
    def update(self, named_params: dict[str, nn.Parameter]) -> None:
        if self.skip_next_update:  # the step changed no weight: it does not count
            self.skip_next_update = False
            return
        d = self.current_decay()
        self.num_updates += 1
        for k, p in named_params.items():
            s = self.shadow[k]
            if s.device != p.device:
                s = self.shadow[k] = s.to(p.device)
            s.lerp_(p.detach().float(), 1 - d)  # s ← d s + (1 - d) p

    @torch.no_grad()
    def copy_to(self, named_params: dict[str, nn.Parameter], raw: bool = False) -> None:
        """Load the average (or, with `raw`, the raw weights kept while the average is swapped in) into the weights."""
        source = self.raw if raw else self.shadow
        for k, p in named_params.items():
            p.copy_(source[k].to(device=p.device, dtype=p.dtype))

    def swap_in(self, named_params: dict[str, nn.Parameter]) -> None:
        """Load the average into the weights, keeping the raw weights (no-op when already swapped in)."""
        if self.active:
            return
        self.raw = {k: p.detach().clone() for k, p in named_params.items()}
        self.copy_to(named_params)

    @torch.no_grad()
    def swap_out(self, named_params: dict[str, nn.Parameter]) -> None:
        """Put the raw weights back (no-op when the average is not swapped in)."""
        if not self.active:
            return
        for k, p in named_params.items():
            p.copy_(self.raw[k])
        self.raw = None

    @contextmanager
    def swapped_in(self, named_params: dict[str, nn.Parameter]) -> Iterator[None]:
        """Temporarily load the EMA weights; the raw weights are restored on exit."""
        was_active = self.active
        self.swap_in(named_params)
        try:
            yield
        finally:
            if not was_active:
                self.swap_out(named_params)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "num_updates": self.num_updates,
                "shadow": {k: v.detach().cpu() for k, v in self.shadow.items()}}

    def load_state_dict(self, state: dict) -> None:
        missing = set(self.shadow) - set(state["shadow"])
        if missing:
            raise KeyError(f"EMA state lacks {len(missing)} weights, e.g. {sorted(missing)[:3]}")
        self.num_updates = int(state["num_updates"])
        for k in self.shadow:
            self.shadow[k] = state["shadow"][k].float().to(self.shadow[k].device)


class EMAWeights(Callback):
    """Keeps ``pl_module.ema`` (an :class:`EMA` of ``pl_module.trainable_named_parameters()``, or ``None``):

    * updates it once per optimizer step (not per micro-batch under gradient accumulation);
    * swaps the average in for validation and test (losses, samples and the callbacks that score them see the EMA
      weights) and the raw weights back afterwards;
    * saves it as ``checkpoint["ema"]`` (never the average as the raw weights) and restores it from there, so a
      resumed run continues the average. :meth:`restore` does the same for a module loaded outside the Trainer.
    """

    @staticmethod
    def _ema(pl_module: L.LightningModule) -> EMA | None:
        return getattr(pl_module, "ema", None)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        ema = self._ema(pl_module)
        if ema is not None and (batch_idx + 1) % trainer.accumulate_grad_batches == 0:
            ema.update(pl_module.trainable_named_parameters())

    def _swap_in(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._ema(pl_module) is not None:
            self._ema(pl_module).swap_in(pl_module.trainable_named_parameters())

    def _swap_out(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._ema(pl_module) is not None:
            self._ema(pl_module).swap_out(pl_module.trainable_named_parameters())

    on_validation_epoch_start = on_test_epoch_start = _swap_in
    on_validation_epoch_end = on_test_epoch_end = _swap_out

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        ema = self._ema(pl_module)
        if ema is None:
            return
        if ema.active:  # saved while the average is in: the raw weights are the state_dict's
            state = checkpoint["state_dict"]
            state.update({k: v.clone() for k, v in ema.raw.items() if k in state})
        checkpoint["ema"] = ema.state_dict()

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        self.restore(pl_module, checkpoint)

    @staticmethod
    def restore(pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        """Load ``checkpoint["ema"]`` into the module's EMA, where both exist."""
        ema = getattr(pl_module, "ema", None)
        if ema is not None and "ema" in checkpoint:
            ema.load_state_dict(checkpoint["ema"])


# ====================================================================================== stage chaining
def load_init_from(module: nn.Module, path: str, use_ema: bool = True) -> None:
    """A previous stage's checkpoint into `module` (weights only: no optimizer state, no step counter), its EMA weights
    in place of the raw ones when `use_ema` and the checkpoint has them. Refused: a missing/corrupt file, NaN/Inf,
    a shape mismatch, a missing trainable weight other than a LoRA adapter, connector or embedding skip new in this
    stage (those start as the identity)."""
    from paradiffusion.checks import load_checkpoint

    # weights_only; a missing/corrupt file or NaN/Inf weights are refused, naming the tensor
    ckpt = load_checkpoint(path, "init_from", need_state_dict=False, mmap=False)
    state = ckpt.get("state_dict", ckpt)
    own = module.state_dict()
    trainable = {n for n, p in module.named_parameters() if p.requires_grad}
    missing = sorted(trainable - set(state))
    # A stage may add LoRA adapters the previous stage did not have (stage 1 trains against a frozen LLM), a
    # connector, an embedding skip or a sentence-context head. All start as the identity (PEFT's B = 0;
    # zero-initialised output layers), so a fresh one leaves the model exactly as loaded: starting it from scratch
    # is the intended behaviour. Any other missing trainable weight means a different model: refuse.
    new_heads = ("text_encoder.connector.", "text_encoder.embedding_skip.", "text_encoder.sentence_context.")
    fresh = [n for n in missing if "lora_" in n or n.startswith(new_heads)]
    missing = [n for n in missing if n not in fresh]
    if missing:
        raise KeyError(f"init_from={path}: checkpoint lacks {len(missing)} trainable weights, e.g. {missing[:3]}")
    if fresh:
        rank_zero_info(f"init_from={path}: {len(fresh)} LoRA/connector/skip weights are new in this stage "
                       f"(start as identity)")
    bad = [k for k in state if k in own and own[k].shape != state[k].shape]
    if bad:
        raise ValueError(f"init_from={path}: shape mismatch for {bad[:3]} (different model config?)")
    module.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
    if use_ema and "ema" in ckpt:
        with torch.no_grad():
            for n, p in module.named_parameters():
                if p.requires_grad and n in ckpt["ema"]["shadow"]:
                    p.copy_(ckpt["ema"]["shadow"][n])


def prune_frozen(module: nn.Module, checkpoint: dict[str, Any]) -> None:
    """Drop the frozen weights (base LLM, VAE) from `checkpoint["state_dict"]`: they are reloaded from their
    directories (`checkpoint_frozen: false`, e.g. for a 7B LLM)."""
    trainable = {n for n, p in module.named_parameters() if p.requires_grad}
    frozen = {n for n, p in module.named_parameters() if not p.requires_grad}
    for k in list(checkpoint["state_dict"]):
        if k in frozen and k not in trainable:
            del checkpoint["state_dict"][k]
