"""Where the stage-0 language model's text comes from: `TextSource`s, injected into `LMTextDataModule`.

A source is a class with `documents() -> list[str]`, wired in a config by class path (a benchmark's paragraphs, e.g.
ParaShapes' `ParaShapesText`, or `TextFiles` here). Keeping the text out of the DataModule keeps a source's own
rules with it: ParaShapes' evaluation phrasing, for one, is never language-model training text.
"""
from __future__ import annotations

import csv
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

from paradiffusion.jsonl import iter_jsonl

TEXT_SUFFIXES = (".txt", ".jsonl", ".csv")


class TextSource(ABC):
    """Documents for causal-LM pretraining, in a fixed order (the DataModule shuffles and splits them)."""

    @abstractmethod
    def documents(self) -> list[str]:
        """Every document of this source."""


class TextFiles(TextSource):
    """The documents of text files (`file_texts`): `.txt` one per line, `.jsonl` / `.csv` the `text_field`."""

    def __init__(self, paths: Sequence[str], text_field: str = "text") -> None:
        self.paths, self.text_field = list(paths), text_field

    def documents(self) -> list[str]:
        return [doc for path in self.paths for doc in file_texts(path, self.text_field)]


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
