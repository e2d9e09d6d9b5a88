"""Peer rankers from the literature, run on our own scoring model for a like-for-like comparison.

LongLLMLingua (Jiang et al., "LongLLMLingua: Accelerating and Enhancing LLMs in Long Context
Scenarios via Prompt Compression", ACL 2024) ranks documents by question-conditioned perplexity:
for each document ``d`` the perplexity of ``question + " We can get the answer to this question
in the given documents."`` given ``d``; the lower, the more relevant. The ``llmlingua`` package
implements it in ``PromptCompressor.get_rank_results(..., rank_method="longllmlingua",
condition_in_question="after")``, and that is what runs here: nothing of it is re-implemented.

``PromptCompressor.__init__`` cannot be used offline (it calls
``tiktoken.encoding_for_model("gpt-3.5-turbo")``, which downloads a BPE file, and then loads a
model by name), so :class:`LongLLMLinguaRanker` builds the object without its ``__init__`` and
sets the attributes the ranking path reads from an already loaded :class:`LoadedModel`.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ragfocus.models import LoadedModel

logger = logging.getLogger(__name__)

_INSTALL_HINT = "LongLLMLingua needs the llmlingua package: pip install 'ragfocus[eval]'"
_DOCUMENT_SEPARATOR = "\n"
"""Put between a document and the question. A newline ends a pre-token in byte-level BPE
tokenizers, so the document's tokens stay a prefix of the joined text's tokens and llmlingua's
``condition_pos_id`` (the document's token count) lands exactly on the first question token."""


class _TokenCounter:
    """Stand-in for llmlingua's tiktoken ``oai_tokenizer``: counts with the model's tokenizer."""

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer

    def encode(self, text: str) -> list[int]:
        return list(self._tokenizer(text, add_special_tokens=False).input_ids)


def _prompt_compressor(loaded: LoadedModel) -> Any:
    """A ``llmlingua.PromptCompressor`` wired to ``loaded`` without running its ``__init__``.

    Sets every attribute ``__init__`` and ``load_model`` would set (the ranking path reads
    ``model``, ``tokenizer``, ``device``, ``max_position_embeddings`` and
    ``retrieval_model``), with the tokenizer a copy padded on the left, as ``load_model``
    configures it, so the caller's tokenizer is never changed.
    """
    try:
        from llmlingua import PromptCompressor
    except ImportError as error:
        raise ImportError(_INSTALL_HINT) from error

    tokenizer = copy.deepcopy(loaded.tokenizer)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        config_pad = getattr(loaded.model.config, "pad_token_id", None)
        tokenizer.pad_token_id = config_pad if config_pad is not None else tokenizer.eos_token_id

    compressor = PromptCompressor.__new__(PromptCompressor)
    compressor.model_name = loaded.name
    compressor.use_llmlingua2 = False
    compressor.retrieval_model = None
    compressor.retrieval_model_name = None
    compressor.open_api_config = {}
    compressor.cache_bos_num = 10
    compressor.prefix_bos_num = 100
    compressor.oai_tokenizer = _TokenCounter(tokenizer)
    compressor.model = loaded.model
    compressor.tokenizer = tokenizer
    compressor.device = loaded.device
    compressor.context_idxs = []
    compressor.max_position_embeddings = loaded.max_positions or tokenizer.model_max_length
    return compressor


class LongLLMLinguaRanker:
    """LongLLMLingua's coarse-grained document ranking (Jiang et al., ACL 2024) on ``loaded``.

    Build once per model and call :meth:`scores` per question.
    """

    def __init__(self, loaded: LoadedModel) -> None:
        self.loaded = loaded
        self._compressor = _prompt_compressor(loaded)

    def scores(self, question: str, passages: Sequence[str]) -> list[float]:
        """One score per passage, in input order; higher means more relevant.

        The score is minus llmlingua's conditional perplexity value, which is the mean
        per-token negative log-likelihood (the log of the perplexity) of
        ``question + " We can get the answer to this question in the given documents."``
        given the passage, as ``get_rank_results(rank_method="longllmlingua",
        condition_in_question="after")`` returns it. The log is monotone, so the order is the
        paper's, and real values make ties rare. Each passage is right-stripped and followed
        by a newline before the question (see ``_DOCUMENT_SEPARATOR``).
        """
        if not passages:
            return []
        documents = [passage.rstrip() + _DOCUMENT_SEPARATOR for passage in passages]
        self._check_boundaries(documents, question.strip())
        ranked = self._compressor.get_rank_results(
            documents,
            question.strip(),
            rank_method="longllmlingua",
            condition_in_question="after",
            context_tokens_length=[self._compressor.get_token_length(d) for d in documents],
        )
        by_index = {int(index): float(value) for index, value in ranked}
        if sorted(by_index) != list(range(len(passages))):
            raise RuntimeError(f"llmlingua ranked {sorted(by_index)} for {len(passages)} passages")
        result = [-by_index[i] for i in range(len(passages))]
        if not all(math.isfinite(value) for value in result):
            logger.warning("LongLLMLingua gave a non-finite perplexity for %r", question)
        return result

    def _check_boundaries(self, documents: Sequence[str], question: str) -> None:
        """Log when a document's tokens are not a prefix of document+question's tokens: then
        llmlingua's conditional span is off by a token for that document."""
        tokenizer = self._compressor.tokenizer
        for index, document in enumerate(documents):
            alone = tokenizer(document).input_ids
            joined = tokenizer(document + question).input_ids
            if joined[: len(alone)] != alone:
                logger.debug("document %d: tokens merge across the question boundary", index)


_RANKERS: dict[int, LongLLMLinguaRanker] = {}
_MAX_CACHED = 4


def longllmlingua_scores(loaded: LoadedModel, question: str, passages: Sequence[str]) -> list[float]:
    """LongLLMLingua scores (Jiang et al., ACL 2024) of ``passages`` for ``question``, in input
    order, higher = more relevant: minus the mean negative log-likelihood of the question
    (plus the paper's "We can get the answer ..." sentence) given each passage.

    Runs ``llmlingua``'s own ``get_rank_results`` on ``loaded``'s model, offline; the ranker is
    built once per ``LoadedModel`` and cached.

    Raises:
        ImportError: ``llmlingua`` is not installed (``pip install 'ragfocus[eval]'``).
    """
    ranker = _RANKERS.get(id(loaded))
    if ranker is None or ranker.loaded is not loaded:
        ranker = LongLLMLinguaRanker(loaded)
        if len(_RANKERS) >= _MAX_CACHED:
            _RANKERS.clear()  # a ranker keeps its model alive: do not hoard them
        _RANKERS[id(loaded)] = ranker
    return ranker.scores(question, passages)
