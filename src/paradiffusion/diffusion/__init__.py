"""Swappable diffusion parts: noise-schedule maths and loss (`schedule`), samplers (`sampling`), guidance."""
from paradiffusion.diffusion.guidance import classifier_free_guidance
from paradiffusion.diffusion.sampling import make_sampler
from paradiffusion.diffusion.schedule import diffusion_loss, loss_weights, snr, training_target

__all__ = ["classifier_free_guidance", "diffusion_loss", "loss_weights", "make_sampler", "snr", "training_target"]
