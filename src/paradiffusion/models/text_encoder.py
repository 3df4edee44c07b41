"""The paragraph encoder: a decoder-only LLM (Llama architecture), optionally LoRA-adapted.

ParaDiffusion feeds the hidden states of Llama-2-7b (4096-d) straight into the UNet's cross-attention and
adapts the LLM with LoRA jointly with the denoiser. This module loads the causal LM from

* a Hugging Face model directory (`pretrained`, the Llama-2-7b-hf layout, or the stage-0 tiny LM),
* a GGUF file (`gguf_file`, converted once to a cached safetensors directory, see `models.gguf`), or
* a `LlamaConfig` (`llama_config`, random init; tests), with `tokenizer` naming a tokenizer directory,

runs the base model (no LM head) and returns the hidden states of `hidden_layer` plus the attention mask.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
from typing import Literal

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, LlamaConfig, PreTrainedModel

from paradiffusion.models.connector import TextConnector
from paradiffusion.models.lora import LoRASettings
from paradiffusion.models.sentences import sentence_end_table, sentence_ids, sentence_mean

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _own_memory(module: nn.Module) -> None:
    """Copy loaded tensors into freshly allocated memory.

    Weights loaded from (memory-mapped) safetensors can sit at unaligned addresses, and CPU GEMM kernels then
    take a different path with different rounding; copying makes a reloaded model bitwise-identical to the saved
    one and releases the file mapping.
    """
    with torch.no_grad():
        for t in list(module.parameters()) + list(module.buffers()):
            if t.device.type != "meta":
                t.data = t.data.clone()


class StateNorm(nn.Module):
    """Sana's fix for decoder-only LLM states: RMS-normalise each token's state (no per-channel gain) and learn
    one scalar scale, so the UNet reads states of a fixed, learnable magnitude."""

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(float(scale)))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return nn.functional.rms_norm(hidden.float(), (hidden.shape[-1],)) * self.scale  # (B, T, H)


class LLMTextEncoder(nn.Module):
    """Paragraphs → `(hidden (B, T, D), attention_mask (B, T))`.

    Args:
        pretrained: Hugging Face model directory (config, weights, tokenizer files).
        gguf_file: GGUF file path, or `pkg://<package>/<file>` to find it inside an installed package.
        llama_config: random-init Llama config (tests); needs `tokenizer`.
        tokenizer: tokenizer directory; defaults to the model directory.
        hidden_layer: `-1` = last hidden state after the final norm (as released); `-2` = penultimate layer.
        max_length: token cap per paragraph (512 ≈ a long paragraph); longer ones are truncated and counted.
        padding: `"longest"` pads to the longest paragraph in the batch (default); `"max_length"` pads to
            `max_length` (what the released inference code does).
        mask_padding: pass the attention mask on to the UNet (`encoder_attention_mask`). The released code
            did not mask padding; we do by default so results do not depend on what the paragraph is batched with.
        lora: LoRA settings; `None` = no adapter.
        freeze: freeze the LLM entirely (the frozen-encoder ablation); without LoRA and without freeze the whole
            LLM is trained.
        out_dim: output width; a trainable linear projection is added when it differs from the LLM width.
        connector: optional trainable layers on the (projected) states before the UNet, e.g. a `TokenGate` or a
            `TextRefiner` (`models.connector`); `None` = the states go straight to the UNet, as in the paper.
        embedding_skip: add `W · LayerNorm(token embedding)` to every state (W trainable, zero at init, so a fresh
            skip changes nothing): each token's identity then reaches the UNet whatever its context. A small LM's
            last layer mixes much of its context into every token (README, "What we found"); Llama-2's does not
            need this, and the paper has no such path (default off).
        gradient_checkpointing: recompute LLM activations in backward.
        dtype: dtype of the (frozen) base weights, e.g. `bfloat16` for 7B on GPU. LoRA weights stay fp32.
        lazy: defer building the LLM to `materialize()` (called from `ParaDiffusion.configure_model`, so that
            DeepSpeed ZeRO-3 can partition it as it is built).
        num_blocks: keep only the first K decoder blocks of the LLM (`None` = all); the final norm is applied to
            block K's output. A small model's middle layers can carry more of a scene than its last one, and K
            blocks cost K/L of the forward pass.
        trainable_blocks: with LoRA, adapt only the top N of the kept blocks; the blocks below them are frozen and
            their output can be cached on disk (`data.text_cache`). `None` = LoRA in every block (the paper's and
            the GPU configs' recipe).
        state_norm: Sana-style normalisation of the states the UNet reads: RMSNorm (no affine) times a learnable
            scalar (initialised to `state_norm_scale`). Off by default.
        sentence_context: add `W · mean state of the token's sentence` to every state (W trainable, zero at init,
            so a fresh one changes nothing; `models.sentences`): a causal LLM's token has not seen the rest of its
            sentence, and a small LLM's early blocks do not bind an object's colour to its cell; this bidirectional,
            parameter-free pooling does. Computed after the cache, so cached states serve it unchanged. Off by
            default (the paper reads the LLM's states as they are).
        gguf_cache_dir: where converted GGUF models are cached (default `$PARADIFFUSION_CACHE/gguf`).
        attn_implementation: transformers attention kernel; fixed explicitly so that a model built from a
            config and one loaded from disk run the same kernels (bitwise-equal outputs).
    """

    def __init__(
        self,
        pretrained: str | None = None,
        gguf_file: str | None = None,
        llama_config: LlamaConfig | None = None,
        tokenizer: str | None = None,
        hidden_layer: int = -1,
        max_length: int = 512,
        padding: Literal["longest", "max_length"] = "longest",
        mask_padding: bool = True,
        lora: LoRASettings | None = None,
        freeze: bool = False,
        out_dim: int | None = None,
        connector: TextConnector | None = None,
        embedding_skip: bool = False,
        gradient_checkpointing: bool = False,
        dtype: Literal["float32", "bfloat16", "float16"] = "float32",
        lazy: bool = False,
        gguf_cache_dir: str | None = None,
        attn_implementation: Literal["sdpa", "eager"] = "sdpa",
        num_blocks: int | None = None,
        trainable_blocks: int | None = None,
        state_norm: bool = False,
        state_norm_scale: float = 1.0,
        sentence_context: bool = False,
    ) -> None:
        super().__init__()
        sources = [s is not None for s in (pretrained, gguf_file, llama_config)]
        if sum(sources) != 1:
            raise ValueError("LLMTextEncoder: give exactly one of pretrained, gguf_file, llama_config")
        if gguf_file is not None:
            from paradiffusion.models.gguf import convert_gguf

            pretrained = str(convert_gguf(gguf_file, gguf_cache_dir))
        if pretrained is not None and not os.path.isdir(pretrained):
            raise FileNotFoundError(f"LLMTextEncoder: pretrained={pretrained!r} is not a directory")
        tokenizer = tokenizer or pretrained
        if tokenizer is None:
            raise ValueError("LLMTextEncoder: llama_config needs tokenizer=<tokenizer directory>")

        self.pretrained = pretrained
        self.llama_config = llama_config
        self.hidden_layer = hidden_layer
        self.max_length = max_length
        self.padding = padding
        self.mask_padding = mask_padding
        self.lora = lora
        self.freeze = freeze
        self.gradient_checkpointing = gradient_checkpointing
        self.dtype_name = dtype
        self.attn_implementation = attn_implementation
        self.num_blocks = num_blocks
        self.trainable_blocks = trainable_blocks
        if trainable_blocks is not None and (lora is None or freeze):
            raise ValueError("LLMTextEncoder: trainable_blocks restricts LoRA to the top blocks; it needs lora and freeze=false")
        # Cumulative count of truncated paragraphs (the module logs it; truncation is never silent).
        self.num_truncated = 0

        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer)
        self.tokenizer.padding_side = "right"  # causal LM + right padding: pads never change real tokens
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token

        config = llama_config if llama_config is not None else AutoConfig.from_pretrained(pretrained)
        total = config.num_hidden_layers
        if num_blocks is not None and not 1 <= num_blocks <= total:
            raise ValueError(f"LLMTextEncoder: num_blocks={num_blocks} must be in 1..{total} (the LLM's blocks)")
        self.depth: int = num_blocks or total
        if trainable_blocks is not None and not 0 <= trainable_blocks <= self.depth:
            raise ValueError(f"LLMTextEncoder: trainable_blocks={trainable_blocks} must be in 0..{self.depth}")
        if num_blocks is not None and hidden_layer != -1:
            raise ValueError("LLMTextEncoder: num_blocks already picks the layer (its output, after the final norm); "
                             "leave hidden_layer at -1")
        self.hidden_size: int = config.hidden_size
        self.out_dim: int = out_dim or self.hidden_size
        # Trainable projection only where widths differ (e.g. a 256-d LM into a UNet with another width).
        self.proj: nn.Module = (
            nn.Linear(self.hidden_size, self.out_dim) if self.out_dim != self.hidden_size else nn.Identity()
        )
        if connector is not None and connector.dim != self.out_dim:
            raise ValueError(f"LLMTextEncoder: connector.dim={connector.dim} != out_dim={self.out_dim}")
        self.connector = connector
        self.embedding_skip: nn.Module | None = None
        if embedding_skip:
            skip = nn.Linear(self.hidden_size, self.out_dim, bias=False)
            nn.init.zeros_(skip.weight)
            self.embedding_skip = nn.Sequential(nn.LayerNorm(self.hidden_size), skip)
        # Sana: decoder-only LLM states have large, uneven norms; RMS-normalise them and learn one scale.
        self.state_norm: StateNorm | None = StateNorm(state_norm_scale) if state_norm else None
        self.sentence_context: nn.Module | None = None
        if sentence_context:
            self.sentence_context = nn.Linear(self.hidden_size, self.out_dim, bias=False)
            nn.init.zeros_(self.sentence_context.weight)
            # which token ids end a sentence; rebuilt from the tokenizer, so not part of the state dict
            self.register_buffer("sentence_ends", sentence_end_table(self.tokenizer), persistent=False)
        self.lm: nn.Module | None = None
        if not lazy:
            self.materialize()

    # ------------------------------------------------------------------ building
    def materialize(self, empty_weights: bool = False) -> None:
        """Build (load) the LLM, add LoRA, set requires_grad. Idempotent.

        `empty_weights=True` builds from the config on the meta device (no weights read or allocated), e.g. to
        count the parameters of the 7B configuration.
        """
        if self.lm is not None:
            return
        dtype = _DTYPES[self.dtype_name]
        with torch.device("meta") if empty_weights else contextlib.nullcontext():
            if self.pretrained is not None and not empty_weights:
                lm: PreTrainedModel = AutoModelForCausalLM.from_pretrained(
                    self.pretrained, dtype=dtype, attn_implementation=self.attn_implementation
                )
            else:
                config = self.llama_config if self.llama_config is not None else AutoConfig.from_pretrained(self.pretrained)
                lm = AutoModelForCausalLM.from_config(config, attn_implementation=self.attn_implementation).to(dtype)
                _own_memory(lm)
            lm.config.use_cache = False  # never generating; a KV cache only costs memory
            if self.depth < lm.config.num_hidden_layers:  # drop the blocks above K: never run, never loaded again
                lm.model.layers = lm.model.layers[: self.depth]
                lm.config.num_hidden_layers = self.depth
            lm.requires_grad_(not self.freeze and self.lora is None)
            if self.gradient_checkpointing:
                lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            if self.lora is not None and not self.freeze:
                from peft import get_peft_model

                # PEFT wraps the causal LM (not the bare LlamaModel) so adapter files use the usual key names.
                layers = None if self.trainable_blocks is None else list(range(self.prefix_blocks, self.depth))
                lm = get_peft_model(lm, self.lora.to_peft(layers_to_transform=layers))
        self.lm = lm

    def load_lora(self, adapter_dir: str) -> None:
        """Attach a saved PEFT adapter (`text_encoder_lora/`), e.g. from the released weights."""
        from peft import PeftModel

        self.materialize()
        if hasattr(self.lm, "peft_config"):
            from peft import set_peft_model_state_dict
            from safetensors.torch import load_file

            set_peft_model_state_dict(self.lm, load_file(os.path.join(adapter_dir, "adapter_model.safetensors")))
        else:
            self.lm = PeftModel.from_pretrained(self.lm, adapter_dir, is_trainable=False)
        _own_memory(self.lm)

    @property
    def base_lm(self) -> PreTrainedModel:
        """The causal LM under any PEFT wrapper (LoRA layers are injected in place)."""
        assert self.lm is not None, "LLMTextEncoder.materialize() was not called"
        return self.lm.get_base_model() if hasattr(self.lm, "get_base_model") else self.lm

    def lora_parameters(self) -> list[nn.Parameter]:
        """Trainable LLM parameters (LoRA, or the whole LLM when trained fully)."""
        return [p for p in (self.lm.parameters() if self.lm is not None else []) if p.requires_grad]

    def heads(self) -> dict[str, nn.Module]:
        """The trainable layers between the LLM and the UNet that this encoder has, by export name: `projection`,
        `connector`, `embedding_skip` (each saved as `text_encoder_<name>.safetensors` by the pipeline)."""
        parts = {"projection": self.proj if isinstance(self.proj, nn.Linear) else None, "state_norm": self.state_norm,
                 "sentence_context": self.sentence_context, "connector": self.connector,
                 "embedding_skip": self.embedding_skip}
        return {name: m for name, m in parts.items() if m is not None}

    def projection_parameters(self) -> list[nn.Parameter]:
        """The projection, the connector and the embedding skip: trained at the UNet's learning rate."""
        return [p for m in self.heads().values() for p in m.parameters()]

    # ------------------------------------------------------------------ text
    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """Tokenise with truncation at `max_length`, padded to the longest paragraph (or to `max_length`);
        see :func:`tokenize_paragraphs`. Truncations are added to `num_truncated`."""
        out = tokenize_paragraphs(self.tokenizer, texts, self.max_length, self.padding)
        self.num_truncated += int(out["truncated"].sum())
        return out

    @property
    def prefix_blocks(self) -> int:
        """How many blocks at the bottom are frozen, so their output can be cached (`encode_prefix`)."""
        if self.freeze:
            return self.depth
        if self.lora is not None and self.trainable_blocks is not None:
            return self.depth - self.trainable_blocks
        return 0

    def cache_identity(self) -> dict:
        """What cached prefix states depend on (`data.text_cache.TextStateCache` refuses a mismatch)."""
        self.materialize()
        backbone = self.base_lm.model
        digest = hashlib.sha1()
        frozen = [backbone.embed_tokens, *backbone.layers[: self.prefix_blocks]]
        for name, t in sorted((n, t) for m_i, m in enumerate(frozen) for n, t in
                              ((f"{m_i}.{k}", v) for k, v in m.state_dict().items()) if "lora_" not in n):
            flat = t.detach().reshape(-1)
            digest.update(name.encode() + str(tuple(t.shape)).encode())
            digest.update(flat[:: max(1, flat.numel() // 4096)].float().cpu().numpy().tobytes())  # a strided sample
        vocab = json.dumps(sorted(self.tokenizer.get_vocab().items()))
        return {
            "lm": digest.hexdigest()[:16],
            "tokenizer": hashlib.sha1(vocab.encode()).hexdigest()[:16]
            + f"-bos{self.tokenizer.bos_token_id}-{type(self.tokenizer).__name__}",
            "prefix_blocks": self.prefix_blocks,
            "max_length": self.max_length,
            "dim": self.hidden_size,
        }

    # ------------------------------------------------------------------ forward
    def _run_blocks(self, hidden: torch.Tensor, attention_mask: torch.Tensor, start: int, stop: int,
                    collect: list | None = None) -> torch.Tensor:
        """Decoder blocks `start..stop-1` on `hidden (B, T, H)`, with the causal + padding mask and rotary
        positions exactly as `LlamaModel.forward` builds them (a test checks the match)."""
        from transformers.masking_utils import create_causal_mask

        backbone = self.base_lm.model
        position_ids = torch.arange(hidden.shape[1], device=hidden.device).unsqueeze(0)  # (1, T)
        mask = create_causal_mask(config=backbone.config, inputs_embeds=hidden, attention_mask=attention_mask,
                                  cache=None, position_ids=position_ids)
        rotary = backbone.rotary_emb(hidden, position_ids=position_ids)
        for block in backbone.layers[start:stop]:
            hidden = block(hidden, attention_mask=mask, position_embeddings=rotary, position_ids=position_ids)
            if collect is not None:
                collect.append(hidden)
        return hidden  # (B, T, H)

    def encode_prefix(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The frozen bottom: token embeddings through the first `prefix_blocks` blocks → `(B, T, H)` (what the
        text-state cache stores)."""
        hidden = self.base_lm.model.embed_tokens(input_ids)  # (B, T, H)
        return self._run_blocks(hidden, attention_mask, 0, self.prefix_blocks)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                prefix_states: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """`input_ids (B, T)`, `attention_mask (B, T)` → `hidden (B, T, out_dim)`, `attention_mask (B, T)`.

        `prefix_states (B, T, H)`: the frozen prefix's output for these tokens, read from a text-state cache; the
        prefix is then skipped and only the blocks above it run.
        """
        backbone = self.base_lm.model  # LlamaModel: no LM head, LoRA layers already injected
        if self.hidden_layer != -1:  # an intermediate layer (ablation), numbered as transformers' hidden_states
            if prefix_states is not None:
                raise ValueError("LLMTextEncoder: cached prefix states need hidden_layer=-1 (use num_blocks instead)")
            every = [backbone.embed_tokens(input_ids)]  # (B, T, H) each
            self._run_blocks(every[0], attention_mask, 0, self.depth, collect=every)
            every[-1] = backbone.norm(every[-1])
            hidden = every[self.hidden_layer]
        else:
            if prefix_states is None:
                # The frozen bottom needs no graph; what the cache would hold is computed here instead.
                with torch.no_grad() if self.prefix_blocks else contextlib.nullcontext():
                    prefix_states = self.encode_prefix(input_ids, attention_mask)  # (B, T, H)
            hidden = self._run_blocks(prefix_states.to(backbone.norm.weight.dtype), attention_mask,
                                      self.prefix_blocks, self.depth)  # (B, T, H): the trainable top blocks
            hidden = backbone.norm(hidden)
        if self.state_norm is not None:
            hidden = self.state_norm(hidden)  # (B, T, H)
        context = None
        if self.sentence_context is not None:
            # each token also gets what its whole sentence says (the causal LLM showed it only the words before it)
            sentence = sentence_ids(input_ids, self.sentence_ends)  # (B, T)
            context = sentence_mean(hidden.float(), sentence, attention_mask)  # (B, T, H)
        if isinstance(self.proj, nn.Linear):
            hidden = self.proj(hidden.to(self.proj.weight.dtype))  # (B, T, out_dim)
        if context is not None:
            hidden = hidden.float() + self.sentence_context(context)  # (B, T, out_dim)
        if self.embedding_skip is not None:
            tokens = backbone.embed_tokens(input_ids)  # (B, T, H): identity only, no context (LoRA included)
            hidden = hidden.float() + self.embedding_skip(tokens.float())  # (B, T, out_dim)
        if self.connector is not None:
            hidden, attention_mask = self.connector(hidden.float(), attention_mask)  # (B, T, out_dim), (B, T)
        if not self.mask_padding:
            attention_mask = torch.ones_like(attention_mask)  # released behaviour: padding is attended
        return hidden, attention_mask  # (B, T, D), (B, T)

    @torch.no_grad()
    def encode(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Convenience: tokenise + forward on this module's device."""
        device = next(self.parameters()).device
        tok = self.tokenize(texts)
        return self(tok["input_ids"].to(device), tok["attention_mask"].to(device))

    def settings(self) -> dict:
        """What `pipeline.save_pretrained` records next to the weights (`text_encoder_config.json`)."""
        return {
            "hidden_layer": self.hidden_layer,
            "max_length": self.max_length,
            "padding": self.padding,
            "mask_padding": self.mask_padding,
            "out_dim": self.out_dim,
            "lora": None if self.lora is None else vars(self.lora),
            "connector": None if self.connector is None else self.connector.settings(),
            "embedding_skip": self.embedding_skip is not None,
            "state_norm": self.state_norm is not None,
            "sentence_context": self.sentence_context is not None,
        }


def tokenize_paragraphs(
    tokenizer, texts: list[str], max_length: int, padding: Literal["longest", "max_length"] = "longest"
) -> dict[str, torch.Tensor]:
    """Paragraphs -> `input_ids (B, T)`, `attention_mask (B, T)`, `truncated (B,) bool`.

    The one tokenisation rule, shared by the encoder (sampling) and the DataModules' collate function (training),
    so both see identical inputs. Right padding: a causal LM's real tokens never attend to the pads, so the hidden
    states of a paragraph do not depend on what it is batched with. Every row keeps at least one token (the empty
    paragraph becomes BOS/EOS), so cross-attention never sees an all-masked row.
    """
    ids = tokenizer(list(texts), add_special_tokens=True, truncation=False, verbose=False)["input_ids"]
    truncated = torch.tensor([len(x) > max_length for x in ids], dtype=torch.bool)
    filler = next(t for t in (tokenizer.bos_token_id, tokenizer.eos_token_id, 0) if t is not None)
    ids = [x[:max_length] or [filler] for x in ids]
    length = max_length if padding == "max_length" else max(len(x) for x in ids)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else filler
    input_ids = torch.full((len(ids), length), pad_id, dtype=torch.long)  # (B, T)
    attention_mask = torch.zeros((len(ids), length), dtype=torch.long)  # (B, T)
    for i, x in enumerate(ids):
        input_ids[i, : len(x)] = torch.tensor(x, dtype=torch.long)
        attention_mask[i, : len(x)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "truncated": truncated}
