"""A resumable record of per-item detection results: one JSON line per finished item.

The first line is a header with the run's settings; a later run resumes only when its
settings are the same, skipping the items already recorded. Each line is written whole and
flushed to disk before the next item starts, so a killed run loses at most the item in
progress; a torn last line (from a kill mid-write) is ignored and redone.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


class SettingsMismatchError(ValueError):
    """A work file was started with other settings than the run that wants to resume it."""


class ResumableRecord:
    """Append-only JSON-lines file of ``{"key": ..., ...}`` records under a settings header."""

    def __init__(self, path: str | os.PathLike[str], settings: dict[str, Any]) -> None:
        self.path = Path(path)
        self.settings = json.loads(json.dumps(settings))  # normalised as it will be read back
        self.records: dict[str, dict[str, Any]] = {}
        if self.path.exists():
            self._read_existing()
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._append({"settings": self.settings})

    def __contains__(self, key: str) -> bool:
        return key in self.records

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.records.values())

    def add(self, key: str, record: dict[str, Any]) -> None:
        """Record one finished item (durably, before returning)."""
        entry = {"key": key, **record}
        self._append(entry)
        self.records[key] = entry

    def _append(self, payload: dict[str, Any]) -> None:
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(payload) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def _read_existing(self) -> None:
        lines = self.path.read_text(encoding="utf-8").split("\n")
        try:
            header = json.loads(lines[0])["settings"]
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise ValueError(f"{self.path} is not a ragfocus detection work file; delete it or choose another") from error
        if header != self.settings:
            changed = _differences(header, self.settings)
            raise SettingsMismatchError(
                f"{self.path} was started with other settings ({', '.join(changed)} differ); delete it to start "
                "over, or pass the same settings to resume"
            )
        complete = lines[1:-1]  # the text after the last newline is empty or a torn write
        if lines[-1].strip():
            logger.warning("%s ends with an incomplete line (a killed run); that item is redone", self.path)
        for line in complete:
            entry = json.loads(line)
            self.records[entry["key"]] = entry
        if lines[-1].strip():
            self.path.write_text("\n".join(lines[:-1]) + "\n", encoding="utf-8")
        logger.info("resuming %s: %d items already done", self.path, len(self.records))


def _differences(first: Any, second: Any, path: str = "") -> list[str]:
    """Dotted paths of the settings that differ between two JSON values."""
    if isinstance(first, dict) and isinstance(second, dict):
        found: list[str] = []
        for key in sorted(set(first) | set(second)):
            found += _differences(first.get(key), second.get(key), f"{path}.{key}" if path else str(key))
        return found
    return [] if first == second else [path or "settings"]
