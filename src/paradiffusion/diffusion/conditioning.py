"""Text conditioning of the denoiser: cross-attention over the paragraph states, plus (optionally) a pooled vector.

Cross-attention alone is how the paper conditions the UNet. A pooled paragraph vector added to the timestep
embedding (Imagen's pooled text embedding; SDXL's pooled CLIP embedding) reaches every ResNet block and is learnt
far sooner by a small model: it is enabled by building the UNet with `class_embed_type: projection` and
`projection_class_embeddings_input_dim` = the text width, and then fed here as the masked mean of the states.

Where things are: the UNet's convolutions and attention carry no absolute position, so a paragraph's "in the top-left
corner" can only be tied to pixels through border effects. A UNet built with two more input channels than the
image has (`in_channels` = image channels + 2) gets the pixel coordinates as those channels (CoordConv, Liu et al.
2018): x and y in [-1, 1]. The choice lives in the UNet's own config, so exported pipelines sample the same way.
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


def coordinate_channels(x: torch.Tensor) -> torch.Tensor:
    """(B, 2, h, w) maps of the pixel-centre coordinates x, y in [-1, 1] (y grows downwards), like `x`'s dtype."""
    b, _, h, w = x.shape
    ys = torch.linspace(-1 + 1 / h, 1 - 1 / h, h, device=x.device, dtype=x.dtype)
    xs = torch.linspace(-1 + 1 / w, 1 - 1 / w, w, device=x.device, dtype=x.dtype)
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"))  # (2, h, w): x varies along w, y along h
    return grid.unsqueeze(0).expand(b, -1, -1, -1)


def unet_forward(
    unet: UNet2DConditionModel, x_t: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """UNet output for `x_t (B, C, h, w)` at `timesteps (B,)` given text states `(B, T, D)` and mask `(B, T)`."""
    pooled = pooled_text(context, mask) if uses_pooled_text(unet) else None  # (B, D)
    extra = unet.config.in_channels - x_t.shape[1]
    if extra == 2:  # the UNet reads where each pixel is (see the module docstring)
        x_t = torch.cat([x_t, coordinate_channels(x_t)], dim=1)  # (B, C + 2, h, w)
    elif extra != 0:
        raise ValueError(f"the UNet takes {unet.config.in_channels} input channels and the image has {x_t.shape[1]}: "
                         "in_channels must equal the image channels (or image channels + 2 for coordinates)")
    return unet(x_t, timesteps, encoder_hidden_states=context, encoder_attention_mask=mask, class_labels=pooled).sample
