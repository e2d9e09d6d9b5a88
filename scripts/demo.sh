#!/usr/bin/env bash
# Retrieve with faiss + all-MiniLM-L6-v2 over HotpotQA paragraphs, focus with the embedded
# SmolLM2-135M, and show what was kept. Extra arguments go to `ragfocus demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/ragfocus demo "$@"
