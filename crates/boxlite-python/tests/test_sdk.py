"""The Python SDK against real boxes."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time

import pytest

import boxlite
from conftest import run


async def collect(x, text=True):
    out = [c async for c in x.stdout(text=text)]
    err = [c async for c in x.stderr(text=text)]
    return out, err, await x.wait()


def test_output_is_byte_exact_and_lines_keep_their_newlines(shared_box):
    async def go():
        script = "printf 'one\\ntwo\\n\\nlast'; printf 'e\\0rr' >&2; exit 3"
        x = await shared_box.exec("sh", ["-c", script])
        out, err, r = await collect(x, text=False)
        assert b"".join(out) == b"one\ntwo\n\nlast"
        assert b"".join(err) == b"e\0rr"
        assert r.exit_code == 3 and r.error_message is None
        x = await shared_box.exec("sh", ["-c", script])
        lines, _, _ = await collect(x)
        assert lines == ["one\n", "two\n", "\n", "last"]

    run(go())


def test_a_stream_is_taken_once(shared_box):
    async def go():
        x = await shared_box.exec("true")
        x.stdout()
        with pytest.raises(boxlite.InvalidStateError):
            x.stdout()
        assert (await x.wait()).exit_code == 0

    run(go())


def test_stdin_round_trip_of_a_mib(shared_box):
    data = bytes(range(256)) * 4096  # 1 MiB, every byte value

    async def go():
        x = await shared_box.exec("cat")
        stdin = x.stdin()

        async def feed():
            for i in range(0, len(data), 65536):
                await stdin.send_input(data[i : i + 65536])
            await stdin.close()

        got, _ = await asyncio.gather(
            asyncio.ensure_future(_read_all(x)), feed()
        )
        assert got == data
        assert stdin.is_closed()
        assert (await x.wait()).exit_code == 0

    run(go())


async def _read_all(x):
    return b"".join([c async for c in x.stdout(text=False)])


def test_exit_codes_signals_and_timeouts(shared_box):
    async def go():
        x = await shared_box.exec("sh", ["-c", "exit 42"])
        assert (await x.wait()).exit_code == 42
        x = await shared_box.exec("sleep", ["30"])
        await x.signal(15)
        r = await x.wait()
        assert (r.exit_code, r.signal) == (128 + 15, 15)
        x = await shared_box.exec("sleep", ["30"])
        await x.kill()
        assert (await x.wait()).exit_code == 137
        t = time.monotonic()
        x = await shared_box.exec("sleep", ["30"], timeout_secs=1)
        r = await x.wait()
        assert (r.exit_code, r.timed_out) == (124, True)
        assert time.monotonic() - t < 25

    run(go())


def test_env_working_dir_and_user(shared_box):
    async def go():
        x = await shared_box.exec(
            "sh",
            ["-c", 'echo "$A $B"; pwd; id -u'],
            [("A", "1")],
            cwd="/tmp",
            user="1000",
        )
        out, _, r = await collect(x)
        assert out == ["1 \n", "/tmp\n", "1000\n"], out
        # A dict works too.
        x = await shared_box.exec("sh", ["-c", 'printf "$B"'], {"B": "two words"})
        out, _, _ = await collect(x)
        assert out == ["two words"]

    run(go())


def test_ten_concurrent_execs(shared_box):
    async def one(i):
        x = await shared_box.exec("sh", ["-c", f"sleep 0.5; echo {i}"])
        out, _, r = await collect(x)
        return out, r.exit_code

    async def go():
        results = await asyncio.gather(*(one(i) for i in range(10)))
        assert results == [([f"{i}\n"], 0) for i in range(10)]

    run(go())


def test_another_thread_runs_during_a_long_exec(shared_box):
    ticks = []
    stop = threading.Event()

    def ticker():
        while not stop.is_set():
            ticks.append(time.monotonic())
            time.sleep(0.05)

    t = threading.Thread(target=ticker)
    t.start()
    try:

        async def go():
            x = await shared_box.exec("sleep", ["2"])
            return await x.wait()

        r = run(go())
    finally:
        stop.set()
        t.join()
    assert r.exit_code == 0
    # The thread ticked throughout: no gap longer than a second.
    gaps = [b - a for a, b in zip(ticks, ticks[1:])]
    assert len(ticks) > 20 and max(gaps) < 1.0, (len(ticks), max(gaps))


def test_cancelling_a_wait_leaves_the_box_usable(shared_box):
    async def go():
        x = await shared_box.exec("sh", ["-c", "sleep 3; echo done"])
        task = asyncio.ensure_future(x.wait())
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # The execution is still there and ends normally; the box still works.
        out, _, r = await collect(x)
        assert (out, r.exit_code) == (["done\n"], 0)
        y = await shared_box.exec("echo", ["after"])
        out, _, _ = await collect(y)
        assert out == ["after\n"]

    run(go())


def test_cancelling_an_exec_being_started_leaves_no_process(shared_box):
    async def go():
        for delay in (0.0, 0.01, 0.05, 0.2):
            task = asyncio.ensure_future(shared_box.exec("sleep", ["31"]))
            await asyncio.sleep(delay)
            task.cancel()
            try:
                x = await task
            except asyncio.CancelledError:
                continue
            # It started before the cancel arrived: it is ours to end.
            await x.kill()
        await asyncio.sleep(1.0)
        x = await shared_box.exec("sh", ["-c", "ps -o args | grep '^sleep 31' || true"])
        out, _, _ = await collect(x)
        assert out == [], out

    run(go())


def test_attach_by_id_from_another_handle(runtime, shared_box):
    async def go():
        x = await shared_box.exec("sh", ["-c", "sleep 1; echo later; exit 4"])
        again = await (await runtime.get("shared")).attach(x.id)
        out, _, r = await collect(again)
        assert (out, r.exit_code) == (["later\n"], 4)
        with pytest.raises(boxlite.UnsupportedError):
            await shared_box.attach()
        with pytest.raises(boxlite.NotFoundError):
            await shared_box.attach("no-such-execution")

    run(go())


def test_copy_in_and_out(shared_box, tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_bytes(b"alpha\n")
    (src / "sub" / "b.bin").write_bytes(bytes(range(256)))

    async def go():
        await shared_box.copy_in(str(src), "/root/")
        x = await shared_box.exec("cat", ["/root/src/a.txt"])
        out, _, _ = await collect(x)
        assert out == ["alpha\n"]
        await shared_box.copy_out("/root/src", str(tmp_path / "back"))

    run(go())
    assert (tmp_path / "back" / "a.txt").read_bytes() == b"alpha\n"
    assert (tmp_path / "back" / "sub" / "b.bin").read_bytes() == bytes(range(256))


def test_errors_are_typed_and_name_what_was_wrong(runtime):
    async def go():
        assert await runtime.get("no-such-box") is None
        with pytest.raises(boxlite.NotFoundError) as e:
            await runtime.remove("no-such-box")
        assert "no-such-box" in str(e.value)
        with pytest.raises(boxlite.InvalidArgumentError) as e:
            await runtime.create(boxlite.BoxOptions(image="UPPER/case::bad"))
        assert "UPPER/case::bad" in str(e.value)
        # A missing image: the pull fails (no registry is reachable from the tests).
        with pytest.raises(boxlite.ImageError) as e:
            await runtime.create(boxlite.BoxOptions(image="127.0.0.1:9/absent:v1"))
        assert isinstance(e.value, RuntimeError)
        assert "127.0.0.1:9" in str(e.value)

    run(go())
    with pytest.raises(boxlite.InvalidArgumentError, match="host directories"):
        boxlite.BoxOptions(volumes=[("/etc", "/e")])
    with pytest.raises(boxlite.InvalidArgumentError):
        run(runtime.create(boxlite.BoxOptions(image="boxlite/busybox", cpus=0)))


def test_get_or_create_from_a_second_process(runtime, home):
    code = f"""
import asyncio, boxlite
async def main():
    rt = boxlite.Boxlite(boxlite.Options(home_dir={home!r}))
    b, created = await rt.get_or_create(boxlite.BoxOptions(image="boxlite/busybox", auto_remove=False), name="twice")
    print(b.id, created)
asyncio.run(main())
"""

    def child():
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        return out.stdout.split()

    first = child()
    second = child()
    assert first[1] == "True" and second == [first[0], "False"], (first, second)


def test_simplebox_runs_and_removes_its_box(runtime):
    async def go():
        async with boxlite.SimpleBox(
            "boxlite/busybox", runtime=runtime, network=boxlite.NetworkSpec(mode="disabled")
        ) as box:
            r = await box.exec("sh", "-c", "echo out; echo err >&2; exit 2", env={"X": "1"})
            assert (r.exit_code, r.stdout, r.stderr) == (2, "out\n", "err\n")
            box_id = box.id
        # auto_remove (the default): gone once stopped.
        assert await runtime.get(box_id) is None

    run(go())


def test_codebox_runs_a_multiline_program(runtime):
    program = "import sys\nfor i in range(3):\n    print(i * i)\nprint(sys.version_info[0])\n"

    async def go():
        async with boxlite.CodeBox(runtime=runtime, network=boxlite.NetworkSpec(mode="disabled")) as cb:
            return await cb.run(program)

    assert run(go()) == "0\n1\n4\n3\n"


def test_the_sync_api(home):
    with boxlite.SyncBoxlite(boxlite.Options(home_dir=home)) as rt:
        with boxlite.SyncSimpleBox(
            "boxlite/busybox", runtime=rt, network=boxlite.NetworkSpec(mode="disabled")
        ) as box:
            r = box.exec("sh", "-c", "printf 'a\\nb'")
            assert (r.exit_code, r.stdout) == (0, "a\nb")
            x = box._box.exec("cat")
            stdin = x.stdin()
            stdin.send_input(b"via stdin")
            stdin.close()
            assert list(x.stdout()) == ["via stdin"]
            assert x.wait().exit_code == 0
            box_id = box.id
        assert rt.get_info(box_id) is None


def test_the_sync_api_refuses_a_running_loop(home):
    async def go():
        with boxlite.SyncBoxlite(boxlite.Options(home_dir=home)) as rt:
            with pytest.raises(RuntimeError, match="asyncio loop"):
                rt.list_info()

    run(go())


def test_codebox_installs_a_package_from_an_index_on_the_host(runtime, tmp_path):
    """pip in the box, from a PyPI-style index served on the host's loopback, reached
    through the box's egress policy (a name for the host and one allow rule)."""
    import base64
    import functools
    import hashlib
    import http.server
    import zipfile

    files = {
        "hello_boxlite/__init__.py": "GREETING = 'installed from the host index'\n",
        "hello_boxlite-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: hello-boxlite\nVersion: 1.0\n",
        "hello_boxlite-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: boxlite-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    (tmp_path / "files").mkdir()
    (tmp_path / "simple" / "hello-boxlite").mkdir(parents=True)
    wheel = tmp_path / "files" / "hello_boxlite-1.0-py3-none-any.whl"
    record = []
    with zipfile.ZipFile(wheel, "w") as z:
        for name, text in files.items():
            data = text.encode()
            z.writestr(name, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            record.append(f"{name},sha256={digest},{len(data)}")
        record.append("hello_boxlite-1.0.dist-info/RECORD,,")
        z.writestr("hello_boxlite-1.0.dist-info/RECORD", "\n".join(record) + "\n")
    sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
    (tmp_path / "simple" / "hello-boxlite" / "index.html").write_text(
        f'<!DOCTYPE html><html><body><a href="/files/{wheel.name}#sha256={sha}">{wheel.name}</a></body></html>'
    )
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    port = server.server_address[1]
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:

        async def go():
            async with boxlite.CodeBox(
                runtime=runtime,
                env=[
                    ("PIP_INDEX_URL", f"http://pypi.test:{port}/simple/"),
                    ("PIP_TRUSTED_HOST", "pypi.test"),
                ],
                network=boxlite.NetworkSpec(
                    allow_net=[f"pypi.test:{port}"], hosts=["pypi.test:host-gateway"]
                ),
            ) as cb:
                out = await cb.install_package("hello-boxlite")
                assert "Successfully installed hello-boxlite-1.0" in out, out
                return await cb.run("import hello_boxlite; print(hello_boxlite.GREETING)")

        assert run(go()) == "installed from the host index\n"
    finally:
        server.shutdown()


def test_info_and_metrics_of_a_local_box(runtime, shared_box):
    async def go():
        await (await shared_box.exec("true")).wait()
        m = await shared_box.metrics()
        assert m.commands_executed_total is not None and m.commands_executed_total >= 1
        assert m.vmm_rss_bytes and m.vmm_rss_bytes > 0
        assert m.total_create_duration_ms is not None and m.total_create_duration_ms > 0
        info = await shared_box.info()
        assert (info.id, info.state.status, info.state.running) == (shared_box.id, "running", True)
        rm = await runtime.metrics()
        assert rm.num_running_boxes >= 1

    run(go())


def test_pause_resume_snapshots_and_clones(runtime):
    """BoxLite's box.snapshot handle and clone_box, with memory: a clone of a memory
    snapshot runs with the box's files in memory; pause and resume keep them."""

    async def go():
        opts = boxlite.BoxOptions(image="boxlite/busybox", auto_remove=False)
        b = await runtime.create(opts, name="py-snap")
        await b.start()
        await (await b.exec("sh", ["-c", "echo kept > /dev/shm/m"])).wait()

        snap = await b.snapshot.create(name="one")
        assert (snap.name, snap.box_id, snap.memory) == ("one", b.id, True)
        assert snap.size_bytes > 0
        assert [s.name for s in await b.snapshot.list()] == ["one"]
        assert (await b.snapshot.get("one")).id == snap.id
        with pytest.raises(boxlite.BoxliteError) as missing:
            await b.snapshot.get("nope")
        assert "nope" in str(missing.value)

        c = await b.clone_box(name="py-clone", snapshot="one")
        out, _, r = await collect(await c.exec("cat", ["/dev/shm/m"]))
        assert (out, r.exit_code) == (["kept\n"], 0)
        assert (await c.info()).state.status == "running"

        await c.pause()
        assert (await c.info()).state.status == "paused"
        await c.resume()
        out, _, r = await collect(await c.exec("cat", ["/dev/shm/m"]))
        assert (out, r.exit_code) == (["kept\n"], 0)

        await b.snapshot.remove("one")
        assert await b.snapshot.list() == []
        for x in (c, b):
            await runtime.remove(x.id, force=True)

    run(go())
