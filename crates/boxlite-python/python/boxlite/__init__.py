"""boxlite: hardware-isolated sandboxes (micro-VMs) for untrusted code, embeddable.

Boot an OCI image in a lightweight VM, run commands in it with streamed I/O, move files
in and out, and tear it down, from one ``pip install``. The names and shapes follow
BoxLite's Python SDK, so code written for it runs with an import changed at most.

The core classes (``Boxlite``, ``Box``, ``Execution``, ...) live in the native
extension over the boxlite library: every call that waits returns an awaitable run on
the library's own threads, so the GIL is never held while a box boots or a command
runs. ``SimpleBox`` and ``CodeBox`` are conveniences on top, and ``SyncBoxlite``,
``SyncSimpleBox`` and ``SyncCodeBox`` their blocking twins.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

_DATA = Path(__file__).parent / "_data"


def _use_packaged_helpers() -> None:
    """Point the library at the helper binaries this wheel carries, unless the
    environment names others (the CLI finds them beside its binary)."""
    bin_dir = _DATA / "bin"
    for var, name in (("BOXLITE_SHIM", "boxlite-shim"), ("BOXLITE_NET", "boxlite-net")):
        if var not in os.environ and (bin_dir / name).exists():
            os.environ[var] = str(bin_dir / name)


def _packaged_assets() -> Optional[str]:
    """The guest assets this wheel carries (kernel, initramfs, built-in images), if any."""
    assets = _DATA / "assets"
    return str(assets) if (assets / "manifest.json").exists() else None


_use_packaged_helpers()

from . import errors  # noqa: E402
from ._native import (  # noqa: E402
    AccessToken,
    ApiKeyCredential,
    Box,
    BoxInfo,
    BoxMetrics,
    Boxlite,
    BoxliteRestOptions,
    BoxOptions,
    BoxStateInfo,
    CopyOptions,
    ExecStdin,
    Execution,
    NetworkSpec,
    Options,
    OutboundNetworkSpec,
    OutputStream,
    RuntimeMetrics,
    Secret,
    SnapshotHandle,
    SnapshotInfo,
    __version__,
)
from .codebox import CodeBox  # noqa: E402
from .credential import Credential  # noqa: E402
from .errors import *  # noqa: E402,F401,F403
from .exec import ExecResult  # noqa: E402
from .simplebox import SimpleBox  # noqa: E402
from .sync_api import SyncBox, SyncBoxlite, SyncCodeBox, SyncExecution, SyncSimpleBox  # noqa: E402

import atexit as _atexit  # noqa: E402

from . import _native as _native_module  # noqa: E402

# Let the runtime's threads finish handing results over before the interpreter
# finalizes (see _native._quiesce).
_atexit.register(_native_module._quiesce)

#: BoxLite's names for an execution's output streams.
ExecStdout = OutputStream
ExecStderr = OutputStream

__all__ = [
    "AccessToken",
    "ApiKeyCredential",
    "Box",
    "BoxInfo",
    "BoxMetrics",
    "BoxOptions",
    "BoxStateInfo",
    "Boxlite",
    "BoxliteRestOptions",
    "CodeBox",
    "CopyOptions",
    "Credential",
    "ExecResult",
    "ExecStderr",
    "ExecStdin",
    "ExecStdout",
    "Execution",
    "NetworkSpec",
    "Options",
    "OutboundNetworkSpec",
    "RuntimeMetrics",
    "Secret",
    "SimpleBox",
    "SnapshotHandle",
    "SnapshotInfo",
    "SyncBox",
    "SyncBoxlite",
    "SyncCodeBox",
    "SyncExecution",
    "SyncSimpleBox",
    "__version__",
] + errors.__all__
