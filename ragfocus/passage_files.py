"""Read passages from a file for the command line: JSON, JSONL or plain text.

- ``.json``: a list (or ``{"passages": [...]}``) of strings or objects
  ``{"text": ..., "id": ..., "metadata": {...}, "score": ...}`` (``page_content`` is accepted
  for ``text``);
- ``.jsonl``: one string or object a line;
- anything else: plain text, passages separated by blank lines.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from ragfocus.types import Passage


class PassageFileError(ValueError):
    """A passages file that cannot be read as passages; the message names the file and the item."""


def read_passages(path: str | Path) -> list[Passage]:
    """The passages of ``path``.

    Raises:
        PassageFileError: (a ``ValueError``) naming the file and the item that is not a passage.
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    suffix = path.suffix.lower()
    if suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise PassageFileError(f"{path}: not JSON ({error.msg}, line {error.lineno})") from None
        if isinstance(data, dict) and "passages" in data:
            data = data["passages"]
        if not isinstance(data, list):
            raise PassageFileError(f"{path}: expected a list of passages (or {{\"passages\": [...]}}), got {type(data).__name__}")
        return [_passage(item, f"{path}, item {number}") for number, item in enumerate(data)]
    if suffix == ".jsonl":
        passages = []
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    item = json.loads(line)
                except json.JSONDecodeError as error:
                    raise PassageFileError(f"{path}, line {number}: not JSON ({error.msg})") from None
                passages.append(_passage(item, f"{path}, line {number}"))
        return passages
    return [Passage(text=block.strip()) for block in re.split(r"\n\s*\n", text) if block.strip()]


def _passage(item: object, where: str) -> Passage:
    if isinstance(item, str):
        return Passage(text=item)
    if not isinstance(item, dict):
        raise PassageFileError(f"{where}: expected a string or an object with 'text', got {type(item).__name__}")
    text = item.get("text", item.get("page_content"))
    if not isinstance(text, str):
        raise PassageFileError(f"{where}: needs a 'text' string")
    identifier = item.get("id")
    metadata = item.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise PassageFileError(f"{where}: 'metadata' must be an object")
    score = item.get("score")
    if score is not None and (isinstance(score, bool) or not isinstance(score, (int, float))):
        raise PassageFileError(f"{where}: 'score' must be a number")
    return Passage(text=text, id=None if identifier is None else str(identifier), metadata=metadata,
                   score=None if score is None else float(score))
