"""`ParaDiffusion`: the LightningModule that trains a UNet jointly with a LoRA-adapted LLM text encoder: the objective
(`diffusion_step`) and its optimizers. The EMA, the validation RNG fence and the training logs are callbacks it brings
to every run (`configure_callbacks`). Parts are injected (LightningCLI); see `experiments/model/*.yaml`."""
from __future__ import annotations

import copy
import math
from typing import Any, Literal

import lightning as L
import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from torch import Tensor, nn

from paradiffusion.callbacks import TrainingLogs, ValidationRNGFence
from paradiffusion.diffusion.conditioning import unet_forward
from paradiffusion.diffusion.schedule import diffusion_loss, loss_weights, training_target
from paradiffusion.ema import EMA, EMAWeights, load_init_from, prune_frozen
from paradiffusion.models.text_encoder import LLMTextEncoder
from paradiffusion.models.vae import encode_images
from paradiffusion.pipeline import ParaDiffusionPipeline, drop_captions, encode_text


class ParaDiffusion(L.LightningModule):
    """Paragraph-to-image latent/pixel diffusion with an LLM text encoder.

    Args:
        text_encoder: the (LoRA-adapted) LLM.
        unet: the denoiser; `cross_attention_dim` must equal `text_encoder.out_dim`.
        noise_scheduler: the training noise schedule (`prediction_type` epsilon or v_prediction).
        vae: frozen AutoencoderKL for latent diffusion; `None` = pixel space.
        unet_lr, lora_lr, weight_decay, betas: AdamW settings; UNet (+ projection) and LLM (LoRA) learning rates.
        warmup_steps: linear learning-rate warm-up.
        lr_schedule: `constant` after warm-up, or `cosine` decay to 0 at the end of training.
        caption_dropout: probability of replacing a paragraph with the empty paragraph (enables CFG).
        min_snr_gamma, snr_floor: Min-SNR-γ loss weighting (`None`: uniform), its lower clip (`schedule.loss_weights`).
        ema_decay: EMA decay of all trainable weights (kept by `ema.EMAWeights`); `None` disables EMA.
        unet_gradient_checkpointing: recompute UNet activations in backward.
        init_from: previous stage's Lightning checkpoint (weights only; fresh optimizer and step counter).
        init_from_ema: take the EMA weights of `init_from` when it has them.
        checkpoint_frozen: keep frozen weights (base LLM, VAE) in checkpoints; set False for 7B so a checkpoint
            holds only the trainable weights (they are reloaded from their directories).
        sample_steps, guidance_scale, sampler, sample_seed: sampling settings of `test_step`.
    """

    def __init__(
        self,
        text_encoder: LLMTextEncoder,
        unet: UNet2DConditionModel,
        noise_scheduler: DDPMScheduler,
        vae: AutoencoderKL | None = None,
        unet_lr: float = 1e-4,
        lora_lr: float = 5e-6,
        weight_decay: float = 1e-2,
        betas: tuple[float, float] = (0.9, 0.999),
        warmup_steps: int = 500,
        lr_schedule: Literal["constant", "cosine"] = "constant",
        caption_dropout: float = 0.1,
        min_snr_gamma: float | None = 5.0,
        snr_floor: float = 0.0,
        ema_decay: float | None = 0.999,
        unet_gradient_checkpointing: bool = False,
        init_from: str | None = None,
        init_from_ema: bool = True,
        checkpoint_frozen: bool = True,
        sample_steps: int = 20,
        guidance_scale: float = 4.0,
        sampler: Literal["dpm", "ddim"] = "dpm",
        sample_seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["text_encoder", "unet", "noise_scheduler", "vae"])
        self.text_encoder, self.unet, self.noise_scheduler, self.vae = text_encoder, unet, noise_scheduler, vae
        self.ema: EMA | None = None  # built by `configure_model`; kept by the `EMAWeights` callback
        self._configured = self._skip_init_from = False
        if not checkpoint_frozen:
            self.strict_loading = False  # frozen weights come from their directories, not the checkpoint

    def configure_model(self) -> None:
        """Build large parts here (inside DeepSpeed ZeRO-3's init context when that strategy is used). Idempotent:
        Lightning calls it for every fit/validate/test; `make_pipeline` calls it too."""
        if self._configured:
            return
        self.text_encoder.materialize()
        if self.vae is not None:
            self.vae.requires_grad_(False).eval()
        if self.hparams.unet_gradient_checkpointing:
            self.unet.enable_gradient_checkpointing()
        if self.unet.config.cross_attention_dim != self.text_encoder.out_dim:
            raise ValueError(f"unet.cross_attention_dim={self.unet.config.cross_attention_dim} != "
                             f"text_encoder.out_dim={self.text_encoder.out_dim}; set text_encoder out_dim")
        resuming = self._trainer is not None and self.trainer.ckpt_path is not None
        if self.hparams.init_from and not (resuming or self._skip_init_from):
            load_init_from(self, self.hparams.init_from, use_ema=self.hparams.init_from_ema)
        if self.hparams.ema_decay is not None:
            self.ema = EMA(self.trainable_named_parameters(), decay=self.hparams.ema_decay)
        self._configured = True

    def configure_callbacks(self) -> list[L.Callback]:
        return [ValidationRNGFence(), EMAWeights(), TrainingLogs()]

    def trainable_named_parameters(self, root: nn.Module | None = None) -> dict[str, nn.Parameter]:
        """Trainable weights by name (UNet, LoRA, projection). With `root`, the same names inside a copy."""
        params = dict((root or self).named_parameters())
        return {n: params[n] for n, p in self.named_parameters() if p.requires_grad}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if not self.hparams.checkpoint_frozen:
            prune_frozen(self, checkpoint)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._skip_init_from = True  # restoring a checkpoint: its weights win over init_from
        self.configure_model()

    def forward(self, x_t: Tensor, timesteps: Tensor, context: Tensor, context_mask: Tensor) -> Tensor:
        """Denoiser output for `x_t (B, C, h, w)` given text states `(B, T, D)` and mask `(B, T)`."""
        return unet_forward(self.unet, x_t, timesteps, context, context_mask)

    def to_diffusion_space(self, pixel_values: Tensor) -> Tensor:
        """Images in [-1, 1] → what the UNet denoises: scaled VAE latents, or the pixels themselves."""
        return encode_images(self.vae, pixel_values) if self.vae is not None else pixel_values

    def diffusion_step(self, batch: dict[str, Any], caption_dropout: float,
                       generator: torch.Generator | None = None) -> Tensor:
        """The ParaDiffusion objective on one batch → the scalar loss; `generator` fixes the noise and timesteps."""
        # 1. Encode the paragraphs (caption dropout first swaps some for the empty one, CFG's unconditional input).
        if "input_ids" not in batch:  # a text-only batch: tokenise here
            batch.update({k: v.to(self.device) for k, v in self.text_encoder.tokenize(batch["text"]).items()})
        input_ids, attention_mask, prefix_states = drop_captions(  # (B, T), (B, T), (B, T, H) | None
            self.text_encoder, batch["input_ids"], batch["attention_mask"], caption_dropout, batch.get("prefix_states"))
        context, context_mask = encode_text(self.text_encoder, input_ids, attention_mask, prefix_states)  # (B, T, D)
        # 2. Sample Gaussian noise and a timestep per image (uniform over the schedule) in the diffusion space.
        x0 = self.to_diffusion_space(batch["pixel_values"])  # (B, C, h, w): frozen VAE latents, or the pixels
        noise = torch.randn(x0.shape, generator=generator).to(x0) if generator else torch.randn_like(x0)  # (B, C, h, w)
        num_t = self.noise_scheduler.config.num_train_timesteps
        t = torch.randint(0, num_t, (x0.shape[0],), generator=generator).to(x0.device)  # (B,)
        # 3. Add noise (forward process): x_t = sqrt(ᾱ_t) x_0 + sqrt(1 - ᾱ_t) ε.
        x_t = self.noise_scheduler.add_noise(x0, noise, t)  # (B, C, h, w)
        # 4. Predict ε (or v) from the noisy image and the paragraph states.
        prediction = self(x_t, t, context.to(x_t.dtype), context_mask)  # (B, C, h, w)
        # 5. Weighted loss: (Min-SNR-weighted) MSE against the target of the chosen parameterisation.
        target = training_target(self.noise_scheduler, x0, noise, t)  # (B, C, h, w)
        return diffusion_loss(prediction, target, loss_weights(
            self.noise_scheduler, t, self.hparams.min_snr_gamma, self.hparams.snr_floor))

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        loss = self.diffusion_step(batch, self.hparams.caption_dropout)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["pixel_values"].shape[0])
        return loss  # `callbacks.TrainingLogs` logs the learning rates and the truncated paragraphs

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        # Fixed noise/timesteps per batch so val/loss is comparable across epochs; no caption dropout.
        loss = self.diffusion_step(batch, 0.0, generator=torch.Generator().manual_seed(batch_idx))
        self.log("val/loss", loss, prog_bar=True, batch_size=batch["pixel_values"].shape[0], sync_dist=True)
        return loss

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Tensor]:
        loss = self.diffusion_step(batch, 0.0, generator=torch.Generator().manual_seed(batch_idx))
        bs = batch["pixel_values"].shape[0]
        self.log("test/loss", loss, batch_size=bs, sync_dist=True)
        first = self.hparams.sample_seed + (batch_idx * bs) + self.global_rank * 1_000_003
        hp = self.hparams
        images = self.make_pipeline()(batch["text"], num_inference_steps=hp.sample_steps, seed=first, batch_size=bs,
                                      guidance_scale=hp.guidance_scale, sampler=hp.sampler)  # (B, 3, H, W) in [0, 1]
        return {"images": images, "loss": loss}  # for a benchmark's callback to judge (e.g. ParaShapes' `TestScore`)

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        lora = self.text_encoder.lora_parameters()
        lora_ids = {id(p) for p in lora}
        dense = [p for p in self.parameters() if p.requires_grad and id(p) not in lora_ids]  # UNet + projection
        groups = [g for g in ({"params": dense, "lr": hp.unet_lr, "name": "unet"},
                              {"params": lora, "lr": hp.lora_lr, "name": "lora"}) if g["params"]]
        optimizer = torch.optim.AdamW(groups, weight_decay=hp.weight_decay, betas=tuple(hp.betas))
        total = max(1, int(self.trainer.estimated_stepping_batches)) if hp.lr_schedule == "cosine" else None

        def factor(step: int) -> float:  # linear warm-up, then constant or cosine decay to 0
            warm = min(1.0, (step + 1) / max(1, hp.warmup_steps))
            if total is None:
                return warm
            progress = min(1.0, max(0, step - hp.warmup_steps) / max(1, total - hp.warmup_steps))
            return warm * 0.5 * (1 + math.cos(math.pi * progress))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def make_pipeline(self, use_ema: bool = True) -> ParaDiffusionPipeline:
        """A Lightning-free sampling pipeline with the EMA weights (`use_ema`, where there is an EMA) or the raw ones.
        It shares the module's parts where they hold those weights already, otherwise it holds copies."""
        self.configure_model()
        parts = nn.ModuleDict({"text_encoder": self.text_encoder, "unet": self.unet})
        if self.ema is not None and use_ema != self.ema.active:  # the parts hold the other weights: copy them
            parts = copy.deepcopy(parts)
            self.ema.copy_to(self.trainable_named_parameters(root=parts), raw=not use_ema)
        return ParaDiffusionPipeline(parts["text_encoder"], parts["unet"], self.noise_scheduler, self.vae)

    def load_ema_weights(self) -> None:
        """Overwrite the trainable weights with their EMA, for good (analysing a finished run; no-op without EMA)."""
        if self.ema is not None:
            self.ema.copy_to(self.trainable_named_parameters())
