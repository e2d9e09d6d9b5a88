"""Evaluation and demo code: outside the library's hot path, imported only by the CLI."""
