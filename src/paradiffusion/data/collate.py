"""Batching: stack images into ``[-1, 1]`` pixel values and tokenise the paragraphs (dynamic padding)."""
from __future__ import annotations

from typing import Any

import torch

from paradiffusion.data.text_cache import TextStateCache
from paradiffusion.models.text_encoder import tokenize_paragraphs


class ParagraphCollator:
    """Picklable collate function, so it also works in DataLoader worker processes.

    Pads to the longest paragraph *in the batch* (not to ``max_length``): paragraphs vary from 5 to 400 tokens and
    padding everything to 512 would multiply the LLM's cost. Truncation is counted per batch (``num_truncated``) so
    the module can log it; it is never silent.

    With a text-state `cache`, each batch also carries the frozen prefix's states of its paragraphs
    (``prefix_states (B, T, H)``, padded like ``input_ids``), so the model skips the frozen LLM blocks. Item keys
    beyond ``image``, ``text`` and ``id`` that every item of the batch has come along as lists (e.g. ``spec``).
    """

    def __init__(self, tokenizer: Any, max_length: int = 512, padding: str = "longest",
                 cache: TextStateCache | None = None):
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.padding = padding
        self.cache = cache

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        out = tokenize_paragraphs(self.tokenizer, texts, self.max_length, self.padding)
        out["num_truncated"] = out.pop("truncated").sum()
        return out

    def __call__(self, items: list[dict]) -> dict[str, Any]:
        images = torch.stack([it["image"] for it in items])  # (B, 3, R, R) in [0, 1]
        batch: dict[str, Any] = {
            "pixel_values": images * 2.0 - 1.0,  # the model trains in [-1, 1]
            "text": [it["text"] for it in items],
            "id": [it["id"] for it in items],
            **self.tokenize([it["text"] for it in items]),
        }
        states = self.cache.batch_states(batch["text"], batch["attention_mask"]) if self.cache is not None else None
        if states is not None:  # else the model runs the frozen LLM blocks itself
            batch["prefix_states"] = states  # (B, T, H)
        # anything else every item carries (a benchmark's scene "spec", ...) rides along as a list
        for key in sorted(set.intersection(*(set(it) for it in items)) - set(batch) - {"image"}):
            batch[key] = [it[key] for it in items]
        return batch
