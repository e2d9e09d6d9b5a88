"""Focus a handful of passages for one question with the embedded default model.

Run: .venv/bin/python examples/quickstart.py
"""

from __future__ import annotations

from ragfocus import Focuser, Passage

passages = [
    Passage("The Eiffel Tower was completed in 1889 for the World's Fair in Paris.", id="eiffel", metadata={"source": "wiki"}),
    Passage("Bananas are botanically berries and grow in clusters called hands.", id="banana"),
    Passage("Gustave Eiffel's company designed and built the tower's iron lattice.", id="gustave"),
    Passage("The Louvre is the world's most-visited art museum.", id="louvre"),
]

focuser = Focuser()
result = focuser.focus("Who built the Eiffel Tower and when was it finished?", passages, budget=40)
for passage in result.kept:
    print(f"kept    {passage.id:8} score {passage.score:+.4f}")
for passage in result.dropped:
    print(f"dropped {passage.id:8} score {passage.score:+.4f}")
print(f"tokens {result.tokens_in} -> {result.tokens_out} (budget {result.budget})")
print(result.context)
