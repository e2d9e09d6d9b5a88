"""The budget curve: both gold paragraphs kept against the share of input tokens kept."""

from __future__ import annotations

from pathlib import Path

from ragfocus.evaluation.hotpotqa_eval import EvalReport

CURVE_METHODS = (
    "ragfocus default",
    "ragfocus + retriever (MiniLM score)",
    "retrieval heads",
    "attention sort",
    "distraction",
    "BM25",
    "all-MiniLM-L6-v2",
    "LongLLMLingua (same model)",
    "random",
)


def plot_budget_curve(report: EvalReport, path: Path, methods: tuple[str, ...] = CURVE_METHODS) -> Path:
    """One line per method: share of questions keeping both gold paragraphs at each budget
    ratio (passages filled best first by the library's own selection)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7.5, 5))
    for method in report.methods:
        if method.method not in methods or not method.both_kept:
            continue
        ratios = sorted(method.both_kept, key=float)
        style = {"linewidth": 2.6} if method.method.startswith("ragfocus") else {"linewidth": 1.3}
        axis.plot([float(r) for r in ratios], [method.both_kept[r] for r in ratios], marker="o", markersize=3,
                  label=method.method, **style)
    axis.axvline(0.4, color="grey", linestyle=":", linewidth=1)
    axis.axhline(0.8, color="grey", linestyle=":", linewidth=1)
    axis.set_xlabel("budget: share of the input's tokens kept")
    axis.set_ylabel("questions keeping both gold paragraphs")
    axis.set_title(f"HotpotQA dev {report.start}-{report.start + report.limit - 1}, scorer {report.model}", fontsize=10)
    axis.set_xlim(0.05, 1.02)
    axis.set_ylim(0, 1.02)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
