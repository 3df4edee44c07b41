"""`TextRewriter`: a causal LM that restates each paragraph before the text encoder reads it (an option).

The paper's UNet reads the LLM's hidden states of the paragraph itself. At tiny scale that fails: a 2-layer stand-in
LM trained for minutes does not lay a 150-word paragraph's scene out in its states legibly enough for the UNet,
while the same UNet reads a short canonical scene list well (README, "What we found"). The rewriter is the other
way to use an LLM's understanding: let it *write* what the paragraph describes, greedily, after the paragraph and
a response template ("<paragraph> In short: gray background. small red triangle at top."), and condition the
diffusion model on that restatement. At tiny scale the rewriter is a stage-0 LM trained on paragraph / scene-list
pairs (`LMTextDataModule(summary_splits=..., response_template=...)`); at 7B scale it would be an instruction-tuned
LLM with a prompt in the template. The empty paragraph (the CFG unconditional input) stays empty.

No Lightning import: the pipeline uses it as it is. Frozen: it is not trained with the diffusion model.
"""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

#: written next to the rewriter's weights by `save_pretrained`, read by `from_pretrained`
SETTINGS_FILE = "rewriter.json"


class TextRewriter(nn.Module):
    """Greedy restatements of paragraphs by a causal LM from a Hugging Face directory.

    Args:
        pretrained: the LM's directory (safetensors weights + tokenizer; remote code is never run).
        response_template: appended to each paragraph (trailing spaces dropped); the restatement is what the LM
            writes next, up to its end of text, a line break or a second occurrence of the template.
        max_new_tokens: restatement length cap, in the rewriter's tokens.
        batch_size: paragraphs per generate call.
        max_prompt_tokens: a longer paragraph is cut to its first `max_prompt_tokens` tokens before the template
            is appended (so the cue is never cut off); cuts are counted in `num_truncated`.
        cache_size: restatements kept per paragraph (greedy decoding is deterministic; fixed validation, test and
            stage-3 paragraphs are then rewritten once). 0 disables the cache.
    """

    def __init__(
        self,
        pretrained: str,
        response_template: str = " In short: ",
        max_new_tokens: int = 96,
        batch_size: int = 32,
        max_prompt_tokens: int = 1024,
        cache_size: int = 100_000,
    ) -> None:
        super().__init__()
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = Path(pretrained)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"text_rewriter.pretrained={pretrained}: no config.json there (a causal-LM "
                                    "directory is expected, e.g. the output of experiments/tiny/stage0_rewriter.yaml)")
        if not response_template.strip():
            raise ValueError("text_rewriter.response_template is empty: the LM needs a cue to start its restatement")
        self.pretrained = str(pretrained)
        self.response_template, self.max_new_tokens = response_template, max_new_tokens
        self.batch_size, self.max_prompt_tokens, self.cache_size = batch_size, max_prompt_tokens, cache_size
        self.tokenizer = AutoTokenizer.from_pretrained(pretrained)
        self.tokenizer.padding_side = "left"  # generation continues every row from its last real token
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.lm = AutoModelForCausalLM.from_pretrained(pretrained, use_safetensors=True).eval()
        self.lm.requires_grad_(False)
        self._cache: OrderedDict[str, str] = OrderedDict()
        self.num_truncated = 0

    @torch.no_grad()
    def forward(self, paragraphs: list[str]) -> list[str]:
        """One restatement per paragraph, in order; "" stays "" (the unconditional input)."""
        # eval mode on every call (no dropout): Lightning restores train/eval flags module by module, and a frozen
        # rewriter must restate a paragraph the same way every time
        self.lm.eval()
        todo = list(dict.fromkeys(p for p in paragraphs if p and p not in self._cache))
        fresh: dict[str, str] = {}  # this call's restatements: the bounded cache may already have evicted some
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start : start + self.batch_size]
            fresh.update(zip(chunk, self._generate(chunk)))
        out = [(fresh[p] if p in fresh else self._cache[p]) if p else "" for p in paragraphs]
        for paragraph, text in fresh.items():
            self._remember(paragraph, text)
        return out

    def _remember(self, paragraph: str, text: str) -> None:
        if self.cache_size <= 0:
            return
        self._cache[paragraph] = text
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)  # oldest first: streamed training paragraphs never come back

    def _generate(self, paragraphs: list[str]) -> list[str]:
        ids = self.tokenizer(paragraphs, add_special_tokens=False)["input_ids"]
        long = [i for i, row in enumerate(ids) if len(row) > self.max_prompt_tokens]
        self.num_truncated += len(long)
        paragraphs = list(paragraphs)
        for i in long:
            paragraphs[i] = self.tokenizer.decode(ids[i][: self.max_prompt_tokens])
        prompts = [p + self.response_template.rstrip() for p in paragraphs]
        tok = self.tokenizer(prompts, return_tensors="pt", padding=True)  # (b, T) left-padded
        device = next(self.lm.parameters()).device
        out = self.lm.generate(
            input_ids=tok["input_ids"].to(device), attention_mask=tok["attention_mask"].to(device),
            max_new_tokens=self.max_new_tokens, do_sample=False, num_beams=1,
            pad_token_id=self.tokenizer.pad_token_id, eos_token_id=self.tokenizer.eos_token_id,
        )  # (b, T + new)
        texts = self.tokenizer.batch_decode(out[:, tok["input_ids"].shape[1]:], skip_special_tokens=True)
        cue = self.response_template.strip()
        return [t.split(cue)[0].split("\n")[0].strip() for t in texts]

    def save_pretrained(self, directory: str | Path) -> None:
        """The LM and tokenizer (safetensors) plus `rewriter.json` with the decoding settings."""
        import json

        directory = Path(directory)
        self.lm.save_pretrained(directory, safe_serialization=True)
        self.tokenizer.save_pretrained(directory)
        settings = {"response_template": self.response_template, "max_new_tokens": self.max_new_tokens,
                    "batch_size": self.batch_size, "max_prompt_tokens": self.max_prompt_tokens}
        (directory / SETTINGS_FILE).write_text(json.dumps(settings, indent=1) + "\n")

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> "TextRewriter":
        """Load what `save_pretrained` wrote."""
        import json

        directory = Path(directory)
        settings_path = directory / SETTINGS_FILE
        settings = json.loads(settings_path.read_text()) if settings_path.is_file() else {}
        return cls(str(directory), **settings)
