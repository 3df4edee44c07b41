"""Text conditioning of the denoiser: cross-attention over the paragraph states, plus (optionally) a pooled vector.

Cross-attention alone is how the paper conditions the UNet. A pooled paragraph vector added to the timestep
embedding (Imagen's pooled text embedding; SDXL's pooled CLIP embedding) reaches every ResNet block and is learnt
far sooner by a small model: it is enabled by building the UNet with `class_embed_type: projection` and
`projection_class_embeddings_input_dim` = the text width, and then fed here as the masked mean of the states.
"""
from __future__ import annotations

import torch
from diffusers import UNet2DConditionModel


def pooled_text(context: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Masked mean of text states `(B, T, D)` over the tokens with `mask (B, T)` = 1 → `(B, D)`; padding is ignored,
    so the vector does not depend on what a paragraph is batched with."""
    m = mask.to(context.dtype).unsqueeze(-1)  # (B, T, 1)
    return (context * m).sum(1) / m.sum(1).clamp_min(1.0)  # (B, D)


def uses_pooled_text(unet: UNet2DConditionModel) -> bool:
    return unet.config.class_embed_type == "projection"


def unet_forward(
    unet: UNet2DConditionModel, x_t: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """UNet output for `x_t (B, C, h, w)` at `timesteps (B,)` given text states `(B, T, D)` and mask `(B, T)`."""
    pooled = pooled_text(context, mask) if uses_pooled_text(unet) else None  # (B, D)
    return unet(x_t, timesteps, encoder_hidden_states=context, encoder_attention_mask=mask, class_labels=pooled).sample
