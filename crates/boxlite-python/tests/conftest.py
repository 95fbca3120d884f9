"""Test set-up: real boxes under TCG or KVM, in a private home per session.

The SDK under test is the installed ``boxlite`` package (the wheel, or ``maturin
develop``). When it carries no helper binaries (a development build), the ones cargo
built are used; the guest assets come from ``BOXLITE_ASSETS`` (``scripts/test.sh`` sets
it) or the wheel.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]

# Boxes never reach anything but loopback, and no real resolver.
os.environ.setdefault("BOXLITE_NET_TEST_GUARD", "1")
os.environ.setdefault("BOXLITE_NET_DNS", "127.0.0.1:9")

import boxlite  # noqa: E402  (points the library at the helpers the wheel carries)

# A development build (`maturin develop`) carries none: use the ones cargo built.
for var, name in (("BOXLITE_SHIM", "boxlite-shim"), ("BOXLITE_NET", "boxlite-net")):
    if var not in os.environ:
        for profile in ("debug", "release"):
            p = REPO / "target" / profile / name
            if p.exists():
                os.environ[var] = str(p)
                break


@pytest.fixture(scope="session")
def home():
    d = tempfile.mkdtemp(prefix="bxt-py-")
    yield d
    # Every box the tests left is removed with its helpers.
    rt = boxlite.Boxlite(boxlite.Options(home_dir=d))

    async def clean():
        for info in await rt.list_info():
            await rt.remove(info.id, force=True)

    asyncio.run(clean())
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def runtime(home):
    return boxlite.Boxlite(boxlite.Options(home_dir=home))


@pytest.fixture(scope="session")
def shared_box(runtime):
    """One running box for the tests where isolation is not what is tested."""
    opts = boxlite.BoxOptions(
        image="boxlite/busybox",
        auto_remove=False,
        network=boxlite.NetworkSpec(mode="disabled"),
    )

    async def make():
        b = await runtime.create(opts, name="shared")
        await b.start()
        return b

    return asyncio.run(make())


def run(coro):
    """Run a coroutine to completion on a fresh event loop."""
    return asyncio.run(coro)
