"""The options of ``ragfocus.Focuser.focus`` as validated pydantic fields.

``FocuserField`` holds the ``Focuser`` (shared by every component); ``FocusOptions`` adds the
selection options (budget, ratio, top-k, threshold, order, tokenizer, separator) that the
compressor and the retriever share. Values are checked when the component is built, with
the same rules as ``ragfocus.selection.SelectionConfig``; a value assigned later is checked
by ragfocus when the component runs.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from langchain_core.documents import Document
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator
from ragfocus import Focuser, FocusResult
from ragfocus.focuser import default_focuser
from ragfocus.selection import SelectionConfig
from ragfocus.tokens import TokenCounter, token_counter
from ragfocus.types import Granularity, Order

logger = logging.getLogger(__name__)

SELECTION_OPTIONS = ("budget", "ratio", "top_k", "threshold", "order", "separator", "granularity")
"""The ``focus`` options a call may override (``retriever.invoke(query, budget=200)``)."""


class FocuserField(BaseModel):
    """The ``focuser`` field: which ragfocus ``Focuser`` scores the documents."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, use_attribute_docstrings=True)

    focuser: Focuser | None = None
    """The ragfocus ``Focuser`` that scores the documents. ``None`` (the default) uses the
    shared ``Focuser`` on the embedded SmolLM2-135M-Instruct, created on first use by
    ``ragfocus.focuser.default_focuser()``: building the component loads no model."""

    def get_focuser(self) -> Focuser:
        """The ``focuser`` given, else the shared default one (loaded on the first call)."""
        return self.focuser if self.focuser is not None else default_focuser()


class FocusOptions(FocuserField):
    """How much of the retrieved text to keep, and in which order (``Focuser.focus``)."""

    budget: int | None = Field(default=None, ge=0, strict=True)
    """Most tokens (counted with ``tokenizer``) the kept documents may have, joined by
    ``separator``; never exceeded. ``0`` keeps nothing. Exclusive with ``ratio``."""

    ratio: float | None = Field(default=None, ge=0.0, le=1.0, strict=True)
    """Budget as a share of the input's tokens, in [0, 1]: ``floor(ratio * tokens_in)``.
    Exclusive with ``budget``."""

    top_k: int | None = Field(default=None, ge=0, strict=True)
    """Keep at most this many documents."""

    threshold: float | None = Field(default=None, strict=True, allow_inf_nan=False)
    """Keep only documents whose score is at least this. With the default fusion the score is
    in z units over the query's documents: ``0`` is the query's average document; with
    ``fusion="heads"`` it is calibrated attention: ``0`` means as much attention as a
    content-free query (``N/A``) gives."""

    order: Order = "relevance"
    """Order of the kept documents: ``"relevance"`` (best first), ``"original"`` (input
    order), ``"attention"`` (best last, nearest the question), ``"edges"`` (best at both
    ends, weakest in the middle) or ``"calibrated"`` (best in the slots the scorer attends most)."""

    granularity: Granularity = "passage"
    """``"passage"`` keeps or drops whole documents; ``"sentence"`` also drops, inside kept
    documents, the sentences that receive least attention until the budget holds (a pruned
    document's ``page_content`` is what is left of it; ``metadata["ragfocus"]["pruned"]``)."""

    tokenizer: Any = None
    """The generator's tokenizer, which counts ``budget`` and ``ratio``: a Hugging Face
    tokenizer, a tokenizer name or path (loaded once, when the component is built), or a
    callable ``str -> int``. ``None``: the focuser's own tokenizer."""

    separator: str = Field(default="\n\n", strict=True)
    """The string the generator's prompt puts between documents; the budget is counted on
    the documents joined by it, so join them the same way to stay within it."""

    _counter: tuple[Any, TokenCounter] | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _check_options(self) -> FocusOptions:
        try:
            SelectionConfig(**self.selection_options())
            self.budget_counter()
        except (TypeError, ValueError) as error:
            raise ValueError(str(error)) from error
        return self

    def budget_counter(self) -> TokenCounter | None:
        """The counter of ``tokenizer`` (``None`` without one), made once per tokenizer."""
        if self.tokenizer is None:
            return None
        if self._counter is None or self._counter[0] is not self.tokenizer:
            self._counter = (self.tokenizer, token_counter(self.tokenizer))
        return self._counter[1]

    def selection_options(self, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The selection options, with per-call ``overrides`` applied.

        A ``budget`` given for one call replaces a configured ``ratio`` and the other way
        round, since the two are exclusive.

        Raises:
            TypeError: an override that is not a selection option (``SELECTION_OPTIONS``).
        """
        options = {name: getattr(self, name) for name in SELECTION_OPTIONS}
        overrides = dict(overrides or {})
        unknown = sorted(set(overrides) - set(SELECTION_OPTIONS))
        if unknown:
            raise TypeError(f"unknown focus options {unknown}; valid: {', '.join(SELECTION_OPTIONS)}")
        if "budget" in overrides and "ratio" not in overrides:
            options["ratio"] = None
        if "ratio" in overrides and "budget" not in overrides:
            options["budget"] = None
        options.update(overrides)
        return options

    def focus_documents(
        self, documents: Sequence[Document], query: str, overrides: Mapping[str, Any] | None = None
    ) -> FocusResult:
        """Run ``Focuser.focus`` over ``documents`` with these options (and ``overrides``).

        Raises:
            ValueError, TypeError: from ragfocus, naming a bad query, document or option.
        """
        options = self.selection_options(overrides)
        result = self.get_focuser().focus(query, documents, tokenizer=self.budget_counter(), **options)
        logger.debug(
            "kept %d of %d documents, %d -> %d tokens (budget %s) in %.3f s",
            len(result.kept),
            len(documents),
            result.tokens_in,
            result.tokens_out,
            result.budget,
            result.seconds,
        )
        return result
