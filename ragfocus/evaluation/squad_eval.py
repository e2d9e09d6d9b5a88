"""``ragfocus eval squad``: does a signal tell answerable from unanswerable pairs?

SQuAD v2.0 dev (Rajpurkar, Jia and Liang, "Know What You Don't Know: Unanswerable Questions
for SQuAD", ACL 2018): 11,873 questions over 35 Wikipedia articles, 5,945 of them
unanswerable. The unanswerable questions were written by crowd workers against the same
paragraph to look answerable (they name its entities and reuse its words), so every pair is
topically relevant and the task is whether the paragraph *answers* the question: a hard
distractor test for relevance signals, unlike the off-topic negatives of passage ranking.

Each pair is one question with its own paragraph. For every pair ``Focuser.rank(question,
[paragraph])`` runs once, and each key of the single ``ScoredPassage.signals`` is a row
(whatever signals the Focuser reports today, generically), beside ``"ragfocus score"`` (the
fused ``score``) and two baselines: all-MiniLM-L6-v2 cosine (Reimers and Gurevych,
"Sentence-BERT", EMNLP 2019) and Okapi BM25 (Robertson and Zaragoza, "The Probabilistic
Relevance Framework: BM25 and Beyond", 2009; rank-bm25 defaults) of the paragraph with the
article's paragraphs as the corpus, so that idf is meaningful.

Each row's AUROC (``sklearn.metrics.roc_auc_score``) has answerable pairs as the positive
class and a higher signal meaning "more answerable"; the value is reported as is: 0.5 is
chance, and below 0.5 the signal points the other way (1 - AUROC is what its negation gets).
Non-finite values (NaN, +-inf) are skipped per signal and the count used is reported. The
95% interval is a percentile bootstrap (Efron and Tibshirani, "An Introduction to the
Bootstrap", 1993), stratified (positives and negatives resampled separately, so every
resample has both classes), 1,000 resamples with a seeded generator; each signal gets the same
resamples when none of its values were skipped, so rows are compared on paired resamples.

Splits by article index (0-34, the order of the file): 0-9 tuning (prompt and signal choices,
tests), 10-34 report. Pairs are drawn with ``random.Random(seed)``, balanced: ``limit / 2``
answerable and ``limit / 2`` unanswerable questions, uniformly without replacement from the
articles asked for, then shuffled.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

    from ragfocus.focuser import Focuser

ARTICLES = range(35)
TUNING = range(10)
REPORT = range(10, 35)
DEFAULT_LIMIT = 400
DEFAULT_BOOTSTRAP = 1000
FUSED = "ragfocus score"
MINILM = "all-MiniLM-L6-v2"
BM25 = "BM25"


@dataclass(frozen=True)
class SquadPair:
    """One SQuAD v2.0 dev question with its own paragraph."""

    id: str
    question: str
    paragraph: str
    answerable: bool
    article: int
    """Index of the article in the file (0-34)."""
    title: str
    paragraph_index: int
    """Index of ``paragraph`` among its article's paragraphs."""
    others: tuple[str, ...]
    """The article's other paragraphs (BM25's corpus, with ``paragraph``)."""


@dataclass
class SignalResult:
    name: str
    kind: str
    """``"signal"`` (a key of ``ScoredPassage.signals``), ``"fused"`` (its ``score``) or ``"baseline"``."""
    auroc: float
    """Answerable = positive, higher = more answerable; 0.5 is chance, < 0.5 points the other way.
    NaN when the finite values do not hold both classes."""
    ci_low: float | None
    ci_high: float | None
    """Stratified percentile-bootstrap 95% interval; ``None`` without bootstrap."""
    used: int
    """Pairs with a finite value (the others are skipped)."""
    positives: int
    negatives: int


@dataclass
class PairValues:
    id: str
    article: int
    answerable: bool
    values: dict[str, float]


@dataclass
class SquadReport:
    articles: tuple[int, int]
    """First and last article index (inclusive)."""
    split: str
    """``"tuning"``, ``"report"`` or ``"mixed"``."""
    limit: int
    seed: int
    pairs: int
    positives: int
    negatives: int
    model: str
    default_heads: str
    focuser_seconds_per_pair: float
    """Median seconds of one ``Focuser.rank(question, [paragraph])``."""
    focuser_mean_seconds_per_pair: float
    bootstrap: int
    """Resamples behind each interval (0: none)."""
    signals: list[SignalResult]
    """Sorted by AUROC, best first (NaN last)."""
    values: list[PairValues] = field(default_factory=list)
    """Every pair's value of every row, in sampling order."""

    def to_dict(self) -> dict:
        """Plain data for JSON: non-finite numbers (a skipped value, an undefined AUROC) become ``None``."""
        return _finite(asdict(self))


def _finite(value: object) -> object:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


@lru_cache(maxsize=1)
def _articles() -> list[dict]:
    from ragfocus.evaluation.datasets import data_directory

    with (data_directory() / "squad.json").open(encoding="utf-8") as handle:
        return json.load(handle)["data"]


def check_articles(articles: range) -> None:
    """Raises ``ValueError`` unless ``articles`` is a non-empty range inside 0-34."""
    if not isinstance(articles, range):
        raise TypeError(f"articles must be a range, got {type(articles).__name__}")
    if len(articles) == 0:
        raise ValueError(f"no articles in {articles!r}; SQuAD v2.0 dev has articles 0-34")
    if min(articles) < ARTICLES.start or max(articles) >= ARTICLES.stop:
        raise ValueError(
            f"articles {min(articles)}-{max(articles)} are outside SQuAD v2.0 dev (articles 0-34: "
            "0-9 tuning, 10-34 report)"
        )


def split_of(articles: range) -> str:
    chosen = set(articles)
    if chosen <= set(TUNING):
        return "tuning"
    if chosen <= set(REPORT):
        return "report"
    return "mixed"


def squad_pairs(articles: range, limit: int, seed: int = 0) -> list[SquadPair]:
    """``limit`` (question, own paragraph) pairs from the given articles, half answerable.

    Answerable and unanswerable questions are drawn separately, ``limit // 2`` each, uniformly
    without replacement with ``random.Random(seed)``, then shuffled together: the same
    arguments give the same pairs.

    Raises:
        ValueError: articles outside 0-34 or empty, ``limit`` odd or below 2, or more pairs
        asked for than the articles hold.
    """
    check_articles(articles)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 2 or limit % 2:
        raise ValueError(f"limit must be an even number >= 2 (pairs are balanced 50/50), got {limit!r}")
    data = _articles()
    pools: dict[bool, list[SquadPair]] = {True: [], False: []}
    for article in articles:
        entry = data[article]
        texts = [paragraph["context"] for paragraph in entry["paragraphs"]]
        for paragraph_index, paragraph in enumerate(entry["paragraphs"]):
            others = tuple(texts[:paragraph_index] + texts[paragraph_index + 1 :])
            for qa in paragraph["qas"]:
                answerable = not qa["is_impossible"]
                pools[answerable].append(
                    SquadPair(
                        id=qa["id"],
                        question=qa["question"],
                        paragraph=paragraph["context"],
                        answerable=answerable,
                        article=article,
                        title=entry["title"],
                        paragraph_index=paragraph_index,
                        others=others,
                    )
                )
    half = limit // 2
    for answerable, pool in pools.items():
        if len(pool) < half:
            kind = "answerable" if answerable else "unanswerable"
            raise ValueError(
                f"articles {min(articles)}-{max(articles)} hold {len(pool)} {kind} questions; limit {limit} needs {half}"
            )
    rng = random.Random(seed)
    chosen = rng.sample(pools[True], half) + rng.sample(pools[False], half)
    rng.shuffle(chosen)
    return chosen


def bm25_in_article(pair: SquadPair) -> float:
    """BM25 of the pair's paragraph for its question, the article's paragraphs as the corpus
    (``baselines.bm25_scores``: its tokenization and rank-bm25 defaults)."""
    from ragfocus.evaluation.baselines import bm25_scores

    return bm25_scores(pair.question, [pair.paragraph, *pair.others])[0]


def auroc(labels: Sequence[bool], values: Sequence[float]) -> tuple[float, int]:
    """(AUROC of ``values`` for ``labels``, pairs used): non-finite values are skipped; NaN
    when what is left lacks a class."""
    from sklearn.metrics import roc_auc_score

    kept = [(label, value) for label, value in zip(labels, values) if math.isfinite(value)]
    if len({label for label, _ in kept}) < 2:
        return math.nan, len(kept)
    return float(roc_auc_score([label for label, _ in kept], [value for _, value in kept])), len(kept)


def bootstrap_interval(
    labels: Sequence[bool], values: Sequence[float], *, resamples: int = DEFAULT_BOOTSTRAP, seed: int = 0
) -> tuple[float, float]:
    """Stratified percentile-bootstrap 95% interval of the AUROC (finite values only).

    Each resample draws the positives and the negatives separately with replacement; its
    AUROC is the Mann-Whitney statistic with average ranks for ties, which is what
    ``roc_auc_score`` computes, vectorized over resamples.
    """
    import numpy as np
    from scipy.stats import rankdata

    finite = [(label, value) for label, value in zip(labels, values) if math.isfinite(value)]
    positive = np.array([value for label, value in finite if label], dtype=float)
    negative = np.array([value for label, value in finite if not label], dtype=float)
    if resamples < 1 or not len(positive) or not len(negative):
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    drawn_positive = positive[rng.integers(0, len(positive), size=(resamples, len(positive)))]
    drawn_negative = negative[rng.integers(0, len(negative), size=(resamples, len(negative)))]
    ranks = rankdata(np.concatenate([drawn_positive, drawn_negative], axis=1), axis=1)
    n_positive, n_negative = len(positive), len(negative)
    statistic = ranks[:, :n_positive].sum(axis=1) - n_positive * (n_positive + 1) / 2
    low, high = np.percentile(statistic / (n_positive * n_negative), [2.5, 97.5])
    return float(low), float(high)


def evaluate_squad(
    focuser: Focuser,
    *,
    articles: range = REPORT,
    limit: int = DEFAULT_LIMIT,
    seed: int = 0,
    progress: bool = True,
    bootstrap: int = DEFAULT_BOOTSTRAP,
) -> SquadReport:
    """AUROC of every Focuser signal, the fused score, MiniLM and BM25 for answerable (positive)
    vs unanswerable SQuAD v2.0 pairs. See the module docstring for the protocol.

    ``bootstrap`` resamples per interval (0 skips the intervals).

    Raises:
        ValueError: as ``squad_pairs``.
    """
    from tqdm.auto import tqdm

    from ragfocus.evaluation.baselines import minilm_scores

    pairs = squad_pairs(articles, limit, seed)
    minilm_scores("warm up", ["the embedder loads once"])
    kinds: dict[str, str] = {}
    rows: list[PairValues] = []
    seconds: list[float] = []
    for pair in tqdm(pairs, desc="squad", disable=not progress, unit="pair"):
        began = time.perf_counter()
        (scored,) = focuser.rank(pair.question, [pair.paragraph])
        seconds.append(time.perf_counter() - began)
        values: dict[str, float] = {}
        for name, value in scored.signals.items():
            kinds.setdefault(name, "signal")
            values[name] = float(value)
        values[FUSED] = float(scored.score)
        values[MINILM] = minilm_scores(pair.question, [pair.paragraph])[0]
        values[BM25] = bm25_in_article(pair)
        rows.append(PairValues(pair.id, pair.article, pair.answerable, values))
    kinds.update({FUSED: "fused", MINILM: "baseline", BM25: "baseline"})
    labels = [pair.answerable for pair in pairs]
    results = []
    for name, kind in kinds.items():
        column = [row.values.get(name, math.nan) for row in rows]
        value, used = auroc(labels, column)
        finite = [label for label, v in zip(labels, column) if math.isfinite(v)]
        low = high = None
        if bootstrap:
            low, high = bootstrap_interval(labels, column, resamples=bootstrap, seed=seed)
        results.append(SignalResult(name, kind, value, low, high, used, sum(finite), len(finite) - sum(finite)))
    results.sort(key=lambda result: (math.isnan(result.auroc), -result.auroc if not math.isnan(result.auroc) else 0.0))
    return SquadReport(
        articles=(min(articles), max(articles)),
        split=split_of(articles),
        limit=limit,
        seed=seed,
        pairs=len(pairs),
        positives=sum(labels),
        negatives=len(labels) - sum(labels),
        model=focuser.loaded.name,
        default_heads=focuser.heads_source,
        focuser_seconds_per_pair=statistics.median(seconds),
        focuser_mean_seconds_per_pair=statistics.fmean(seconds),
        bootstrap=bootstrap,
        signals=results,
        values=rows,
    )


def render_squad(report: SquadReport, console: Console | None = None) -> None:
    """The report as a rich table (a wide console in a pipe or a log, as the CLI's)."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    if console is None:
        console = Console()
        if not console.is_terminal:
            console = Console(width=160)
    first, last = report.articles
    table = Table(
        title=f"SQuAD v2.0 dev articles {first}-{last} ({report.split} split): {report.pairs} pairs, "
        f"{report.positives} answerable / {report.negatives} unanswerable, seed {report.seed}; "
        f"scorer {report.model}"
    )
    for column in ("signal", "kind", "AUROC", "95% CI", "pairs used"):
        table.add_column(column)
    for result in report.signals:
        interval = "" if result.ci_low is None else f"{result.ci_low:.3f}-{result.ci_high:.3f}"
        table.add_row(escape(result.name), result.kind, f"{result.auroc:.3f}", interval, str(result.used))
    console.print(table)
    bootstrap = f"stratified bootstrap, {report.bootstrap} resamples" if report.bootstrap else "no bootstrap"
    console.print(
        escape(
            f"AUROC: answerable = positive, higher signal = more answerable; 0.5 is chance, below 0.5 the signal "
            f"points the other way. 95% CI: {bootstrap}. Focuser.rank(question, [paragraph]) "
            f"{report.focuser_seconds_per_pair:.3f} s/pair (median; mean {report.focuser_mean_seconds_per_pair:.3f}); "
            f"heads: {report.default_heads}."
        )
    )


def article_range(text: str) -> range:
    """``"10-34"`` -> ``range(10, 35)`` (inclusive); ``"7"`` -> ``range(7, 8)``."""
    first, _, last = text.partition("-")
    try:
        start, stop = int(first), int(last or first)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected articles as FIRST-LAST (e.g. 10-34), got {text!r}") from None
    if stop < start:
        raise argparse.ArgumentTypeError(f"articles {text!r}: the last is before the first")
    return range(start, stop + 1)


def add_squad_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add ``squad`` to the ``eval`` suites (``subparsers`` is the group of ``eval hotpotqa``)."""
    squad = subparsers.add_parser(
        "squad", help="answerable vs unanswerable SQuAD v2.0 dev pairs: AUROC of every signal"
    )
    squad.add_argument(
        "--articles",
        type=article_range,
        default=REPORT,
        help="article indices FIRST-LAST, inclusive (0-9 is the tuning split; default 10-34, the report split)",
    )
    squad.add_argument(
        "--limit", type=int, default=DEFAULT_LIMIT, help="number of pairs, even: half answerable (default 400)"
    )
    squad.add_argument("--seed", type=int, default=0, help="seed of the pair sampling and the bootstrap (default 0)")
    squad.add_argument(
        "--bootstrap",
        type=int,
        default=DEFAULT_BOOTSTRAP,
        help="bootstrap resamples per 95%% interval, 0 for none (default 1000)",
    )
    squad.add_argument("--model", default=None, help="scorer: Hugging Face id or path (default: embedded SmolLM2-135M)")
    squad.add_argument("--json", type=Path, default=None, help="also write the report as JSON here")
    squad.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    squad.set_defaults(run=run_squad)


def _load_focuser(model: str | None) -> Focuser:
    from ragfocus.focuser import Focuser

    return Focuser(model)


def run_squad(args: argparse.Namespace) -> int:
    """``ragfocus eval squad``: evaluate, print the table, write ``--json``."""
    squad_pairs(args.articles, args.limit, args.seed)  # bad articles or limit fail before the model loads
    focuser = _load_focuser(args.model)
    report = evaluate_squad(
        focuser,
        articles=args.articles,
        limit=args.limit,
        seed=args.seed,
        progress=not args.no_progress,
        bootstrap=args.bootstrap,
    )
    render_squad(report)
    if args.json:
        args.json.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    return 0
