"""Noise-schedule quantities and the training loss, on top of a diffusers `DDPMScheduler`.

Forward process: x_t = α_t x_0 + σ_t ε with α_t = sqrt(ᾱ_t), σ_t = sqrt(1 - ᾱ_t); SNR(t) = α_t² / σ_t².
Prediction targets: ε (`epsilon`), v = α_t ε - σ_t x_0 (`v_prediction`), x_0 (`sample`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler


def _coeffs(scheduler: DDPMScheduler, timesteps: torch.Tensor, ndim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """α_t, σ_t as float32 broadcastable to an `ndim` tensor."""
    abar = scheduler.alphas_cumprod.to(device=timesteps.device, dtype=torch.float32)[timesteps]  # (B,)
    shape = (-1,) + (1,) * (ndim - 1)
    return abar.sqrt().view(shape), (1 - abar).sqrt().view(shape)


def snr(scheduler: DDPMScheduler, timesteps: torch.Tensor) -> torch.Tensor:
    """Signal-to-noise ratio ᾱ_t / (1 - ᾱ_t), shape (B,)."""
    abar = scheduler.alphas_cumprod.to(device=timesteps.device, dtype=torch.float32)[timesteps]
    return abar / (1 - abar).clamp_min(1e-20)


def training_target(
    scheduler: DDPMScheduler, x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
) -> torch.Tensor:
    """What the denoiser is trained to output, per `scheduler.config.prediction_type`."""
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        alpha, sigma = _coeffs(scheduler, timesteps, x0.ndim)
        return alpha * noise - sigma * x0
    if kind == "sample":
        return x0
    raise ValueError(f"unsupported prediction_type {kind!r}")


def predict_x0_eps(
    scheduler: DDPMScheduler, model_output: torch.Tensor, x_t: torch.Tensor, timesteps: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Recover (x̂_0, ε̂) from a model output of any prediction type (used by tests and diagnostics)."""
    alpha, sigma = _coeffs(scheduler, timesteps, x_t.ndim)
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        eps = model_output
        return (x_t - sigma * eps) / alpha, eps
    if kind == "v_prediction":
        # since α² + σ² = 1: x_0 = α x_t - σ v, ε = σ x_t + α v
        return alpha * x_t - sigma * model_output, sigma * x_t + alpha * model_output
    if kind == "sample":
        return model_output, (x_t - alpha * model_output) / sigma
    raise ValueError(f"unsupported prediction_type {kind!r}")


def loss_weights(
    scheduler: DDPMScheduler, timesteps: torch.Tensor, min_snr_gamma: float | None, snr_floor: float = 0.0
) -> torch.Tensor:
    """Per-sample loss weights, shape (B,). Min-SNR-γ (Hang et al. 2023) rescaled to the prediction type:

    ε-loss: clip(SNR) / SNR;  v-loss: clip(SNR) / (SNR + 1);  x_0-loss: clip(SNR), with clip(SNR) = clamp(SNR, floor, γ).
    `min_snr_gamma=None` → uniform weights (the plain objective of the chosen parameterisation).

    Why a floor: in x_0 terms Min-SNR weights a step by min(SNR, γ), so the high-noise steps (SNR → 0), where the
    text decides colour and layout, get almost no gradient (v-loss weight 0.02 at t=900 of a cosine schedule).
    `snr_floor` lifts them to at least floor / (SNR + 1) of the v-loss; 0 is plain Min-SNR.
    """
    if min_snr_gamma is None:
        return torch.ones(timesteps.shape, device=timesteps.device)
    if not 0.0 <= snr_floor <= min_snr_gamma:
        raise ValueError(f"snr_floor must lie in [0, min_snr_gamma={min_snr_gamma}], got {snr_floor}")
    s = snr(scheduler, timesteps)
    clipped = s.clamp(min=snr_floor, max=min_snr_gamma)
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return clipped / s.clamp_min(1e-20)
    if kind == "v_prediction":
        return clipped / (s + 1)
    return clipped


def diffusion_loss(prediction: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted MSE: mean over pixels per sample, then weighted mean over the batch."""
    per_sample = F.mse_loss(prediction.float(), target.float(), reduction="none").flatten(1).mean(1)  # (B,)
    return (weights * per_sample).mean()
