"""A disk cache of frozen text states: run the frozen part of the LLM once per paragraph, not once per step.

PixArt-α/Σ extract their T5 features offline; we do the same for the frozen prefix of the decoder-only LLM
(`LLMTextEncoder.encode_prefix`: the first `prefix_blocks` blocks). Training then reads the states from disk and
runs only the trainable top blocks (LoRA), the final norm and the projection.

Layout of a cache directory::

    DIR/meta.json              what the states were computed with (LM fingerprint, tokenizer, blocks, max_length)
    DIR/shard-00000.npy        float16 (tokens, D): the states of many paragraphs, one after another
    DIR/shard-00000.json       written last: {"tokens": N, "dim": D, "entries": {paragraph hash: [offset, length]}}

A shard counts only once its index exists and the array it names has the declared shape, so a build killed
mid-write leaves nothing that is read as valid; the next build recomputes what that shard held (resumable).
A directory built for another LM, tokenizer, prefix depth or token cap is refused with the differing fields named.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch

log = logging.getLogger(__name__)

FORMAT = 1


class StaleCacheError(ValueError):
    """The cache directory holds states computed with another model or setting."""


def text_key(text: str) -> str:
    """Paragraph hash: the index key (128 bits of SHA-1 of the UTF-8 text)."""
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:32]


def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    write(tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


class TextStateCache:
    """Frozen text states by paragraph, memory-mapped from fp16 shards.

    Args:
        root: the cache directory (created when missing).
        identity: what the states depend on (`LLMTextEncoder.cache_identity()`); stored in `meta.json` and
            compared on every open.
        rebuild: on an identity mismatch, delete the old states and start over instead of refusing.
    """

    def __init__(self, root: str | os.PathLike, identity: dict, rebuild: bool = False) -> None:
        self.root = Path(root)
        self.identity = {"format": FORMAT, **identity}
        self.root.mkdir(parents=True, exist_ok=True)
        meta = self.root / "meta.json"
        if meta.is_file():
            try:
                stored = json.loads(meta.read_text())
            except json.JSONDecodeError as e:
                raise StaleCacheError(f"text cache {self.root}: meta.json is not valid JSON ({e}); delete the directory") from e
            diff = sorted(k for k in set(stored) | set(self.identity) if stored.get(k) != self.identity.get(k))
            if diff:
                detail = "; ".join(f"{k}: cached {stored.get(k)!r}, now {self.identity.get(k)!r}" for k in diff)
                if not rebuild:
                    raise StaleCacheError(
                        f"text cache {self.root} was built with other settings ({detail}). Use another cache "
                        f"directory, delete this one, or pass rebuild=True (data.text_cache_rebuild=true)")
                log.warning("text cache %s: rebuilding (%s)", self.root, detail)
                for f in self.root.glob("shard-*"):
                    f.unlink()
                meta.unlink()
        if not meta.is_file():
            _atomic_write(meta, lambda p: p.write_text(json.dumps(self.identity, indent=2, sort_keys=True)))
        self._index: dict[str, tuple[int, int, int]] = {}  # key -> (shard, offset, length)
        self._arrays: dict[int, np.ndarray] = {}
        self._shards: list[int] = []
        self.discarded = 0
        self._scan()

    # ------------------------------------------------------------------ reading
    def _scan(self) -> None:
        """Index every complete shard; drop partial ones (an array without its index, or a short array)."""
        complete = set()
        for idx_file in sorted(self.root.glob("shard-*.json")):
            n = int(idx_file.stem.split("-")[1])
            arr_file = idx_file.with_suffix(".npy")
            try:
                index = json.loads(idx_file.read_text())
                arr = np.load(arr_file, mmap_mode="r")
                if arr.shape != (index["tokens"], index["dim"]) or arr.dtype != np.float16:
                    raise ValueError(f"array shape {arr.shape} {arr.dtype}, index says ({index['tokens']}, {index['dim']})")
            except (OSError, ValueError, KeyError, json.JSONDecodeError) as e:
                log.warning("text cache %s: shard %s is incomplete or corrupt (%s); its paragraphs are recomputed",
                            self.root, idx_file.name, e)
                self.discarded += 1
                idx_file.unlink(missing_ok=True)
                arr_file.unlink(missing_ok=True)
                continue
            complete.add(n)
            self._arrays[n] = arr
            for key, (offset, length) in index["entries"].items():
                self._index[key] = (n, offset, length)
        for arr_file in self.root.glob("shard-*.npy"):  # an array whose index was never written: a killed build
            if int(arr_file.stem.split("-")[1]) not in complete:
                log.warning("text cache %s: %s has no index (a build stopped while writing it); removed",
                            self.root, arr_file.name)
                self.discarded += 1
                arr_file.unlink()
        for tmp in self.root.glob("*.tmp*"):
            tmp.unlink()
        self._shards = sorted(complete)

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, text: str) -> bool:
        return text_key(text) in self._index

    def missing(self, texts: Iterable[str]) -> list[str]:
        """The distinct paragraphs of `texts` that have no states yet, in first-seen order."""
        seen, out = set(), []
        for t in texts:
            k = text_key(t)
            if k not in self._index and k not in seen:
                seen.add(k)
                out.append(t)
        return out

    def get(self, text: str) -> torch.Tensor:
        """States of one paragraph, `(T, D)` float16 (a copy: safe to batch and move)."""
        try:
            shard, offset, length = self._index[text_key(text)]
        except KeyError:
            raise KeyError(f"text cache {self.root}: no states for paragraph {text[:60]!r}... (build the cache over "
                           "every text the run reads: `paradiffusion cache-text` or data.text_cache)") from None
        return torch.from_numpy(np.array(self._arrays[shard][offset: offset + length]))

    def batch_states(self, texts: Sequence[str], attention_mask: torch.Tensor) -> torch.Tensor | None:
        """The cached states of a tokenised batch, padded like it: `(B, T, H)` float32, or `None` when any paragraph
        is not cached (the caller then runs the frozen blocks). A length that disagrees with `attention_mask (B, T)`
        means the cache was built with another tokenizer or token cap: refused."""
        if not all(t in self for t in texts):
            return None
        states, mask = pad_states([self.get(t) for t in texts], attention_mask.shape[1])  # (B, T, H), (B, T)
        if not torch.equal(mask, attention_mask.to(mask.dtype)):
            raise ValueError(f"text cache {self.root}: cached lengths differ from the tokenizer's for "
                             f"{texts[0][:40]!r}...: the cache was built with another tokenizer or max_length")
        return states

    # ------------------------------------------------------------------ writing
    def _write_shard(self, rows: list[tuple[str, np.ndarray]]) -> None:
        n = (self._shards[-1] + 1) if self._shards else 0
        while (self.root / f"shard-{n:05d}.json").exists():
            n += 1
        data = np.concatenate([a for _, a in rows]).astype(np.float16)  # (tokens, D)
        entries, offset = {}, 0
        for key, a in rows:
            entries[key] = [offset, int(a.shape[0])]
            offset += int(a.shape[0])
        arr_file, idx_file = self.root / f"shard-{n:05d}.npy", self.root / f"shard-{n:05d}.json"

        def save_array(p: Path) -> None:
            with open(p, "wb") as f:
                np.save(f, data)

        _atomic_write(arr_file, save_array)
        index = {"tokens": int(data.shape[0]), "dim": int(data.shape[1]), "entries": entries}
        _atomic_write(idx_file, lambda p: p.write_text(json.dumps(index)))  # last: the shard now counts
        self._arrays[n] = np.load(arr_file, mmap_mode="r")
        for key, (off, length) in entries.items():
            self._index[key] = (n, off, length)
        self._shards.append(n)

    @torch.no_grad()
    def build(
        self,
        texts: Sequence[str],
        tokenize: Callable[[list[str]], dict[str, torch.Tensor]],
        encode: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        batch_size: int = 16,
        shard_size: int = 512,
        device: torch.device | str = "cpu",
        progress: bool = True,
    ) -> int:
        """Compute and store the states of every paragraph of `texts` not cached yet; returns how many were added.

        Paragraphs are sorted by token length and batched (length buckets: little padding), written in shards
        of `shard_size` paragraphs, each durable once written (a killed build resumes from the last shard).
        """
        todo = self.missing(texts)
        if not todo:
            return 0
        lengths = tokenize(todo)["attention_mask"].sum(1).tolist()  # (N,)
        order = sorted(range(len(todo)), key=lambda i: lengths[i])
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), desc=f"text cache {self.root.name}", unit="para", disable=not progress,
                   mininterval=2.0)
        pending: list[tuple[str, np.ndarray]] = []
        tokens, started = 0, time.time()
        for start in range(0, len(order), batch_size):
            chunk = [todo[i] for i in order[start: start + batch_size]]
            tok = tokenize(chunk)
            ids, mask = tok["input_ids"].to(device), tok["attention_mask"].to(device)  # (b, T), (b, T)
            states = encode(ids, mask).to("cpu", torch.float16).numpy()  # (b, T, D)
            for text, row, m in zip(chunk, states, tok["attention_mask"]):
                pending.append((text_key(text), row[: int(m.sum())]))  # real tokens only (right padding)
            tokens += int(tok["attention_mask"].sum())
            bar.update(len(chunk))
            bar.set_postfix(tok_per_s=f"{tokens / max(1e-9, time.time() - started):.0f}")
            if len(pending) >= shard_size:
                self._write_shard(pending)
                pending = []
        if pending:
            self._write_shard(pending)
        bar.close()
        log.info("text cache %s: %d paragraphs (%d tokens) in %.0f s", self.root, len(todo), tokens, time.time() - started)
        return len(todo)


def pad_states(rows: Sequence[torch.Tensor], length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-paragraph `(T_i, D)` states -> right-padded `(B, T, D)` float32 and mask `(B, T)` (as the tokenizer pads);
    `length` pads to that many positions instead of the longest row."""
    length = length or max(r.shape[0] for r in rows)
    out = torch.zeros(len(rows), length, rows[0].shape[1])  # (B, T, D)
    mask = torch.zeros(len(rows), length, dtype=torch.long)  # (B, T)
    for i, r in enumerate(rows):
        out[i, : r.shape[0]] = r.float()
        mask[i, : r.shape[0]] = 1
    return out, mask


def open_text_cache(root: str | os.PathLike, encoder, rebuild: bool = False) -> TextStateCache:
    """The cache of `encoder`'s frozen prefix under `root`: one subdirectory per LM, prefix depth and token cap
    (so stages and runs that share them share the states, and others never collide)."""
    identity = encoder.cache_identity()
    name = f"{identity['lm']}-p{identity['prefix_blocks']}-L{identity['max_length']}"
    return TextStateCache(Path(root) / name, identity, rebuild=rebuild)
