"""`LMTextDataModule`: paragraph text -> tokenizer -> packed fixed-length blocks for causal-LM pretraining."""
from __future__ import annotations

import math
import random
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import DataLoader, Dataset
from transformers import PreTrainedTokenizerBase

from paradiffusion.lm.text_sources import TextFiles, TextSource
from paradiffusion.lm.tokenizer import load_tokenizer, train_bpe_tokenizer


class PackedBlocks(Dataset):
    """Fixed-length token blocks; labels equal inputs (the HF causal-LM loss shifts them itself), except where
    `labels` is given: -100 marks padding the loss ignores (document packing)."""

    def __init__(self, blocks: torch.Tensor, labels: torch.Tensor | None = None):
        self.blocks = blocks  # (N, seq_len) long
        self.labels = blocks if labels is None else labels  # (N, seq_len) long, -100 = ignored

    def __len__(self) -> int:
        return self.blocks.shape[0]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.blocks[i], "labels": self.labels[i]}


class LMTextDataModule(L.LightningDataModule):
    """Text for the stage-0 LM: the documents of injected text sources and/or plain text files.

    Args:
        sources: `TextSource`s (`paradiffusion.lm.text_sources`), wired by class path in a config, e.g. a
            benchmark's paragraphs (ParaShapes' `ParaShapesText`, which refuses its evaluation splits).
        seed: the seed of the document-level train/val split.
        text_files: extra corpora: `.txt` (a document per line), `.jsonl` / `.csv` (field `text_field`).
        tokenizer_dir: load the tokenizer from here if it holds one; otherwise train one and save it here.
            `None`: train in memory (deterministic, so every DDP rank gets the same one).
        bpe_vocab_size, bpe_min_frequency: BPE training settings (ignored when the tokenizer is loaded). The
            trainer stops below bpe_vocab_size when no pair is frequent enough; the model takes the real size.
        seq_len: tokens per packed training block.
        packing: "stream" concatenates all documents and cuts blocks wherever seq_len falls (no padding; a
            document may start in one block and end in the next). "document" puts whole documents into blocks
            (first come, as many as fit) and pads the rest, so every token sees its document from the start;
            needed when the end of a document depends on its beginning (e.g. a prompt followed by its response).
            A document longer than seq_len is cut to seq_len, and counted.
        response_template: in every document that contains it, the loss scores only the tokens after its first
            occurrence (the response), as in instruction tuning; the prompt is context only. Documents without
            it are scored whole. Needs packing="document" (a response must share its block with its prompt).
        val_fraction: share of documents (not blocks) held out for validation, so val text is unseen text.
        model_max_length: the tokenizer's `model_max_length` (what the text encoder truncates to by default).
    """

    def __init__(
        self,
        sources: Sequence[TextSource] = (),
        seed: int = 0,
        text_files: Sequence[str] = (),
        text_field: str = "text",
        tokenizer_dir: str | None = None,
        bpe_vocab_size: int = 2048,
        bpe_min_frequency: int = 2,
        seq_len: int = 256,
        val_fraction: float = 0.05,
        batch_size: int = 16,
        num_workers: int = 0,
        model_max_length: int = 512,
        packing: str = "stream",
        response_template: str | None = None,
    ):
        super().__init__()
        if not sources and not text_files:
            raise ValueError("data: no text source (sources and text_files are both empty)")
        if response_template and packing != "document":
            raise ValueError("data.response_template needs data.packing='document': with stream packing a response "
                             "can land in another block than its prompt")
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"data.val_fraction={val_fraction}: expected 0 < val_fraction < 1")
        if packing not in ("stream", "document"):
            raise ValueError(f"data.packing={packing!r}: expected 'stream' or 'document'")
        # sources are objects: LightningCLI's config.yaml records them; checkpoints must not pickle them
        self.save_hyperparameters(ignore=["sources"])
        self.sources: list[TextSource] = [*sources, *([TextFiles(text_files, text_field)] if text_files else [])]
        self.tokenizer: PreTrainedTokenizerBase | None = None
        self.train_set: PackedBlocks | None = None
        self.val_set: PackedBlocks | None = None
        self.unigram_ppl: float | None = None  # baseline: val perplexity of the train unigram distribution
        self.stats: dict[str, int] = {}
        self._docs: tuple[list[str], list[str]] | None = None

    # --- text -------------------------------------------------------------------------------------------
    def documents(self) -> tuple[list[str], list[str]]:
        """(train, val) documents, split at document level with a fixed seed."""
        if self._docs is None:
            hp = self.hparams
            docs = [d for source in self.sources for d in source.documents() if d]
            random.Random(hp.seed).shuffle(docs)
            n_val = max(1, round(len(docs) * hp.val_fraction))
            if len(docs) - n_val < 1:
                raise ValueError(f"data: only {len(docs)} documents; need at least 2 for a train/val split")
            self._docs = (docs[n_val:], docs[:n_val])
        return self._docs

    def build_tokenizer(self) -> PreTrainedTokenizerBase:
        hp = self.hparams
        if hp.tokenizer_dir is not None and (Path(hp.tokenizer_dir) / "tokenizer.json").is_file():
            return load_tokenizer(hp.tokenizer_dir)
        # Trained on training documents only: validation text stays unseen by every learnt part.
        tok = train_bpe_tokenizer(
            self.documents()[0], hp.bpe_vocab_size, hp.bpe_min_frequency, hp.model_max_length
        )
        if hp.tokenizer_dir is not None:
            tok.save_pretrained(hp.tokenizer_dir)
        return tok

    # --- Lightning hooks ----------------------------------------------------------------------------------
    def prepare_data(self) -> None:
        # Rank 0 only: write the tokenizer once so DDP ranks load the same files in `setup`.
        if self.hparams.tokenizer_dir is not None:
            self.build_tokenizer()

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return  # fit then validate/test: keep what is built
        self.tokenizer = self.build_tokenizer()
        train_docs, val_docs = self.documents()
        pack = self._pack_stream if self.hparams.packing == "stream" else self._pack_documents
        self.train_set, self.val_set = pack(train_docs, "train"), pack(val_docs, "val")
        self.unigram_ppl = unigram_perplexity(self.train_set.labels, self.val_set.labels, len(self.tokenizer))
        self.stats = {
            "train_docs": len(train_docs), "val_docs": len(val_docs),
            "train_tokens": int((self.train_set.labels != -100).sum()), "val_tokens": int((self.val_set.labels != -100).sum()),
            "train_blocks": len(self.train_set), "val_blocks": len(self.val_set), "vocab_size": len(self.tokenizer),
        }  # fmt: skip

    def _doc_ids(self, docs: list[str]) -> list[list[int]]:
        """`<s> doc </s>` token ids per document."""
        return [ids for ids, _ in self._doc_ids_and_labels(docs)]

    def _doc_ids_and_labels(self, docs: list[str]) -> list[tuple[list[int], list[int]]]:
        """`<s> doc </s>` token ids per document and their labels: the ids, or -100 up to the end of
        `response_template` in documents that contain it (the prompt is context, not a target)."""
        assert self.tokenizer is not None
        template = self.hparams.response_template
        # add_special_tokens=True prepends BOS (Llama-style); EOS is appended so the LM learns where text ends.
        enc = self.tokenizer(docs, add_special_tokens=True, return_offsets_mapping=bool(template))
        out = []
        for i, doc in enumerate(enc["input_ids"]):
            ids = [*doc, self.tokenizer.eos_token_id]
            labels = list(ids)
            at = docs[i].find(template) if template else -1
            if at >= 0:
                prompt_end = at + len(template)
                # a token is part of the prompt if it ends inside it (BOS has the empty span (0, 0))
                n_prompt = sum(1 for start, end in enc["offset_mapping"][i] if end <= prompt_end)
                labels[:n_prompt] = [-100] * n_prompt
            out.append((ids, labels))
        return out

    def _pack_stream(self, docs: list[str], name: str) -> PackedBlocks:
        """All documents concatenated and cut into (N, seq_len) blocks; the tail short of a block is dropped."""
        seq_len = self.hparams.seq_len
        ids = torch.tensor([t for doc in self._doc_ids(docs) for t in doc], dtype=torch.long)  # (n_tokens,)
        if ids.numel() < seq_len:
            raise ValueError(
                f"data: the {name} text has {ids.numel()} tokens, fewer than one block of seq_len={seq_len}; "
                f"add text (sources, text_files) or lower seq_len / raise val_fraction"
            )
        return PackedBlocks(ids[: len(ids) // seq_len * seq_len].view(-1, seq_len))

    def _pack_documents(self, docs: list[str], name: str) -> PackedBlocks:
        """Whole documents per block, in order, padded: (N, seq_len) ids and labels (-100 on padding)."""
        seq_len, pad = self.hparams.seq_len, self.tokenizer.pad_token_id
        blocks: list[list[int]] = [[]]
        block_labels: list[list[int]] = [[]]
        cut = 0
        for doc, doc_labels in self._doc_ids_and_labels(docs):
            if len(doc) > seq_len:
                doc, doc_labels, cut = doc[:seq_len], doc_labels[:seq_len], cut + 1
            if len(blocks[-1]) + len(doc) > seq_len:
                blocks.append([])
                block_labels.append([])
            blocks[-1].extend(doc)
            block_labels[-1].extend(doc_labels)
        if cut:
            # Skipping would bias the corpus towards short documents; cutting keeps each one's beginning.
            rank_zero_warn(f"data: {cut} of {len(docs)} {name} documents are longer than seq_len={seq_len} tokens "
                           f"and were cut to it; raise seq_len to keep them whole")
        ids = torch.full((len(blocks), seq_len), pad, dtype=torch.long)
        labels = torch.full((len(blocks), seq_len), -100, dtype=torch.long)
        for i, (block, block_label) in enumerate(zip(blocks, block_labels)):
            ids[i, : len(block)] = torch.tensor(block)
            labels[i, : len(block)] = torch.tensor(block_label)
        return PackedBlocks(ids, labels)

    def train_dataloader(self) -> DataLoader:
        assert self.train_set is not None, "call setup() first"
        return DataLoader(
            self.train_set, batch_size=self.hparams.batch_size, shuffle=True, drop_last=True,
            num_workers=self.hparams.num_workers, persistent_workers=self.hparams.num_workers > 0,
        )  # fmt: skip

    def val_dataloader(self) -> DataLoader:
        assert self.val_set is not None, "call setup() first"
        # its own generator: drawn from the global one, every validation would reshuffle later training batches
        return DataLoader(self.val_set, batch_size=self.hparams.batch_size, num_workers=self.hparams.num_workers,
                          generator=torch.Generator().manual_seed(self.hparams.seed))


def unigram_perplexity(train: torch.Tensor, val: torch.Tensor, vocab_size: int) -> float:
    """Perplexity on the val targets of the add-one-smoothed train unigram distribution.

    The baseline a causal LM must beat clearly to have learnt anything beyond token frequencies. `train`/`val`
    are label blocks (N, T) with -100 on padding; targets are positions 1.. of each block, the tokens the LM's
    loss scores.
    """
    train = train[train != -100]
    counts = torch.bincount(train, minlength=vocab_size).double() + 1.0
    logp = counts.log() - counts.sum().log()
    targets = val[:, 1:].flatten()
    return math.exp(-logp[targets[targets != -100]].mean().item())

