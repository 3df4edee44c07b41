"""Sentence context for a causal LLM's token states.

A decoder-only LLM's state for a token has seen only the words before it, so in "In the top-left corner there is a
large red circle" the tokens of *corner* know nothing of the circle, and a small LLM's early layers move little of a
sentence into any one token. Cross-attention then has to find the cell and the colour in different tokens, a two-hop
read that one attention layer cannot make. Giving every token the mean state of its own sentence (bidirectional,
parameter-free) puts what one sentence says about an object into every token of that sentence; segment-level
encoding of long text (LongAlign, Liu et al. 2024) and bidirectional refiners on LLM states (LI-DiT, Sana) answer the
same problem. `LLMTextEncoder(sentence_context=True)` adds it; `scripts/reader_probe.py --context sentence` measures
it.
"""
from __future__ import annotations

import torch

#: characters that end a sentence when a token's text ends with one of them (closing quotes/brackets aside)
_ENDS = ".!?"
_CLOSERS = "\"')]»”’"


def sentence_end_table(tokenizer) -> torch.Tensor:
    """`(V,)` bool over the tokenizer's vocabulary: True for tokens whose text ends a sentence (".", "!", "?",
    possibly followed by closing quotes or brackets), e.g. `.`, `).`, `?"`. Newline-only tokens do not end one."""
    size = max(len(tokenizer), max(tokenizer.get_vocab().values()) + 1)
    table = torch.zeros(size, dtype=torch.bool)
    for token, i in tokenizer.get_vocab().items():
        text = tokenizer.convert_tokens_to_string([token]).strip().rstrip(_CLOSERS)
        table[i] = bool(text) and text[-1] in _ENDS
    return table


def sentence_ids(input_ids: torch.Tensor, ends: torch.Tensor) -> torch.Tensor:
    """`input_ids (B, T)` → `(B, T)` long: the index of the sentence each token belongs to (0, 1, …); a token that
    ends a sentence belongs to the sentence it ends."""
    is_end = ends.to(input_ids.device)[input_ids].long()  # (B, T)
    return is_end.cumsum(1) - is_end  # (B, T)


def sentence_mean(hidden: torch.Tensor, sentence: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Each token's state replaced by the mean state of the real (unmasked) tokens of its sentence.

    `hidden (B, T, H)`, `sentence (B, T)` from `sentence_ids`, `attention_mask (B, T)` → `(B, T, H)`.
    Padding never enters a mean; a padded position gets its own (padding) sentence's mean or zeros."""
    real = attention_mask.bool()  # (B, T)
    same = (sentence[:, :, None] == sentence[:, None, :]) & real[:, None, :]  # (B, T, T): query token, key token
    weights = same.to(hidden.dtype)
    weights = weights / weights.sum(-1, keepdim=True).clamp(min=1.0)  # rows sum to 1 over the sentence's tokens
    return weights @ hidden  # (B, T, H)
