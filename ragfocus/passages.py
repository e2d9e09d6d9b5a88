"""Turn the caller's passages (str, Passage, LangChain Document) into ``Passage`` objects."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from ragfocus.types import Passage

PassageLike = Any  # str | Passage | a LangChain Document (anything with page_content and metadata)


def as_passage(item: PassageLike, index: int) -> Passage:
    """Return ``item`` as a ``Passage``; metadata is deep-copied so the input is never touched.

    Raises:
        TypeError: naming the position and type of an item that is none of the accepted kinds.
    """
    if isinstance(item, Passage):
        try:
            return Passage(text=item.text, id=item.id, metadata=_copied(item.metadata), score=item.score)
        except (TypeError, ValueError) as error:  # a Passage changed after construction
            raise type(error)(f"passages[{index}]: {error}") from None
    if isinstance(item, str):
        return Passage(text=item)
    page_content = getattr(item, "page_content", None)
    if isinstance(page_content, str):
        metadata = getattr(item, "metadata", None) or {}
        if not isinstance(metadata, Mapping):
            raise TypeError(f"passages[{index}].metadata is {type(metadata).__name__}; expected a mapping")
        identifier = getattr(item, "id", None)
        return Passage(text=page_content, id=None if identifier is None else str(identifier), metadata=_copied(metadata))
    raise TypeError(
        f"passages[{index}] is {type(item).__name__}; expected str, ragfocus.Passage or a LangChain Document"
    )


def as_passages(items: Sequence[PassageLike]) -> list[Passage]:
    if isinstance(items, (str, bytes)) or not isinstance(items, Sequence):
        raise TypeError(f"passages must be a list of passages, got {type(items).__name__}")
    return [as_passage(item, index) for index, item in enumerate(items)]


def _copied(metadata: Mapping[str, Any]) -> dict[str, Any]:
    try:
        return copy.deepcopy(dict(metadata))
    except Exception:  # noqa: BLE001 - objects that refuse deep copies are carried by reference
        return dict(metadata)
