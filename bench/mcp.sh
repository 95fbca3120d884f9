#!/usr/bin/env bash
# MCP benchmark: what `boxlite mcp` costs on top of the runtime, through the official
# Python MCP client (build/mcp-venv). Side by side in one run, on one box:
# - exec `true` round trip over stdio, over streamable HTTP, and `boxlite exec` (a whole
#   CLI process per call, the baseline an agent without MCP would shell out to);
# - a session's start (spawn the server and initialize), create_box (warm start),
#   run_code `print(1)`, and write_file/read_file of 1 MiB (base64).
# Prints medians (and min, max); asserts nothing.
#
#   bench/mcp.sh [RUNS]     (default 10)
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh" "${1:-10}"
PY=$REPO/build/mcp-venv/bin/python
[[ -x $PY ]] || { echo "build first: scripts/setup.sh (build/mcp-venv)" >&2; exit 1; }
trap 'rm -rf "$BOXLITE_HOME"' EXIT
"$PY" - "$RUNS" "$BIN" "$BOXLITE_HOME" <<'PY'
import asyncio, base64, os, re, statistics, subprocess, sys, time

import httpx2
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

runs, binary, home = int(sys.argv[1]), sys.argv[2], sys.argv[3]
env = {k: v for k, v in os.environ.items() if k.startswith(("BOXLITE_", "PATH", "HOME"))}
params = StdioServerParameters(command=binary, args=["--home", home, "mcp"], env=env)
figures: dict[str, list[float]] = {}


def note(name: str, ms: float):
    figures.setdefault(name, []).append(ms)


async def timed(name: str, coro):
    t = time.perf_counter()
    r = await coro
    note(name, (time.perf_counter() - t) * 1000)
    return r


async def ok(s, tool, **args):
    r = await s.call_tool(tool, args)
    assert not r.is_error, r.content
    return r.structured_content


async def main():
    srv = subprocess.Popen([binary, "--home", home, "mcp", "--http", "127.0.0.1:0"],
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True, env=env)
    url = "http://" + re.search(r"http://(\S+)/mcp", srv.stderr.readline()).group(1) + "/mcp"
    try:
        async with stdio_client(params) as (r, w), ClientSession(r, w) as s, \
                httpx2.AsyncClient(timeout=httpx2.Timeout(300)) as h, \
                streamable_http_client(url, http_client=h) as (hr, hw), \
                ClientSession(hr, hw) as hs:
            await s.initialize()
            await hs.initialize()
            box = (await ok(s, "create_box", image="boxlite/busybox", network="none"))["box_id"]
            await ok(s, "run_code", language="python", code="pass")  # the code box
            blob = base64.b64encode(os.urandom(1 << 20)).decode()
            for _ in range(runs):
                for _ in range(10):
                    await timed("exec true: MCP stdio (ms)", ok(s, "exec", box=box, command="true"))
                    await timed("exec true: MCP HTTP (ms)", ok(hs, "exec", box=box, command="true"))
                    t = time.perf_counter()
                    subprocess.run([binary, "--home", home, "exec", box, "true"], check=True, env=env)
                    note("exec true: boxlite exec process (ms)", (time.perf_counter() - t) * 1000)
                await timed("run_code print(1), python (ms)",
                            ok(s, "run_code", language="python", code="print(1)"))
                await timed("write_file 1 MiB (ms)", ok(s, "write_file", box=box, path="/tmp/blob",
                                                         content=blob, encoding="base64"))
                await timed("read_file 1 MiB (ms)", ok(s, "read_file", box=box, path="/tmp/blob"))
                made = await timed("create_box busybox, warm (ms)",
                                   ok(s, "create_box", image="boxlite/busybox", network="none"))
                await ok(s, "remove_box", box=made["box_id"])
        for _ in range(runs):
            t = time.perf_counter()
            async with stdio_client(params) as (r, w), ClientSession(r, w) as s:
                await s.initialize()
                note("session start: spawn + initialize (ms)", (time.perf_counter() - t) * 1000)
    finally:
        srv.terminate()
        srv.wait()
    for name, v in figures.items():
        print(f"{name:<44} median {statistics.median(v):8.2f}   min {min(v):8.2f}   "
              f"max {max(v):8.2f}   (n={len(v)})")


asyncio.run(main())
PY
