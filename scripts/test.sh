#!/usr/bin/env bash
# Run the whole test suite on the real default model: the library's tests, then the
# LangChain integration's (its own pytest configuration). Extra arguments go to both.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/install_browser.sh
.venv/bin/python -m pytest tests "$@"
cd integrations/langchain
exec ../../.venv/bin/python -m pytest tests "$@"
