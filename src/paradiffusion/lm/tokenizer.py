"""Byte-level BPE tokenizer for the stage-0 language model.

Trained with `tokenizers` on paragraph text and wrapped as a transformers fast tokenizer that behaves like
Llama-2-7b-hf's: a BOS token is prepended to every sequence, no EOS is appended, padding is on the right.
Unlike Llama-2 it has a real pad token, so batching needs no `pad_token = eos_token` trick.

The special tokens take the first ids in Llama's order (`<unk>`=0, `<s>`=1, `</s>`=2) and `<pad>`=3, so a
`LlamaConfig` can name them by constant (see `SPECIAL_IDS`).
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

UNK, BOS, EOS, PAD = "<unk>", "<s>", "</s>", "<pad>"
SPECIAL_TOKENS = [UNK, BOS, EOS, PAD]
SPECIAL_IDS = {"unk_token_id": 0, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 3}


def train_bpe_tokenizer(
    texts: Iterable[str],
    vocab_size: int = 2048,
    min_frequency: int = 2,
    model_max_length: int = 512,
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on `texts` and wrap it Llama-style.

    Deterministic: the same texts in the same order give the same vocabulary and merges (the BPE trainer
    breaks frequency ties by token, not by hash order).
    `vocab_size` includes the 256 byte symbols and the 4 special tokens; the trainer stops earlier when no pair
    reaches `min_frequency`, which happens on small, templated corpora such as ParaShapes.
    """
    if vocab_size < 256 + len(SPECIAL_TOKENS):
        raise ValueError(f"vocab_size={vocab_size} is below the 256 bytes + {len(SPECIAL_TOKENS)} special tokens")
    tok = Tokenizer(models.BPE(unk_token=UNK))
    # add_prefix_space: the first word of a paragraph gets the same tokens as the same word mid-sentence
    # (Llama's SentencePiece does the same with its "▁" prefix).
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    # Decoding drops the one space add_prefix_space put in front (Fuse first, so only the paragraph's first
    # space goes, as with Llama's decoder), so decode(encode(text)) == text.
    tok.decoder = decoders.Sequence([decoders.ByteLevel(), decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS,  # ids 0..3 in this order
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte is encodable: no <unk> in practice
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    for name, idx in zip(SPECIAL_TOKENS, SPECIAL_IDS.values()):
        assert tok.token_to_id(name) == idx, (name, tok.token_to_id(name))
    # Llama-2: "<s> text" for one sequence, no EOS (generation and the text encoder both expect this).
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, SPECIAL_IDS["bos_token_id"])]
    )
    return wrap(tok, model_max_length=model_max_length)


def wrap(tok: Tokenizer, model_max_length: int = 512) -> PreTrainedTokenizerFast:
    """Wrap a trained `tokenizers.Tokenizer` as a transformers fast tokenizer with Llama-like settings."""
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        pad_token=PAD,
        add_bos_token=True,
        add_eos_token=False,
        padding_side="right",
        truncation_side="right",
        model_max_length=model_max_length,
        clean_up_tokenization_spaces=False,
    )


def load_tokenizer(directory: str | Path) -> PreTrainedTokenizerBase:
    """Load a saved tokenizer offline, naming the directory when it is not one."""
    directory = Path(directory)
    if not (directory / "tokenizer.json").is_file():
        raise FileNotFoundError(f"{directory}: no tokenizer.json here (not a saved tokenizer directory)")
    return AutoTokenizer.from_pretrained(str(directory), local_files_only=True)


def tokenizer_files(tokenizer: PreTrainedTokenizerBase, tmp_dir: str | Path) -> dict[str, str]:
    """The saved tokenizer files as {name: text}, so a checkpoint can carry the tokenizer with the weights."""
    tokenizer.save_pretrained(str(tmp_dir))
    return {p.name: p.read_text(encoding="utf-8") for p in sorted(Path(tmp_dir).iterdir()) if p.is_file()}


def write_tokenizer_files(files: dict[str, str], directory: str | Path) -> None:
    """Inverse of `tokenizer_files`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(text, encoding="utf-8")
