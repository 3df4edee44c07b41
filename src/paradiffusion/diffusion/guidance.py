"""Classifier-free guidance (Ho & Salimans 2022)."""
from __future__ import annotations

import torch


def classifier_free_guidance(uncond: torch.Tensor, cond: torch.Tensor, scale: float) -> torch.Tensor:
    """ε̃ = ε_u + s (ε_c - ε_u). Scale 1 returns the conditional prediction exactly (no arithmetic)."""
    if scale == 1.0:
        return cond
    return uncond + scale * (cond - uncond)


def pad_context(
    hidden: torch.Tensor, mask: torch.Tensor, length: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad text states `(B, T, D)` and mask `(B, T)` to `length` tokens (masked), to batch cond + uncond."""
    extra = length - hidden.shape[1]
    if extra <= 0:
        return hidden, mask
    hidden = torch.cat([hidden, hidden.new_zeros(hidden.shape[0], extra, hidden.shape[2])], dim=1)  # (B, L, D)
    mask = torch.cat([mask, mask.new_zeros(mask.shape[0], extra)], dim=1)  # (B, L)
    return hidden, mask
