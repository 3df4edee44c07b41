"""`CausalLMPretrain`: pretrains a small `LlamaForCausalLM` from scratch (stage 0, tiny scale).

It stands in for Llama-2-7b's pretraining, which cannot be downloaded here: the result is written as an
ordinary Hugging Face directory that the text encoder loads exactly as it would load Llama-2-7b-hf.

The vocabulary size is not a config value to keep in sync by hand: the model is built in `configure_model`
from the tokenizer that the DataModule trained or loaded (`trainer.datamodule.tokenizer`), and the resolved
size is written back into the hyperparameters so checkpoints rebuild without a DataModule.
"""
from __future__ import annotations

import math
import tempfile

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info
from torchmetrics.aggregation import MeanMetric
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase

from paradiffusion.lm.export import CKPT_KEY, save_hf_dir
from paradiffusion.lm.tokenizer import SPECIAL_IDS, tokenizer_files, write_tokenizer_files


class CausalLMPretrain(L.LightningModule):
    """Causal-LM pretraining of a Llama-architecture model.

    Args (Llama shape): hidden_size, num_hidden_layers, num_attention_heads, num_key_value_heads (None: = heads,
        i.e. no GQA), intermediate_size, max_position_embeddings, rope_theta, tie_word_embeddings.
        vocab_size: None takes it from the DataModule's tokenizer (normal case).
    Args (optimisation): lr (peak), weight_decay (matrices only, not norms), betas, warmup_steps (linear),
        then cosine decay to `min_lr_ratio * lr` at the last step.
    Args (output): export_dir: where the final Hugging Face directory is written at the end of `fit`
        (None: no export); export_on_checkpoint: also rewrite it at every checkpoint save.
    """

    def __init__(
        self,
        hidden_size: int = 256,
        num_hidden_layers: int = 4,
        num_attention_heads: int = 4,
        num_key_value_heads: int | None = None,
        intermediate_size: int = 688,
        max_position_embeddings: int = 512,
        rope_theta: float = 10000.0,
        tie_word_embeddings: bool = False,
        vocab_size: int | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.1,
        betas: tuple[float, float] = (0.9, 0.95),
        warmup_steps: int = 50,
        min_lr_ratio: float = 0.1,
        export_dir: str | None = None,
        export_on_checkpoint: bool = False,
    ):
        super().__init__()
        if hidden_size % num_attention_heads:
            raise ValueError(f"model.hidden_size={hidden_size} is not divisible by num_attention_heads={num_attention_heads}")
        self.save_hyperparameters()
        self.model: LlamaForCausalLM | None = None
        self.tokenizer: PreTrainedTokenizerBase | None = None
        self.val_loss = MeanMetric()  # token-weighted mean over the whole val set

    # --- model ------------------------------------------------------------------------------------------
    def llama_config(self) -> LlamaConfig:
        hp = self.hparams
        return LlamaConfig(
            vocab_size=hp.vocab_size,
            hidden_size=hp.hidden_size,
            intermediate_size=hp.intermediate_size,
            num_hidden_layers=hp.num_hidden_layers,
            num_attention_heads=hp.num_attention_heads,
            num_key_value_heads=hp.num_key_value_heads or hp.num_attention_heads,
            max_position_embeddings=hp.max_position_embeddings,
            rope_theta=hp.rope_theta,
            tie_word_embeddings=hp.tie_word_embeddings,
            bos_token_id=SPECIAL_IDS["bos_token_id"],
            eos_token_id=SPECIAL_IDS["eos_token_id"],
            pad_token_id=SPECIAL_IDS["pad_token_id"],
        )

    def configure_model(self) -> None:
        """Build the Llama once the tokenizer (hence the vocabulary size) is known.

        Here rather than in `__init__` so the DataModule has trained/loaded the tokenizer first, and so sharded
        strategies (DeepSpeed ZeRO-3, FSDP) can build the parameters directly on their devices.
        """
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        tokenizer = getattr(datamodule, "tokenizer", None)
        if tokenizer is not None:
            if self.hparams.vocab_size not in (None, len(tokenizer)):
                raise ValueError(
                    f"model.vocab_size={self.hparams.vocab_size} but the data's tokenizer has {len(tokenizer)} tokens"
                )
            for name, idx in SPECIAL_IDS.items():
                if getattr(tokenizer, name) != idx:
                    raise ValueError(f"tokenizer.{name}={getattr(tokenizer, name)}, expected {idx} (Llama order)")
            self.tokenizer = tokenizer
            self.hparams.vocab_size = len(tokenizer)  # saved in checkpoints -> load_from_checkpoint works alone
        if self.model is not None:
            return  # built already (resumed, or built by hand before fit): only the tokenizer was attached
        if self.hparams.vocab_size is None:
            raise RuntimeError(
                "CausalLMPretrain: vocab_size unknown; attach a DataModule with a `tokenizer` or set model.vocab_size"
            )
        self.model = LlamaForCausalLM(self.llama_config())
        n = sum(p.numel() for p in self.model.parameters())
        rank_zero_info(f"CausalLMPretrain: Llama with {n / 1e6:.2f}M parameters, vocab {self.hparams.vocab_size}")

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Next-token logits (B, T, V) for input_ids (B, T)."""
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits

    # --- steps ------------------------------------------------------------------------------------------
    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        # Mean next-token cross-entropy over the packed block; HF shifts labels by one inside.
        loss = self.model(input_ids=batch["input_ids"], labels=batch["labels"]).loss
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/ppl", loss.detach().exp())
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], prog_bar=True)
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        loss = self.model(input_ids=batch["input_ids"], labels=batch["labels"]).loss
        # Weighted by scored targets (labels shifted by one; -100 = padding), so the epoch mean is per token.
        self.val_loss.update(loss, weight=(batch["labels"][:, 1:] != -100).sum())

    def on_validation_epoch_end(self) -> None:
        loss = self.val_loss.compute()  # synced over ranks
        self.val_loss.reset()
        # ppl = exp(mean loss over all val tokens), not the mean of per-batch perplexities.
        self.log("val/loss", loss, prog_bar=True, sync_dist=False)
        self.log("val/ppl", loss.exp())
        unigram = getattr(getattr(self._trainer, "datamodule", None), "unigram_ppl", None)
        if unigram is not None:
            self.log("val/unigram_ppl", float(unigram))  # the baseline to beat, next to the curve

    # --- optimisation -----------------------------------------------------------------------------------
    def configure_optimizers(self):
        hp = self.hparams
        # Decay matrices (embeddings, projections), not norm gains: decaying RMSNorm weights towards 0 only hurts.
        params = [p for p in self.model.parameters() if p.requires_grad]
        groups = [
            {"params": [p for p in params if p.ndim >= 2], "weight_decay": hp.weight_decay},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
        ]
        opt = torch.optim.AdamW(groups, lr=hp.lr, betas=tuple(hp.betas))
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = min(hp.warmup_steps, total)

        def schedule(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            t = min(1.0, (step - warmup) / max(1, total - warmup))
            return hp.min_lr_ratio + (1 - hp.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # --- checkpoints and export -------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # Everything export_hf needs besides the weights, as plain types (loadable with weights_only=True).
        with tempfile.TemporaryDirectory() as tmp:
            files = tokenizer_files(self.tokenizer, tmp) if self.tokenizer is not None else {}
        checkpoint[CKPT_KEY] = {"llama_config": self.model.config.to_diff_dict(), "tokenizer_files": files}
        if self.hparams.export_on_checkpoint and self.hparams.export_dir and self._is_global_zero():
            self.export(self.hparams.export_dir)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        meta = checkpoint.get(CKPT_KEY)
        if meta and meta.get("tokenizer_files") and self.tokenizer is None:
            from transformers import AutoTokenizer

            with tempfile.TemporaryDirectory() as tmp:
                write_tokenizer_files(meta["tokenizer_files"], tmp)
                self.tokenizer = AutoTokenizer.from_pretrained(tmp, local_files_only=True)

    def on_fit_end(self) -> None:
        if self.hparams.export_dir and self._is_global_zero():
            out = self.export(self.hparams.export_dir)
            rank_zero_info(f"CausalLMPretrain: Hugging Face model directory written to {out}")

    def export(self, out_dir: str):
        """Write the current weights and the tokenizer as a Hugging Face directory (see `export.save_hf_dir`)."""
        if self.tokenizer is None:
            raise RuntimeError("CausalLMPretrain.export: no tokenizer attached")
        return save_hf_dir(self.model, self.tokenizer, out_dir)

    def _is_global_zero(self) -> bool:
        return self._trainer is None or self.trainer.is_global_zero
