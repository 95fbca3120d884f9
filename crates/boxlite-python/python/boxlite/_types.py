"""Small value types the native module builds."""

from __future__ import annotations


class ExecutionId(str):
    """An execution's id. A string; calling it also gives it, so code written for
    ``execution.id()`` and for ``execution.id`` both work."""

    def __call__(self) -> str:
        return str(self)
