"""Typed LoRA settings for the LLM text encoder (jsonargparse-friendly; converted to a PEFT `LoraConfig`)."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class LoRASettings:
    """LoRA on the LLM's attention projections.

    Defaults follow the usual LLM LoRA recipe (q, k, v, o). `B` is initialised to zero by PEFT, so at
    initialisation the adapted encoder equals the base model exactly.
    """

    r: int = 16
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])

    def to_peft(self, layers_to_transform: list[int] | None = None):  # -> peft.LoraConfig (local import: slow)
        """`layers_to_transform`: adapt only these decoder blocks (the top ones, above a cached frozen prefix)."""
        from peft import LoraConfig

        return LoraConfig(
            layers_to_transform=layers_to_transform,
            r=self.r,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules=list(self.target_modules),
            bias="none",
        )
