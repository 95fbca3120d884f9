#!/usr/bin/env bash
# Python SDK benchmark: the exec round trip (`true`, exec to exit) through the SDK next
# to the library's own on the same box, and through the SDK's REST runtime
# (`Boxlite.rest`, over a `boxlite serve` on loopback), interleaved in one run; the
# SDK's overhead is the difference of the first two. Uses the SDK installed in
# build/venv (scripts/setup.sh). Prints figures; asserts nothing.
#
#   bench/python.sh [RUNS]     (default 10; each run is 10 round trips each way)
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh" "${1:-10}"
PORT=$("$REPO/build/venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
BOXLITE_API_KEY=bench-key "$BIN" serve --port "$PORT" >/dev/null 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null; rm -rf "$BOXLITE_HOME"' EXIT
"$REPO/build/venv/bin/python" - "$RUNS" "http://127.0.0.1:$PORT" <<'PY'
import asyncio, socket, statistics, sys, time
import boxlite

runs, url = int(sys.argv[1]), sys.argv[2]
host, port = url.rsplit("/", 1)[1].split(":")
for _ in range(200):
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
        break
    except OSError:
        time.sleep(0.05)

async def timed(box, into, n=10):
    for _ in range(n):
        t = time.perf_counter()
        await (await box.exec("true")).wait()
        into.append((time.perf_counter() - t) * 1000)

async def main():
    rt = boxlite.Boxlite()
    rest = boxlite.Boxlite.rest(boxlite.BoxliteRestOptions(url, credential=boxlite.ApiKeyCredential("bench-key")))
    box = await rt.create(boxlite.BoxOptions(image="boxlite/busybox", network=boxlite.NetworkSpec(mode="disabled")))
    async with box:
        remote = await rest.get(box.id)
        await (await box.exec("true")).wait()  # warm
        await (await remote.exec("true")).wait()
        sdk, lib, over_rest = [], [], []
        for _ in range(runs):
            await timed(box, sdk)
            lib += await box._library_exec_round_trips(10)
            await timed(remote, over_rest)
    for name, v in (
        ("exec `true` round trip, Python SDK", sdk),
        ("exec `true` round trip, library", lib),
        ("exec `true` round trip, SDK over REST", over_rest),
    ):
        v = sorted(v)
        print(f"{name:<44} median {statistics.median(v):8.3f} ms   min {v[0]:8.3f}   max {v[-1]:8.3f}   (n={len(v)})")
    print(f"{'SDK overhead (difference of medians)':<44} {statistics.median(sdk) - statistics.median(lib):8.3f} ms")

asyncio.run(main())
PY
