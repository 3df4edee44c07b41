"""One JSONL reader for every user-supplied record file (image manifests, LM text files).

Errors name the file and line, so a bad record is found without a debugger; blank lines are allowed.
(ParaShapes spec files keep their own reader: it collects *all* errors of a file instead of stopping at the first.)
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import IO, Iterator


def iter_jsonl(f: IO[str], path: str | Path) -> Iterator[tuple[int, dict]]:
    """Yield ``(line_number, record)`` for each non-blank line of an open JSONL file; each record is a JSON object.

    Raises ``ValueError("<path>:<line>: malformed JSON: …")`` or ``"… expected a JSON object, got list"``.
    """
    for lineno, line in enumerate(f, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{lineno}: malformed JSON: {exc.msg}") from None
        if not isinstance(record, dict):
            raise ValueError(f"{path}:{lineno}: expected a JSON object, got {type(record).__name__}")
        yield lineno, record
