"""Explain one focus: write the HTML report (and, where Chromium is installed, a screenshot of it).

Run: .venv/bin/python examples/explain_report.py [OUTPUT_DIR]   (default: docs/; writes
explain_example.html and explain_example.png there)
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from rich import print as rich_print

from ragfocus import Focuser, Passage
from ragfocus.explain import explain

passages = [
    Passage("The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris. It was completed in 1889 "
            "as the entrance arch to the World's Fair.", id="eiffel", metadata={"source": "encyclopedia"}),
    Passage("Bananas are botanically berries. They grow in hanging clusters called hands.", id="banana"),
    Passage("Gustave Eiffel's company designed and built the tower. Maurice Koechlin and Emile Nouguier drew the "
            "first plans in 1884.", id="gustave", metadata={"source": "history notes"}),
    Passage("The Louvre is the world's most-visited art museum. It holds the Mona Lisa.", id="louvre"),
    Passage("Critics of the tower, including Guy de Maupassant, signed a protest against it in 1887.", id="protest"),
]

output = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent / "docs"
output.mkdir(parents=True, exist_ok=True)
explanation = explain(Focuser(), "Who designed and built the Eiffel Tower?", passages, budget=70, granularity="sentence")
page = explanation.write_html(output / "explain_example.html")
rich_print(explanation.result.explain())
print(f"wrote {page}")

chromium = shutil.which("chromium") or shutil.which("chromium-browser")
if chromium:
    screenshot = output / "explain_example.png"
    subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1100,1900",
         f"--screenshot={screenshot}", page.resolve().as_uri()],
        check=True, capture_output=True,
    )
    print(f"wrote {screenshot}")
