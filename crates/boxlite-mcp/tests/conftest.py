"""Set-up for the MCP server's tests: the release `boxlite` CLI that setup built, driven
by the official Python MCP client (`mcp` from PyPI), each test in a private home.

The server is started for real (`boxlite mcp`, over stdio or streamable HTTP) and boots
real boxes under TCG or KVM. After every test, no box of its home may be left that the
server should have removed, and no VM process may run for that home.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
BOXLITE = Path(os.environ.get("BOXLITE_BIN", REPO / "target" / "release" / "boxlite"))

# Boxes never reach anything but loopback, and no real resolver.
os.environ.setdefault("BOXLITE_NET_TEST_GUARD", "1")
os.environ.setdefault("BOXLITE_NET_DNS", "127.0.0.1:9")
os.environ.setdefault("BOXLITE_ASSETS", str(REPO / "build" / "assets"))


def server_env(home: str, **extra: str) -> dict[str, str]:
    """The environment a server gets: ours (assets, test guards, jail mode) and its home.

    MCP clients pass a server only a few variables of their own unless told; the tests
    pass everything explicitly, as a client's configuration would.
    """
    env = {k: v for k, v in os.environ.items() if k.startswith(("BOXLITE_", "RUST_"))}
    env.update({"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root")})
    env["BOXLITE_HOME"] = home
    env.update(extra)
    return env


def cli(home: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BOXLITE), "--home", home, *args],
        capture_output=True,
        text=True,
        check=check,
        timeout=300,
        env=server_env(home),
    )


def boxes(home: str) -> list[dict]:
    return json.loads(cli(home, "ls", "-a", "--format", "json").stdout)


def vm_processes(home: str) -> list[str]:
    """Helper processes (QEMU, shim, network helper, virtiofsd) of this home."""
    out = subprocess.run(["pgrep", "-fa", "qemu-system|boxlite-shim|boxlite-net|virtiofsd"],
                         capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if home in line]


def wait_for(what: str, cond, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


@pytest.fixture
def home():
    d = tempfile.mkdtemp(prefix="bxt-mcp-")
    yield d
    left = [b for b in boxes(d) if b["config"]["labels"].get("boxlite.mcp.remove") == "session-end"]
    # Clean up whatever is there, then fail if the server should have done it.
    for b in boxes(d):
        cli(d, "rm", "-f", b["id"], check=False)
    procs = vm_processes(d)
    shutil.rmtree(d, ignore_errors=True)
    assert not left, f"boxes an ended MCP session should have removed: {[b['id'] for b in left]}"
    assert not procs, f"VM processes outlived the test: {procs}"
