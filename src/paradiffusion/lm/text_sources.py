"""Where the stage-0 language model's text comes from: ParaShapes writers and plain text files.

Kept apart from the DataModule so the rule that matters most here lives in one place: the evaluation splits'
phrasing (`heldout`, and `test`) is never language-model training text. `heldout` measures generalisation
to phrasings nobody trained on; if the LM had seen them, its hidden states would carry that advantage into
every later stage.
"""
from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

from paradiffusion.jsonl import iter_jsonl

# ParaShapes splits whose text the LM must never see (see module docstring).
EVAL_ONLY_SPLITS = frozenset({"heldout", "test"})
TEXT_SUFFIXES = (".txt", ".jsonl", ".csv")


def check_splits(splits: Sequence[str]) -> None:
    """Refuse evaluation splits before any text is generated."""
    bad = sorted(set(splits) & EVAL_ONLY_SPLITS)
    if bad:
        raise ValueError(
            f"data.splits: {bad} is evaluation-only; its phrasing must not be used for language-model training "
            f"(use stage1/stage2/stage3/val)"
        )


def parashapes_texts(splits: Sequence[str], n_per_split: int, seed: int = 0) -> list[str]:
    """Paragraphs of `n_per_split` ParaShapes scenes from each split, in a fixed order."""
    check_splits(splits)
    if not splits:
        return []
    from paradiffusion.parashapes import generate_split  # imported late: only this source needs it

    texts: list[str] = []
    for split in splits:
        texts += [spec.paragraph for spec in generate_split(split, n_per_split, seed=seed)]
    return texts


def parashapes_summaries(splits: Sequence[str], n_per_split: int, response_template: str, seed: int = 0,
                         order: str = "spec") -> list[str]:
    """Instruction documents: each paragraph, `response_template`, then its scene's canonical scene list (objects in
    `order`, see `paradiffusion.parashapes.describe.scene_list`).

    What teaches a stage-0 LM to restate paragraphs (the tiny stand-in for an instruction-tuned LLM; see
    `paradiffusion.models.rewriter`). The scenes are those of `parashapes_texts` with the same seed."""
    check_splits(splits)
    from paradiffusion.parashapes import generate_split
    from paradiffusion.parashapes.describe import scene_list

    return [spec.paragraph + response_template + scene_list(spec, order)
            for split in splits for spec in generate_split(split, n_per_split, seed=seed)]


def file_texts(path: str | Path, text_field: str = "text") -> list[str]:
    """Documents of one file: `.txt` one per non-empty line, `.jsonl`/`.csv` the `text_field` of each record.

    Errors name the file, the line and the field.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (data.text_files)")
    suffix = path.suffix.lower()
    if suffix not in TEXT_SUFFIXES:
        raise ValueError(f"{path}: unsupported text file type {suffix!r}; expected one of {TEXT_SUFFIXES}")
    with path.open(encoding="utf-8", newline="") as f:
        if suffix == ".txt":
            return [line.strip() for line in f if line.strip()]
        if suffix == ".csv":
            reader = csv.DictReader(f)
            if reader.fieldnames is None or text_field not in reader.fieldnames:
                raise ValueError(f"{path}:1: no column {text_field!r} (columns: {reader.fieldnames})")
            # line numbers: header is line 1; a record may span lines, so report the reader's own count
            return [_text(row[text_field], path, reader.line_num, text_field) for row in reader]
        texts = []
        for lineno, record in iter_jsonl(f, path):
            if text_field not in record:
                raise ValueError(f"{path}:{lineno}: field {text_field!r} missing")
            texts.append(_text(record[text_field], path, lineno, text_field))
        return texts


def _text(value: object, path: Path, lineno: int, field: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{path}:{lineno}: field {field!r} is {type(value).__name__}, expected a string")
    return value.strip()
