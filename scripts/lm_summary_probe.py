"""Can the stage-0 LM understand a paragraph at all? Train it to *summarise* paragraphs, then check the summaries.

A diffusion model reads a paragraph through the LM's states; if the LM itself cannot say what a paragraph describes
when it is trained to, its states cannot carry that to the UNet. This probe builds a stage-0 corpus in which every
stage-2/3 paragraph is followed by " In short: " and the oracle scene list of its scene (stage-1 captions as they
are), trains the stage-0 LM on it with the usual recipe, and scores greedy summaries of unseen paragraphs:

    python scripts/lm_summary_probe.py corpus runs/lm_summary/corpus.txt        # ~10 s: 12,000 documents
    paradiffusion fit --config experiments/tiny/stage0_lm.yaml "--data.init_args.splits=[]" \\
        "--data.init_args.text_files=[runs/lm_summary/corpus.txt]" --data.init_args.tokenizer_dir=<tokenizer copy> \\
        --trainer.max_steps=800 --model.init_args.export_dir=runs/lm_summary/hf ...
    python scripts/lm_summary_probe.py eval runs/lm_summary/hf --split val --n 40

`eval` prints one JSON row: the share of exact summaries, of right backgrounds and of objects named exactly
(size, colour, shape and cell), against the oracle scene list. The LM can then be put under a stage-1 UNet with
`scripts/init_checkpoint.py --lm` and given to `scripts/oracle_text_probe.py` (same tokenizer required).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from paradiffusion.parashapes import generate_split
from paradiffusion.parashapes.describe import scene_list  # the oracle description, one definition

CUE = " In short: "


def corpus(out: Path, n_per_split: int) -> int:
    from paradiffusion.lm.text_sources import parashapes_summaries, parashapes_texts

    # stage-1 captions as they are, stage-2/3 paragraphs followed by the cue and their scene lists (what
    # `LMTextDataModule(summary_splits=...)` builds in memory; here written to a file for other trainers)
    docs = parashapes_texts(["stage1"], n_per_split) + parashapes_summaries(["stage2", "stage3"], n_per_split, CUE)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(d.replace("\n", " ") for d in docs) + "\n")
    return len(docs)


class Summariser:
    """Greedy " In short: " continuations of paragraphs by a stage-0 LM trained on the summary corpus."""

    def __init__(self, lm_dir: str, device: str = "cpu", max_new_tokens: int = 80) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tok = AutoTokenizer.from_pretrained(lm_dir)
        self.lm = AutoModelForCausalLM.from_pretrained(lm_dir).eval().to(device)
        self.device, self.max_new_tokens = device, max_new_tokens

    def __call__(self, paragraph: str) -> str:
        """The summary as the LM writes it, up to its end of text or a second cue (e.g. "gray background. ...")."""
        ids = self.tok(paragraph + CUE.rstrip(), return_tensors="pt")["input_ids"].to(self.device)
        with torch.no_grad():
            out = self.lm.generate(ids, max_new_tokens=self.max_new_tokens, do_sample=False,
                                   pad_token_id=self.tok.pad_token_id or 0)
        return self.tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True).split(CUE.strip())[0].strip()


def cells_by_mention_rank(specs, said: list[str]) -> list[float]:
    """Share of the objects the paragraphs mention k-th (k = 0, 1, ...) whose cell the restatement gets right: the
    item naming the object's colour says its cell, read as `score_restatements` reads it (`restated_objects`: as
    many items as the scene has objects, the first of a colour); no such item counts as wrong. The first mentioned
    object is always placed absolutely, so rank 0 shows whether the rewriter reads even explicit cells."""
    from paradiffusion.parashapes.describe import restated_objects

    right: list[int] = []
    total: list[int] = []
    for spec, text in zip(specs, said):
        named = restated_objects(spec, text)
        words = spec.mention_words()
        ranked = sorted((w, i) for i, w in enumerate(words) if w is not None)
        for k, (_, i) in enumerate(ranked):
            if k >= len(total):
                right.append(0), total.append(0)
            total[k] += 1
            obj = spec.objects[i]
            right[k] += obj.color in named and named[obj.color][3] == obj.position
    return [round(r / t, 3) for r, t in zip(right, total)]


def evaluate(lm_dir: str, split: str, n: int, device: str = "cpu") -> dict:
    """Greedy restatements of `n` paragraphs of `split` (batched: `paradiffusion.models.rewriter.TextRewriter`, which
    equals `Summariser` row by row, tests/test_rewriter.py), scored against the oracle scene lists."""
    from paradiffusion.models.rewriter import TextRewriter
    from paradiffusion.parashapes.describe import scene_items, score_restatements

    specs = generate_split(split, n, seed=0)
    said = TextRewriter(lm_dir, response_template=CUE, max_new_tokens=80).to(device)([s.paragraph for s in specs])
    row = score_restatements(zip(specs, said))
    row["cell_by_mention_rank"] = cells_by_mention_rank(specs, said)
    truth = scene_list(specs[0].to_dict())
    example = {"said": ". ".join(scene_items(said[0])[: len(scene_items(truth))]), "truth": ". ".join(scene_items(truth))}
    return {"lm": lm_dir, "split": split, **row, "example": example}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("corpus", help="write the paragraph + summary corpus (.txt, a document per line)")
    c.add_argument("out", type=Path)
    c.add_argument("--n_per_split", type=int, default=4000)
    e = sub.add_parser("eval", help="greedy summaries of --n paragraphs of --split, scored against the scene list")
    e.add_argument("lm", help="a stage-0 model directory")
    e.add_argument("--split", default="val")
    e.add_argument("--n", type=int, default=40)
    e.add_argument("--device", default="cpu", help="e.g. cuda")
    a = p.parse_args()
    if a.cmd == "corpus":
        print(f"{corpus(a.out, a.n_per_split)} documents -> {a.out}")
    else:
        print(json.dumps(evaluate(a.lm, a.split, a.n, a.device)))


if __name__ == "__main__":
    main()
