"""Frozen `AutoencoderKL` for latent-space training (e.g. `sdxl-vae-fp16-fix`)."""
from __future__ import annotations

import torch
from diffusers import AutoencoderKL

from paradiffusion.models.loading import Dtype, load_diffusers_dir


def load_vae(
    path: str, subfolder: str | None = None, dtype: Dtype = "float32"
) -> AutoencoderKL:
    """Load a diffusers `AutoencoderKL` directory, offline; the module freezes it.

    YAML: `vae: {class_path: paradiffusion.models.vae.load_vae, init_args: {path: .../sdxl-vae-fp16-fix}}`.
    """
    return load_diffusers_dir(AutoencoderKL, path, subfolder, dtype, "load_vae")


def latent_scale(vae: AutoencoderKL) -> tuple[float, float]:
    """(scaling_factor, shift_factor) so that latents = (z - shift) * scale have ~unit variance."""
    return float(vae.config.scaling_factor), float(getattr(vae.config, "shift_factor", None) or 0.0)


@torch.no_grad()
def encode_images(vae: AutoencoderKL, pixels: torch.Tensor) -> torch.Tensor:
    """`pixels (B, 3, H, W)` in [-1, 1] → scaled latents `(B, C, H/f, W/f)` (posterior mean: deterministic)."""
    scale, shift = latent_scale(vae)
    z = vae.encode(pixels.to(vae.dtype)).latent_dist.mode()
    return ((z - shift) * scale).float()


@torch.no_grad()
def decode_latents(vae: AutoencoderKL, latents: torch.Tensor) -> torch.Tensor:
    """Scaled latents → pixels `(B, 3, H, W)` in [-1, 1]."""
    scale, shift = latent_scale(vae)
    return vae.decode((latents / scale + shift).to(vae.dtype)).sample.float()
