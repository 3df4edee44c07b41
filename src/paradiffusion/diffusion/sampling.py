"""Samplers: DPM-Solver++ (multistep, default) or DDIM, built from the training scheduler's config."""
from __future__ import annotations

from typing import Callable, Literal

import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler
from diffusers.schedulers.scheduling_utils import SchedulerMixin

SamplerName = Literal["dpm", "ddim"]


def make_sampler(name: SamplerName, train_scheduler: SchedulerMixin) -> SchedulerMixin:
    """A fresh inference scheduler sharing the training noise schedule and prediction type."""
    # Pass every training-schedule value explicitly: diffusers otherwise swaps keys listed in
    # `_use_default_values` for the *sampler's* defaults, so a reloaded config could sample differently.
    config = {k: v for k, v in train_scheduler.config.items() if k != "_use_default_values"}
    if name == "dpm":
        return DPMSolverMultistepScheduler.from_config(config, algorithm_type="dpmsolver++", solver_order=2)
    if name == "ddim":
        # eta = 0 (deterministic); clip only in pixel space, where the data range is known
        return DDIMScheduler.from_config(config)
    raise ValueError(f"sampler must be 'dpm' or 'ddim', got {name!r}")


def initial_noise(shape: tuple[int, ...], seeds: list[int], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """One generator per image, so an image depends only on its own seed (not on batch size or position)."""
    noise = [torch.randn(shape, generator=torch.Generator().manual_seed(int(s))) for s in seeds]
    return torch.stack(noise).to(device=device, dtype=dtype)  # (B, C, H, W)


@torch.no_grad()
def sample_loop(
    denoise: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    sampler: SchedulerMixin,
    x_T: torch.Tensor,
    num_inference_steps: int,
) -> torch.Tensor:
    """Run the reverse process from `x_T (B, C, H, W)`; `denoise(x_t, t)` returns the (guided) model output."""
    sampler.set_timesteps(num_inference_steps, device=x_T.device)
    x = x_T * sampler.init_noise_sigma
    for t in sampler.timesteps:
        model_input = sampler.scale_model_input(x, t)
        x = sampler.step(denoise(model_input, t), t, x).prev_sample  # (B, C, H, W)
    return x
