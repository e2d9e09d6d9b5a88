"""Which file format a path is: JSONL (``.jsonl``/``.ndjson``/``.json``) or Parquet (``.parquet``/``.pq``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

Format = Literal["jsonl", "parquet"]
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
PARQUET_SUFFIXES = (".parquet", ".pq")


def format_of(path: str | Path) -> Format:
    """The format named by ``path``'s suffix (a directory of Parquet parts counts as Parquet).

    Raises:
        ValueError: the suffix is neither, naming the accepted ones.
    """
    suffix = Path(path).suffix.lower()
    if suffix in JSONL_SUFFIXES:
        return "jsonl"
    if suffix in PARQUET_SUFFIXES:
        return "parquet"
    raise ValueError(
        f"cannot tell the format of {str(path)!r}: name it *.jsonl (JSON lines) or *.parquet "
        f"(accepted: {', '.join(JSONL_SUFFIXES + PARQUET_SUFFIXES)})"
    )


def require_pyarrow() -> None:
    """Raise an ``ImportError`` that says how to install pyarrow."""
    try:
        import pyarrow  # noqa: F401
    except ImportError as error:
        raise ImportError("Parquet needs pyarrow: pip install 'ragfocus[batch]'") from error
