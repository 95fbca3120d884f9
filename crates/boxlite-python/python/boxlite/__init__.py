"""boxlite: hardware-isolated sandboxes (micro-VMs) for untrusted code, embeddable.

A thin layer over the boxlite library's native extension (``boxlite._native``): every
call that waits is a coroutine run on the library's own threads, so the GIL is never
held while a box boots or a command runs.
"""

from __future__ import annotations

import os
from pathlib import Path

_DATA = Path(__file__).parent / "_data"


def _use_packaged_helpers() -> None:
    """Point the library at the assets and helper binaries this wheel carries, unless
    the environment names others (the same lookup as the CLI's, with the package's
    directory standing in for "beside the binary")."""
    bin_dir = _DATA / "bin"
    for var, name in (("BOXLITE_SHIM", "boxlite-shim"), ("BOXLITE_NET", "boxlite-net")):
        if var not in os.environ and (bin_dir / name).exists():
            os.environ[var] = str(bin_dir / name)


_use_packaged_helpers()

from ._native import (  # noqa: E402
    AlreadyExistsError,
    BoxInfo,
    BoxliteError,
    EngineError,
    ExecResult,
    ImageError,
    InternalError,
    InvalidArgumentError,
    InvalidStateError,
    NotFoundError,
    ResourceExhaustedError,
    TimeoutError,
    __version__,
)
from ._native import Box as _NativeBox  # noqa: E402
from ._native import BoxOptions  # noqa: E402
from ._native import Boxlite as _NativeBoxlite  # noqa: E402
from ._native import Execution as _NativeExecution  # noqa: E402
from ._native import Options as _NativeOptions  # noqa: E402


def _packaged_assets() -> "str | None":
    if os.environ.get("BOXLITE_ASSETS"):
        return None
    assets = _DATA / "assets"
    return str(assets) if (assets / "manifest.json").exists() else None


#: How a runtime opens: ``home_dir`` (default ``$BOXLITE_HOME``, else ``~/.boxlite``).
Options = _NativeOptions


__all__ = [
    "AlreadyExistsError",
    "BoxInfo",
    "BoxOptions",
    "Boxlite",
    "BoxliteError",
    "EngineError",
    "ExecResult",
    "ImageError",
    "InternalError",
    "InvalidArgumentError",
    "InvalidStateError",
    "NotFoundError",
    "Options",
    "ResourceExhaustedError",
    "TimeoutError",
    "__version__",
]

from ._api import Box, Boxlite, Execution  # noqa: E402,F401

__all__ += ["Box", "Execution"]
