"""`ParaDiffusion`: the LightningModule that trains a UNet jointly with a LoRA-adapted LLM text encoder.

Parts are injected (LightningCLI dependency injection); see `experiments/model/*.yaml`.
"""
from __future__ import annotations

import contextlib
import copy
import math
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.seed import isolate_rng
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from torch import nn

from paradiffusion.diffusion.conditioning import unet_forward
from paradiffusion.diffusion.schedule import diffusion_loss, loss_weights, training_target
from paradiffusion.ema import EMA
from paradiffusion.models.text_encoder import LLMTextEncoder
from paradiffusion.models.vae import encode_images
from paradiffusion.pipeline import ParaDiffusionPipeline


class ParaDiffusion(L.LightningModule):
    """Paragraph-to-image latent/pixel diffusion with an LLM text encoder.

    Args:
        text_encoder: the (LoRA-adapted) LLM.
        unet: the denoiser; `cross_attention_dim` must equal `text_encoder.out_dim`.
        noise_scheduler: the training noise schedule (`prediction_type` epsilon or v_prediction).
        vae: frozen AutoencoderKL for latent diffusion; `None` = pixel space.
        unet_lr, lora_lr: AdamW learning rates for UNet (+ projection) and LLM (LoRA) parameters.
        weight_decay, betas: AdamW settings.
        warmup_steps: linear learning-rate warm-up.
        lr_schedule: `constant` after warm-up, or `cosine` decay to 0 at the end of training.
        caption_dropout: probability of replacing a paragraph with the empty paragraph (enables CFG).
        min_snr_gamma: Min-SNR-γ loss weighting; `None` = uniform.
        snr_floor: lower clip of the Min-SNR weight (see `diffusion.schedule.loss_weights`); 0 = plain Min-SNR.
        ema_decay: EMA decay of all trainable weights; `None` disables EMA.
        unet_gradient_checkpointing: recompute UNet activations in backward.
        init_from: previous stage's Lightning checkpoint (weights only; fresh optimizer and step counter).
        init_from_ema: take the EMA weights of `init_from` when it has them.
        checkpoint_frozen: keep frozen weights (base LLM, VAE) in checkpoints; set False for 7B so a checkpoint
            holds only the trainable weights (they are reloaded from their directories).
        sample_steps, guidance_scale, sampler, sample_seed: sampling settings for `test_step` (and the
            defaults of `make_pipeline` users).
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
        self.text_encoder = text_encoder
        self.unet = unet
        self.noise_scheduler = noise_scheduler
        self.vae = vae
        self.ema: EMA | None = None
        self._configured = False
        self._skip_init_from = False
        self._ema_active = False
        if not checkpoint_frozen:
            self.strict_loading = False  # frozen weights come from their directories, not the checkpoint

    # ================================================================== building
    def configure_model(self) -> None:
        """Build large parts here (inside DeepSpeed ZeRO-3's init context when that strategy is used).

        Idempotent: Lightning calls it for every fit/validate/test; `make_pipeline` calls it too.
        """
        if self._configured:
            return
        self.text_encoder.materialize()
        if self.vae is not None:
            self.vae.requires_grad_(False).eval()
        if self.hparams.unet_gradient_checkpointing:
            self.unet.enable_gradient_checkpointing()
        if self.unet.config.cross_attention_dim != self.text_encoder.out_dim:
            raise ValueError(
                f"unet.cross_attention_dim={self.unet.config.cross_attention_dim} != "
                f"text_encoder.out_dim={self.text_encoder.out_dim}; set text_encoder out_dim"
            )
        resuming = self._trainer is not None and self.trainer.ckpt_path is not None
        if self.hparams.init_from and not (resuming or self._skip_init_from):
            self._load_init_from(self.hparams.init_from)
        if self.hparams.ema_decay is not None:
            self.ema = EMA(self.trainable_named_parameters(), decay=self.hparams.ema_decay)
        self._configured = True

    def trainable_named_parameters(self, root: nn.Module | None = None) -> dict[str, nn.Parameter]:
        """Trainable weights by name (UNet, LoRA, projection). With `root`, the same names inside a copy."""
        names = [n for n, p in self.named_parameters() if p.requires_grad]
        params = dict((root or self).named_parameters())
        return {n: params[n] for n in names}

    def _load_init_from(self, path: str) -> None:
        from paradiffusion.checks import load_checkpoint

        # weights_only; a missing/corrupt file or NaN/Inf weights are refused, naming the tensor
        ckpt = load_checkpoint(path, "init_from", need_state_dict=False, mmap=False)
        state = ckpt.get("state_dict", ckpt)
        own = self.state_dict()
        trainable = {n for n, p in self.named_parameters() if p.requires_grad}
        missing = sorted(trainable - set(state))
        # A stage may add LoRA adapters the previous stage did not have (stage 1 trains against a frozen LLM), a
        # connector or an embedding skip. All start as the identity (PEFT's B = 0; zero-initialised output layers), so
        # a fresh one leaves the model exactly as loaded: starting it from scratch is the intended behaviour. Any
        # other missing trainable weight means a different model: refuse.
        fresh = [n for n in missing if "lora_" in n or n.startswith(("text_encoder.connector.", "text_encoder.embedding_skip."))]
        missing = [n for n in missing if n not in fresh]
        if missing:
            raise KeyError(f"init_from={path}: checkpoint lacks {len(missing)} trainable weights, e.g. {missing[:3]}")
        if fresh:
            rank_zero_info(f"init_from={path}: {len(fresh)} LoRA/connector/skip weights are new in this stage (start as identity)")
        bad = [k for k in state if k in own and own[k].shape != state[k].shape]
        if bad:
            raise ValueError(f"init_from={path}: shape mismatch for {bad[:3]} (different model config?)")
        self.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
        if self.hparams.init_from_ema and "ema" in ckpt:
            with torch.no_grad():
                for n, p in self.trainable_named_parameters().items():
                    if n in ckpt["ema"]["shadow"]:
                        p.copy_(ckpt["ema"]["shadow"][n])

    # ================================================================== training objective
    def forward(self, x_t: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor) -> torch.Tensor:
        """Denoiser output for `x_t (B, C, h, w)` given text states `(B, T, D)` and mask `(B, T)`."""
        return unet_forward(self.unet, x_t, timesteps, context, context_mask)

    def _text_inputs(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        if "input_ids" not in batch:  # a text-only batch: tokenise here
            tok = self.text_encoder.tokenize(batch["text"])
            batch.update({k: v.to(self.device) for k, v in tok.items()})
        return batch["input_ids"], batch["attention_mask"]

    def drop_captions(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, p: float,
                      prefix_states: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """With probability p per row, replace the paragraph by the empty paragraph (the CFG unconditional input);
        cached prefix states of a dropped row become the empty paragraph's states."""
        if p <= 0:
            return input_ids, attention_mask, prefix_states
        drop = torch.rand(input_ids.shape[0], device=input_ids.device) < p  # (B,)
        if not drop.any():
            return input_ids, attention_mask, prefix_states
        enc = self.text_encoder
        empty = torch.tensor(enc.tokenize([""])["input_ids"][0].tolist(), device=input_ids.device)  # (T0,)
        if input_ids.shape[1] < len(empty):  # make room (rare: T0 is usually 1, the BOS token)
            extra = len(empty) - input_ids.shape[1]
            input_ids = nn.functional.pad(input_ids, (0, extra), value=enc.tokenizer.pad_token_id)
            attention_mask = nn.functional.pad(attention_mask, (0, extra), value=0)
            if prefix_states is not None:
                prefix_states = nn.functional.pad(prefix_states, (0, 0, 0, extra))
        input_ids, attention_mask = input_ids.clone(), attention_mask.clone()
        input_ids[drop] = enc.tokenizer.pad_token_id
        input_ids[drop, : len(empty)] = empty
        attention_mask[drop] = 0
        attention_mask[drop, : len(empty)] = 1
        if prefix_states is not None:
            with torch.no_grad():
                empty_states = enc.encode_prefix(empty[None], torch.ones_like(empty)[None])[0]  # (T0, H)
            prefix_states = prefix_states.clone()
            prefix_states[drop] = 0
            prefix_states[drop, : len(empty)] = empty_states.to(prefix_states.dtype)
        return input_ids, attention_mask, prefix_states

    def to_diffusion_space(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] → what the UNet denoises: scaled VAE latents, or the pixels themselves."""
        return encode_images(self.vae, pixel_values) if self.vae is not None else pixel_values

    def diffusion_step(self, batch: dict[str, Any], caption_dropout: float, generator: torch.Generator | None = None) -> torch.Tensor:
        """The ParaDiffusion objective on one batch; returns the scalar loss."""
        # 1. Paragraph tokens, padded to the longest paragraph in the batch.
        input_ids, attention_mask = self._text_inputs(batch)  # (B, T), (B, T)
        prefix_states = batch.get("prefix_states")  # (B, T, H): the frozen LLM blocks' output, from a text cache
        # 2. Caption dropout: some paragraphs become the empty paragraph, so the model also learns p(x) for CFG.
        input_ids, attention_mask, prefix_states = self.drop_captions(
            input_ids, attention_mask, caption_dropout, prefix_states)
        # 3. Encode the paragraphs with the LoRA-adapted LLM; padding stays masked all the way into the UNet.
        context, context_mask = self.text_encoder(input_ids, attention_mask, prefix_states)  # (B, T, D), (B, T)
        # 4. Images into the diffusion space (frozen VAE latents × scaling_factor, or pixels).
        x0 = self.to_diffusion_space(batch["pixel_values"])  # (B, C, h, w)
        # 5. Sample Gaussian noise and a timestep per image, uniformly over the training schedule.
        noise = torch.randn(x0.shape, generator=generator).to(x0) if generator else torch.randn_like(x0)  # (B, C, h, w)
        num_t = self.noise_scheduler.config.num_train_timesteps
        t = (torch.randint(0, num_t, (x0.shape[0],), generator=generator) if generator
             else torch.randint(0, num_t, (x0.shape[0],))).to(x0.device)  # (B,)
        # 6. Forward process: x_t = sqrt(ᾱ_t) x_0 + sqrt(1 - ᾱ_t) ε.
        x_t = self.noise_scheduler.add_noise(x0, noise, t)  # (B, C, h, w)
        # 7. Predict ε (or v) from the noisy image and the paragraph states.
        prediction = self(x_t, t, context.to(x_t.dtype), context_mask)  # (B, C, h, w)
        # 8. (Min-SNR-weighted) MSE against the target of the chosen parameterisation.
        target = training_target(self.noise_scheduler, x0, noise, t)  # (B, C, h, w)
        return diffusion_loss(prediction, target, loss_weights(
            self.noise_scheduler, t, self.hparams.min_snr_gamma, self.hparams.snr_floor))

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss = self.diffusion_step(batch, self.hparams.caption_dropout)
        bs = batch["pixel_values"].shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        self._log_truncation(batch, bs)
        for group in self.trainer.optimizers[0].param_groups:
            self.log(f"train/lr_{group.get('name', 'group')}", group["lr"], batch_size=bs)
        return loss

    def _log_truncation(self, batch: dict[str, Any], bs: int) -> None:
        """Log how many paragraphs were cut at `max_length` (summed over the epoch): never silent."""
        if "num_truncated" in batch:  # suite collate: a per-batch count
            count = torch.as_tensor(batch["num_truncated"]).float().sum()
        elif "truncated" in batch:  # LLMTextEncoder.tokenize: a per-row flag
            count = torch.as_tensor(batch["truncated"]).float().sum()
        else:  # no flag: a row at the cap was (probably) truncated
            count = (batch["attention_mask"].sum(1) >= self.text_encoder.max_length).float().sum()
        self.log("train/truncated", count, reduce_fx="sum", on_step=False, on_epoch=True, batch_size=bs)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        # Fixed noise/timesteps per batch so val/loss is comparable across epochs; no caption dropout.
        loss = self.diffusion_step(batch, 0.0, generator=torch.Generator().manual_seed(batch_idx))
        self.log("val/loss", loss, prog_bar=True, batch_size=batch["pixel_values"].shape[0], sync_dist=True)
        return loss

    # ================================================================== test: sample (callbacks score the images)
    def on_test_epoch_start(self) -> None:
        self._swap_ema_in()  # test samples come from the EMA weights

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, torch.Tensor]:
        loss = self.diffusion_step(batch, 0.0, generator=torch.Generator().manual_seed(batch_idx))
        bs = batch["pixel_values"].shape[0]
        self.log("test/loss", loss, batch_size=bs, sync_dist=True)
        first = self.hparams.sample_seed + (batch_idx * bs) + self.global_rank * 1_000_003
        images = self.make_pipeline()(
            batch["text"], num_inference_steps=self.hparams.sample_steps, guidance_scale=self.hparams.guidance_scale,
            seed=first, sampler=self.hparams.sampler, batch_size=bs,
        )  # (B, 3, H, W) in [0, 1]
        # what a benchmark's callback judges (`on_test_batch_end(..., outputs, batch, ...)`, e.g. ParaShapes'
        # `TestScore`, listed in experiments/base.yaml)
        return {"images": images, "loss": loss}

    def on_test_epoch_end(self) -> None:
        self._swap_ema_out()

    # ================================================================== EMA
    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # Once per optimizer step (not per micro-batch under gradient accumulation).
        if self.ema is not None and (batch_idx + 1) % self.trainer.accumulate_grad_batches == 0:
            self.ema.update(self.trainable_named_parameters())

    def load_ema_weights(self) -> None:
        """Overwrite the trainable weights with their EMA (for analysing a finished run; no-op without EMA).
        Unlike the validation/test swap, the raw weights are not kept."""
        if self.ema is not None:
            self.ema.copy_to(self.trainable_named_parameters())

    def _swap_ema_in(self) -> None:
        if self.ema is None or self._ema_active:
            return
        params = self.trainable_named_parameters()
        self.__dict__["_raw_backup"] = {k: p.detach().clone() for k, p in params.items()}
        self.ema.copy_to(params)
        self._ema_active = True

    def _swap_ema_out(self) -> None:
        if not self._ema_active:
            return
        with torch.no_grad():
            for k, p in self.trainable_named_parameters().items():
                p.copy_(self.__dict__["_raw_backup"][k])
        self.__dict__.pop("_raw_backup")
        self._ema_active = False

    def on_validation_start(self) -> None:
        # Validation must not change what training draws next: anything in it that drew from the global streams
        # would shift the noise, timesteps and caption dropout of every later step, so how often a run validates
        # would change its trajectory. (Measured before the evaluation loaders got their own generators: runs
        # validating every 10 steps and never parted at step 10.) The loaders and samplers draw from their own
        # seeded generators; this fence covers whatever else a callback or library draws.
        fence = self.__dict__["_rng_fence"] = contextlib.ExitStack()
        fence.enter_context(isolate_rng())  # Lightning's save/restore of the torch, CUDA, Python and NumPy streams

    def on_validation_end(self) -> None:
        fence = self.__dict__.pop("_rng_fence", None)
        if fence is not None:
            fence.close()  # restores the streams as they were when validation started

    def on_validation_epoch_start(self) -> None:
        self._swap_ema_in()  # validation loss and samples use the EMA weights

    def on_validation_epoch_end(self) -> None:
        self._swap_ema_out()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self._ema_active:  # never save EMA weights as the raw weights
            raw = self.__dict__["_raw_backup"]
            checkpoint["state_dict"].update({k: v.clone() for k, v in raw.items() if k in checkpoint["state_dict"]})
        if self.ema is not None:
            checkpoint["ema"] = self.ema.state_dict()
        if not self.hparams.checkpoint_frozen:
            trainable = {n for n, p in self.named_parameters() if p.requires_grad}
            frozen = {n for n, p in self.named_parameters() if not p.requires_grad}
            for k in list(checkpoint["state_dict"]):
                if k in frozen and k not in trainable:
                    del checkpoint["state_dict"][k]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._skip_init_from = True  # restoring a checkpoint: its weights win over init_from
        self.configure_model()
        if self.ema is not None and "ema" in checkpoint:
            self.ema.load_state_dict(checkpoint["ema"])

    # ================================================================== optimisation
    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        lora = self.text_encoder.lora_parameters()
        lora_ids = {id(p) for p in lora}
        dense = [p for p in self.parameters() if p.requires_grad and id(p) not in lora_ids]  # UNet + projection
        groups = [g for g in (
            {"params": dense, "lr": hp.unet_lr, "name": "unet"},
            {"params": lora, "lr": hp.lora_lr, "name": "lora"},
        ) if g["params"]]
        optimizer = torch.optim.AdamW(groups, weight_decay=hp.weight_decay, betas=tuple(hp.betas))
        total = None
        if hp.lr_schedule == "cosine":
            total = max(1, int(self.trainer.estimated_stepping_batches))

        def factor(step: int) -> float:
            warm = min(1.0, (step + 1) / max(1, hp.warmup_steps))
            if total is None:
                return warm
            progress = min(1.0, max(0, step - hp.warmup_steps) / max(1, total - hp.warmup_steps))
            return warm * 0.5 * (1 + math.cos(math.pi * progress))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ================================================================== export
    def make_pipeline(self, use_ema: bool = True) -> ParaDiffusionPipeline:
        """A Lightning-free sampling pipeline. With `use_ema`, it holds the EMA weights: shared modules when the
        EMA weights are already swapped in (validation/test), otherwise copies (training weights untouched)."""
        self.configure_model()
        text_encoder, unet = self.text_encoder, self.unet
        if use_ema and self.ema is not None and not self._ema_active:
            copies = nn.ModuleDict({"text_encoder": copy.deepcopy(self.text_encoder), "unet": copy.deepcopy(self.unet)})
            self.ema.copy_to(self.trainable_named_parameters(root=copies))
            text_encoder, unet = copies["text_encoder"], copies["unet"]
        elif not use_ema and self._ema_active:
            copies = nn.ModuleDict({"text_encoder": copy.deepcopy(self.text_encoder), "unet": copy.deepcopy(self.unet)})
            with torch.no_grad():
                for k, p in self.trainable_named_parameters(root=copies).items():
                    p.copy_(self.__dict__["_raw_backup"][k])
            text_encoder, unet = copies["text_encoder"], copies["unet"]
        return ParaDiffusionPipeline(text_encoder, unet, self.noise_scheduler, self.vae)
