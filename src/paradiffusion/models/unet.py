"""UNet denoiser: loaded from a diffusers directory, or built from config (use the class path
`diffusers.UNet2DConditionModel` with `init_args` in YAML for that)."""
from __future__ import annotations

import torch
from diffusers import UNet2DConditionModel

from paradiffusion.models.loading import Dtype, load_diffusers_dir


def load_unet(
    path: str, subfolder: str | None = None, dtype: Dtype = "float32"
) -> UNet2DConditionModel:
    """Load a `UNet2DConditionModel` from a diffusers directory (e.g. `<release>/unet`), offline.

    YAML: `unet: {class_path: paradiffusion.models.unet.load_unet, init_args: {path: ...}}`.
    """
    return load_diffusers_dir(UNet2DConditionModel, path, subfolder, dtype, "load_unet")


def count_parameters(module: torch.nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def build_unet(
    sample_size: int,
    in_channels: int,
    out_channels: int,
    block_out_channels: list[int],
    down_block_types: list[str],
    up_block_types: list[str],
    cross_attention_dim: int,
    layers_per_block: int = 2,
    transformer_layers_per_block: int | list[int] = 1,
    attention_head_dim: int | list[int] = 8,
    use_linear_projection: bool = False,
    norm_num_groups: int = 32,
) -> UNet2DConditionModel:
    """Build a random-init UNet from per-block lists.

    Exists because diffusers annotates per-block arguments as `tuple[int]` (one element), which a typed
    config parser rejects for lists; the class path `diffusers.UNet2DConditionModel` works for scalar settings.
    """
    return UNet2DConditionModel(
        sample_size=sample_size, in_channels=in_channels, out_channels=out_channels,
        block_out_channels=tuple(block_out_channels), down_block_types=tuple(down_block_types),
        up_block_types=tuple(up_block_types), cross_attention_dim=cross_attention_dim,
        layers_per_block=layers_per_block,
        transformer_layers_per_block=transformer_layers_per_block if isinstance(transformer_layers_per_block, int)
        else tuple(transformer_layers_per_block),
        attention_head_dim=attention_head_dim if isinstance(attention_head_dim, int) else tuple(attention_head_dim),
        use_linear_projection=use_linear_projection, norm_num_groups=norm_num_groups,
    )
