"""``ExecResult``: what ``SimpleBox.exec`` returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass
class ExecResult:
    """A finished command: its exit code (128+N for a signal N, 124 for a timeout), its
    whole stdout and stderr as text, and why it did not exit on its own, if it did not."""

    exit_code: int
    stdout: str
    stderr: str
    error_message: Optional[str] = None
