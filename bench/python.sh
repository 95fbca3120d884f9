#!/usr/bin/env bash
# Python SDK benchmark: the exec round trip (`true`, exec to exit) through the SDK next
# to the library's own on the same box, interleaved in one run; the SDK's overhead is
# the difference. Uses the SDK installed in build/venv (scripts/setup.sh). Prints
# figures; asserts nothing.
#
#   bench/python.sh [RUNS]     (default 10; each run is 10 round trips each way)
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh" "${1:-10}"
"$REPO/build/venv/bin/python" - "$RUNS" <<'PY'
import asyncio, statistics, sys, time
import boxlite

runs = int(sys.argv[1])

async def main():
    rt = boxlite.Boxlite()
    box = await rt.create(boxlite.BoxOptions(image="boxlite/busybox", network=boxlite.NetworkSpec(mode="disabled")))
    async with box:
        await (await box.exec("true")).wait()  # warm
        sdk, lib = [], []
        for _ in range(runs):
            for _ in range(10):
                t = time.perf_counter()
                await (await box.exec("true")).wait()
                sdk.append((time.perf_counter() - t) * 1000)
            lib += await box._library_exec_round_trips(10)
    for name, v in (("exec `true` round trip, Python SDK", sdk), ("exec `true` round trip, library", lib)):
        v = sorted(v)
        print(f"{name:<44} median {statistics.median(v):8.3f} ms   min {v[0]:8.3f}   max {v[-1]:8.3f}   (n={len(v)})")
    print(f"{'SDK overhead (difference of medians)':<44} {statistics.median(sdk) - statistics.median(lib):8.3f} ms")

asyncio.run(main())
PY
rm -rf "$BOXLITE_HOME"
