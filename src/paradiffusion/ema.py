"""Exponential moving average of the trainable weights, kept outside the module's state_dict.

The shadow copy lives in a plain dict so the LightningModule's `state_dict` stays the raw weights; the module
saves/restores the EMA under `checkpoint["ema"]` so resume continues the average.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn


class EMA:
    """EMA with the usual warm-up: decay_t = min(decay, (1 + t) / (10 + t)), so short runs are not dominated
    by the random init."""

    def __init__(self, named_params: dict[str, nn.Parameter], decay: float = 0.999, warmup: bool = True) -> None:
        self.decay = decay
        self.warmup = warmup
        self.num_updates = 0
        self.shadow: dict[str, torch.Tensor] = {k: p.detach().clone().float() for k, p in named_params.items()}
        self._backup: dict[str, torch.Tensor] | None = None

    def current_decay(self) -> float:
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))

    @torch.no_grad()
    def update(self, named_params: dict[str, nn.Parameter]) -> None:
        d = self.current_decay()
        self.num_updates += 1
        for k, p in named_params.items():
            s = self.shadow[k]
            if s.device != p.device:
                s = self.shadow[k] = s.to(p.device)
            s.lerp_(p.detach().float(), 1 - d)  # s ← d s + (1 - d) p

    @torch.no_grad()
    def copy_to(self, named_params: dict[str, nn.Parameter]) -> None:
        for k, p in named_params.items():
            p.copy_(self.shadow[k].to(device=p.device, dtype=p.dtype))

    @contextmanager
    def swapped_in(self, named_params: dict[str, nn.Parameter]) -> Iterator[None]:
        """Temporarily load the EMA weights; the raw weights are restored on exit."""
        backup = {k: p.detach().clone() for k, p in named_params.items()}
        self.copy_to(named_params)
        try:
            yield
        finally:
            with torch.no_grad():
                for k, p in named_params.items():
                    p.copy_(backup[k])

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
