"""Paragraphs → images, without Lightning. Also reads and writes the released ParaDiffusion weights layout.

Layout (`save_pretrained` / `from_pretrained`)::

    DIR/Llama-2-7b-hf/          base causal LM + tokenizer (HF format, safetensors)
    DIR/text_encoder_lora/      PEFT adapter (adapter_config.json, adapter_model.safetensors), if LoRA is used
    DIR/unet/                   diffusers UNet2DConditionModel (EMA weights when exported from training)
    DIR/sdxl-vae-fp16-fix/      diffusers AutoencoderKL, only when a VAE is used
    DIR/scheduler/              the training noise schedule (DDPMScheduler config)
    DIR/text_encoder_config.json, DIR/text_encoder_projection.safetensors, DIR/text_encoder_connector.safetensors,
    DIR/text_encoder_embedding_skip.safetensors, DIR/model_index.json   (ours; optional)

Without `text_encoder_config.json` (the official release) the text encoder behaves like the released inference
code: last hidden state, 256 tokens, padded to max length, padding not masked.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal, Sequence

import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from torch import nn

from paradiffusion.diffusion.conditioning import unet_forward
from paradiffusion.diffusion.guidance import classifier_free_guidance, pad_context
from paradiffusion.diffusion.sampling import initial_noise, make_sampler, sample_loop
from paradiffusion.models.connector import TextConnector
from paradiffusion.models.text_encoder import LLMTextEncoder
from paradiffusion.models.vae import decode_latents

DEFAULT_LAYOUT = {
    "text_encoder_base": "Llama-2-7b-hf",
    "text_encoder_lora": "text_encoder_lora",
    "unet": "unet",
    "vae": "sdxl-vae-fp16-fix",
    "scheduler": "scheduler",
}
RELEASED_TEXT_ENCODER = {"hidden_layer": -1, "max_length": 256, "padding": "max_length", "mask_padding": False}


# ---------------------------------------------------------------------- the text side, shared with training
def encode_text(
    text_encoder: LLMTextEncoder,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    prefix_states: torch.Tensor | None = None,
    device: torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Paragraph tokens `(B, T)` → what the UNet attends to: text states `(B, T, D)` and mask `(B, T)` (padding
    stays masked). `prefix_states (B, T, H)` are the frozen LLM blocks' cached output, where a text cache has them.
    The inputs go to the encoder's device; the outputs to `device` and (states only) `dtype`, where given.
    Training (`ParaDiffusion.diffusion_step`), sampling (`ParaDiffusionPipeline.encode`) and the text-use probe
    (`evaluate.text_dependence`) all encode through here."""
    here = next(text_encoder.parameters()).device
    prefix_states = prefix_states.to(here) if prefix_states is not None else None
    context, mask = text_encoder(input_ids.to(here), attention_mask.to(here), prefix_states)
    return context.to(device=device, dtype=dtype), mask.to(device=device)


def drop_captions(
    text_encoder: LLMTextEncoder,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    p: float,
    prefix_states: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Caption dropout: with probability p per row, replace the paragraph by the empty paragraph, the unconditional
    input the sampler's classifier-free guidance uses; cached prefix states of a dropped row become the empty
    paragraph's states. Draws one `torch.rand` of `(B,)` from the global stream when `p > 0`."""
    if p <= 0:
        return input_ids, attention_mask, prefix_states
    drop = torch.rand(input_ids.shape[0], device=input_ids.device) < p  # (B,)
    if not drop.any():
        return input_ids, attention_mask, prefix_states
    empty = torch.tensor(text_encoder.tokenize([""])["input_ids"][0].tolist(), device=input_ids.device)  # (T0,)
    pad_id = text_encoder.tokenizer.pad_token_id
    if input_ids.shape[1] < len(empty):  # make room (rare: T0 is usually 1, the BOS token)
        extra = len(empty) - input_ids.shape[1]
        input_ids = nn.functional.pad(input_ids, (0, extra), value=pad_id)
        attention_mask = nn.functional.pad(attention_mask, (0, extra), value=0)
        if prefix_states is not None:
            prefix_states = nn.functional.pad(prefix_states, (0, 0, 0, extra))
    input_ids, attention_mask = input_ids.clone(), attention_mask.clone()
    input_ids[drop] = pad_id
    input_ids[drop, : len(empty)] = empty
    attention_mask[drop] = 0
    attention_mask[drop, : len(empty)] = 1
    if prefix_states is not None:
        with torch.no_grad():
            empty_states = text_encoder.encode_prefix(empty[None], torch.ones_like(empty)[None])[0]  # (T0, H)
        prefix_states = prefix_states.clone()
        prefix_states[drop] = 0
        prefix_states[drop, : len(empty)] = empty_states.to(prefix_states.dtype)
    return input_ids, attention_mask, prefix_states


class ParaDiffusionPipeline:
    """Text encoder + UNet (+ VAE) + noise schedule → sampler with classifier-free guidance.

    `scheduler` is the *training* schedule; each call builds a fresh DPM-Solver++ or DDIM sampler from it.
    """

    def __init__(
        self,
        text_encoder: LLMTextEncoder,
        unet: UNet2DConditionModel,
        scheduler: SchedulerMixin,
        vae: AutoencoderKL | None = None,
    ) -> None:
        self.text_encoder = text_encoder
        self.unet = unet
        self.scheduler = scheduler
        self.vae = vae
        # Optional `data.text_cache.TextStateCache` of the encoder's frozen prefix: paragraphs it holds skip the
        # frozen LLM blocks (evaluation re-reads the same paragraphs after every stage).
        self.text_cache = None

    # ------------------------------------------------------------------ helpers
    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    def to(self, device: str | torch.device) -> "ParaDiffusionPipeline":
        for m in (self.text_encoder, self.unet, self.vae):
            if m is not None:
                m.to(device)
        return self

    def encode(self, paragraphs: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Paragraphs → text states `(B, T, D)` and mask `(B, T)` on the UNet's device."""
        texts = list(paragraphs)
        tok = self.text_encoder.tokenize(texts)
        prefix = self.text_cache.batch_states(texts, tok["attention_mask"]) if self.text_cache is not None else None
        return encode_text(self.text_encoder, tok["input_ids"], tok["attention_mask"], prefix,  # prefix: (B, T, H)
                           device=self.device, dtype=self.unet.dtype)

    def image_shape(self) -> tuple[int, int, int]:
        """Shape of the denoised tensor per image: `(C, h, w)` (latents when a VAE is used)."""
        size = self.unet.config.sample_size
        size = (size, size) if isinstance(size, int) else tuple(size)
        return (self.unet.config.out_channels, *size)

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def __call__(
        self,
        paragraphs: Sequence[str] | str,
        num_inference_steps: int = 20,
        guidance_scale: float = 7.5,
        seed: int | Sequence[int] = 0,
        sampler: Literal["dpm", "ddim"] = "dpm",
        batch_size: int = 8,
    ) -> torch.Tensor:
        """Sample one image per paragraph → `(B, 3, H, W)` float in [0, 1] on CPU.

        `seed` is an int (image i gets `seed + i`) or one seed per paragraph; an image depends only on its
        paragraph and seed, not on `batch_size` or on the other paragraphs.
        """
        if isinstance(paragraphs, str):
            paragraphs = [paragraphs]
        seeds = [seed + i for i in range(len(paragraphs))] if isinstance(seed, int) else list(seed)
        if len(seeds) != len(paragraphs):
            raise ValueError(f"got {len(seeds)} seeds for {len(paragraphs)} paragraphs")
        was_training = (self.text_encoder.training, self.unet.training)
        self.text_encoder.eval()
        self.unet.eval()
        guided = guidance_scale != 1.0
        # The unconditional branch is the empty paragraph (as trained by caption dropout); encoded once per call.
        uncond, uncond_mask = self.encode([""]) if guided else (None, None)  # (1, T0, D), (1, T0)
        images = []
        for start in range(0, len(paragraphs), batch_size):
            chunk = list(paragraphs[start : start + batch_size])
            cond, cond_mask = self.encode(chunk)  # (b, T, D), (b, T)
            b = len(chunk)
            if guided:
                length = max(cond.shape[1], uncond.shape[1])
                u, um = pad_context(uncond, uncond_mask, length)
                c, cm = pad_context(cond, cond_mask, length)
                context = torch.cat([u.expand(b, -1, -1), c])  # (2b, L, D)
                context_mask = torch.cat([um.expand(b, -1), cm])  # (2b, L)
            else:
                context, context_mask = cond, cond_mask

            def denoise(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
                x_in = torch.cat([x_t, x_t]) if guided else x_t  # (2b | b, C, h, w)
                out = unet_forward(self.unet, x_in, t, context, context_mask)
                if not guided:
                    return out
                out_u, out_c = out.chunk(2)
                return classifier_free_guidance(out_u, out_c, guidance_scale)

            x_T = initial_noise(self.image_shape(), seeds[start : start + b], self.device, self.unet.dtype)
            x0 = sample_loop(denoise, make_sampler(sampler, self.scheduler), x_T, num_inference_steps)
            pixels = decode_latents(self.vae, x0) if self.vae is not None else x0.float()  # (b, 3, H, W) in [-1, 1]
            images.append(((pixels.clamp(-1, 1) + 1) / 2).cpu())
        self.text_encoder.train(was_training[0])
        self.unet.train(was_training[1])
        return torch.cat(images)

    # ------------------------------------------------------------------ released-weights layout
    def save_pretrained(self, directory: str | os.PathLike, base_dirname: str = DEFAULT_LAYOUT["text_encoder_base"]) -> None:
        """Write the released layout (safetensors). Export EMA weights by building the pipeline with
        `ParaDiffusion.make_pipeline(use_ema=True)` first."""
        from safetensors.torch import save_file

        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        layout = dict(DEFAULT_LAYOUT, text_encoder_base=base_dirname)
        te = self.text_encoder
        te.materialize()
        base = te.base_lm
        # Base LLM without LoRA: PEFT injects `...q_proj.base_layer.weight` + `lora_*`; strip back to plain keys.
        state = {
            k.replace(".base_layer.", "."): v.detach().contiguous()
            for k, v in base.state_dict().items()
            if ".lora_" not in k
        }
        base.save_pretrained(out / layout["text_encoder_base"], state_dict=state, safe_serialization=True)
        te.tokenizer.save_pretrained(out / layout["text_encoder_base"])
        has_lora = hasattr(te.lm, "peft_config")
        if has_lora:
            te.lm.save_pretrained(out / layout["text_encoder_lora"], safe_serialization=True)
        settings = te.settings()
        settings["has_lora"] = has_lora
        (out / "text_encoder_config.json").write_text(json.dumps(settings, indent=2))
        for name, head in te.heads().items():  # projection / connector / embedding skip, where present
            save_file({k: v.detach().contiguous() for k, v in head.state_dict().items()},
                      str(out / f"text_encoder_{name}.safetensors"))
        self.unet.save_pretrained(out / layout["unet"], safe_serialization=True)
        if self.vae is not None:
            self.vae.save_pretrained(out / layout["vae"], safe_serialization=True)
        else:
            layout.pop("vae")
        self.scheduler.save_pretrained(out / layout["scheduler"])
        (out / "model_index.json").write_text(json.dumps({"_class_name": "ParaDiffusionPipeline", **layout}, indent=2))

    @classmethod
    def from_pretrained(
        cls,
        directory: str | os.PathLike,
        dtype: Literal["float32", "bfloat16", "float16"] = "float32",
        device: str | torch.device | None = None,
    ) -> "ParaDiffusionPipeline":
        """Load our export or the official release directory (offline)."""
        from safetensors.torch import load_file

        from paradiffusion.models.unet import load_unet
        from paradiffusion.models.vae import load_vae

        root = Path(directory)
        index = root / "model_index.json"
        layout = dict(DEFAULT_LAYOUT, **{k: v for k, v in json.loads(index.read_text()).items() if not k.startswith("_")}) \
            if index.is_file() else dict(DEFAULT_LAYOUT)
        if "text_rewriter" in layout:  # written by an earlier version: its model reads restatements, not paragraphs
            raise ValueError(f"{root}: exported with a text rewriter (model_index.json names 'text_rewriter'), which "
                             f"this version no longer supports; its images would not be the model's")
        cfg_path = root / "text_encoder_config.json"
        te_cfg = json.loads(cfg_path.read_text()) if cfg_path.is_file() else dict(RELEASED_TEXT_ENCODER)
        base_dir = root / layout["text_encoder_base"]
        if not base_dir.is_dir():
            raise FileNotFoundError(f"{root}: text encoder base {base_dir} not found")
        text_encoder = LLMTextEncoder(
            pretrained=str(base_dir),
            hidden_layer=te_cfg.get("hidden_layer", -1),
            max_length=te_cfg.get("max_length", 512),
            padding=te_cfg.get("padding", "longest"),
            mask_padding=te_cfg.get("mask_padding", True),
            out_dim=te_cfg.get("out_dim"),
            connector=TextConnector.from_settings(te_cfg["connector"]) if te_cfg.get("connector") else None,
            embedding_skip=te_cfg.get("embedding_skip", False),
            state_norm=te_cfg.get("state_norm", False),
            sentence_context=te_cfg.get("sentence_context", False),
            freeze=True,
            dtype=dtype,
        )
        lora_dir = root / layout["text_encoder_lora"]
        if lora_dir.is_dir():
            text_encoder.load_lora(str(lora_dir))
        for name, head in text_encoder.heads().items():  # what text_encoder_config.json asks for must be there
            head_file = root / f"text_encoder_{name}.safetensors"
            if not head_file.is_file():
                raise FileNotFoundError(f"{root}: text_encoder_config.json needs a {name} but {head_file.name} is missing")
            head.load_state_dict(load_file(str(head_file)))
        text_encoder.requires_grad_(False).eval()
        unet = load_unet(str(root / layout["unet"]), dtype=dtype).eval()
        vae_dir = root / layout.get("vae", DEFAULT_LAYOUT["vae"])
        vae = load_vae(str(vae_dir), dtype=dtype).eval() if "vae" in layout and vae_dir.is_dir() else None
        scheduler = DDPMScheduler.from_config(DDPMScheduler.load_config(str(root / layout["scheduler"])))
        pipe = cls(text_encoder, unet, scheduler, vae)
        return pipe.to(device) if device is not None else pipe
