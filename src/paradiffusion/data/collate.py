"""Batching: stack images into ``[-1, 1]`` pixel values and tokenise the paragraphs (dynamic padding)."""
from __future__ import annotations

from typing import Any

import torch


class ParagraphCollator:
    """Picklable collate function, so it also works in DataLoader worker processes.

    Pads to the longest paragraph *in the batch* (not to ``max_length``): paragraphs vary from 5 to 400 tokens and
    padding everything to 512 would multiply the LLM's cost. Truncation is counted per batch (``num_truncated``) so
    the module can log it; it is never silent.
    """

    def __init__(self, tokenizer: Any, max_length: int = 512):
        self.tokenizer = tokenizer
        self.max_length = max_length

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        ids = self.tokenizer(list(texts), add_special_tokens=True, truncation=False)["input_ids"]
        num_truncated = sum(len(x) > self.max_length for x in ids)
        ids = [x[: self.max_length] for x in ids]
        longest = max(len(x) for x in ids)
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        input_ids = torch.full((len(ids), longest), pad_id, dtype=torch.long)  # (B, T)
        attention_mask = torch.zeros((len(ids), longest), dtype=torch.long)  # (B, T)
        for i, x in enumerate(ids):  # right padding: causal LMs' real tokens never see the pads
            input_ids[i, : len(x)] = torch.tensor(x, dtype=torch.long)
            attention_mask[i, : len(x)] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask,
                "num_truncated": torch.tensor(num_truncated, dtype=torch.long)}

    def __call__(self, items: list[dict]) -> dict[str, Any]:
        images = torch.stack([it["image"] for it in items])  # (B, 3, R, R) in [0, 1]
        batch: dict[str, Any] = {
            "pixel_values": images * 2.0 - 1.0,  # the model trains in [-1, 1]
            "text": [it["text"] for it in items],
            "id": [it["id"] for it in items],
            **self.tokenize([it["text"] for it in items]),
        }
        if all("spec" in it for it in items):
            batch["spec"] = [it["spec"] for it in items]
        return batch
