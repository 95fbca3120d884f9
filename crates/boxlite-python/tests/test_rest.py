"""The REST runtime: ``Boxlite.rest(...)`` against a real ``boxlite serve`` and real boxes.

One server and one box serve the steps where isolation is not what is tested.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

import boxlite

from conftest import REPO, run

KEY = "k3y-of-the-python-rest-test"


def _boxlite_bin() -> str:
    if os.environ.get("BOXLITE_BIN"):
        return os.environ["BOXLITE_BIN"]
    for profile in ("release", "debug"):
        p = REPO / "target" / profile / "boxlite"
        if p.exists():
            return str(p)
    pytest.fail("no boxlite binary: build it (cargo build --release -p boxlite-cli)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    """A ``boxlite serve`` over a home of its own, with an API key; stopped (and its
    boxes removed) at the end."""
    home = tempfile.mkdtemp(prefix="bxt-pyrest-")
    port = _free_port()
    env = dict(os.environ, BOXLITE_HOME=home, BOXLITE_API_KEY=KEY)
    env.pop("BOXLITE_URL", None)
    child = subprocess.Popen(
        [_boxlite_bin(), "serve", "--port", str(port)],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert child.poll() is None, "boxlite serve exited"
            assert time.monotonic() < deadline, "boxlite serve did not listen"
            time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", home
    child.send_signal(signal.SIGTERM)
    child.wait(timeout=30)
    # The server leaves boxes running by design; remove them with their helpers.
    local = boxlite.Boxlite(boxlite.Options(home_dir=home))

    async def clean():
        for info in await local.list_info():
            await local.remove(info.id, force=True)

    run(clean())


@pytest.fixture(scope="module")
def rest(server):
    url, _ = server
    return boxlite.Boxlite.rest(
        boxlite.BoxliteRestOptions(url, credential=boxlite.ApiKeyCredential(KEY))
    )


@pytest.fixture(scope="module")
def rest_box(rest):
    opts = boxlite.BoxOptions(
        image="boxlite/busybox",
        auto_remove=False,
        env=[("FROM_BOX", "yes")],
        working_dir="/tmp",
        network=boxlite.NetworkSpec(mode="disabled"),
    )

    async def make():
        b = await rest.create(opts, name="rest-shared")
        await b.start()
        return b

    return run(make())


async def _collect(ex, text=True):
    out, err = [], []

    async def drain(stream, into):
        async for item in stream:
            into.append(item)

    await asyncio.gather(drain(ex.stdout(text=text), out), drain(ex.stderr(text=text), err))
    res = await ex.wait()
    empty = "" if text else b""
    return empty.join(out), empty.join(err), res


def test_options_and_credentials_hide_the_key():
    cred = boxlite.ApiKeyCredential("s3cret")
    assert "s3cret" not in repr(cred)
    assert cred.get_token().token == "s3cret"
    assert cred.get_token().expires_at is None
    assert "s3cret" not in repr(cred.get_token())
    assert isinstance(cred, boxlite.Credential)
    o = boxlite.BoxliteRestOptions("http://h:1", credential=cred)
    assert "s3cret" not in repr(o) and o.path_prefix is None
    old = {k: os.environ.pop(k, None) for k in ("BOXLITE_REST_URL", "BOXLITE_API_KEY")}
    try:
        with pytest.raises(boxlite.ConfigError, match="BOXLITE_REST_URL"):
            boxlite.BoxliteRestOptions.from_env()
        os.environ["BOXLITE_REST_URL"] = "http://h:2"
        os.environ["BOXLITE_API_KEY"] = "k"
        o = boxlite.BoxliteRestOptions.from_env()
        assert (o.url, o.credential.get_token().token) == ("http://h:2", "k")
    finally:
        for k, v in old.items():
            os.environ.pop(k, None)
            if v is not None:
                os.environ[k] = v


async def _create(rt, opts):
    return await rt.create(opts)


async def _remove(rt, id):
    await rt.remove(id)


def test_secrets_go_to_the_server_as_values_read_here(server, rest):
    value = "sk-rest-9e8d7c"
    _, home = server
    os.environ["BOXLITE_PY_REST_SECRET"] = value
    try:
        opts = boxlite.BoxOptions(
            image="boxlite/busybox",
            auto_remove=False,
            secrets=[boxlite.Secret("K", hosts=["api.test"], env="BOXLITE_PY_REST_SECRET")],
        )
        b = run(_create(rest, opts))
    finally:
        del os.environ["BOXLITE_PY_REST_SECRET"]
    stored = Path(home) / "boxes" / b.id / "secrets" / "K"
    assert stored.read_text() == value
    assert oct(stored.stat().st_mode & 0o777) == "0o600"
    run(_remove(rest, b.id))
    empty = boxlite.BoxOptions(image="boxlite/busybox", secrets=[boxlite.Secret("K", value)])
    with pytest.raises(boxlite.InvalidArgumentError, match="has no hosts") as err:
        run(_create(rest, empty))
    assert value not in str(err.value)


def test_a_box_on_the_server_runs_commands_byte_exact(rest, rest_box):
    async def go():
        ex = await rest_box.exec("sh", ["-c", "printf 'a\\nb'; printf 'err' >&2; exit 3"])
        out, err, res = await _collect(ex)
        assert (out, err, res.exit_code) == ("a\nb", "err", 3)
        # Bytes exactly as written, the box's env and working directory, ours on top.
        ex = await rest_box.exec(
            "sh",
            ["-c", 'printf "%s %s %s" "$FROM_BOX" "$MINE" "$(pwd)"; printf "\\377\\000"'],
            env={"MINE": "1"},
        )
        out, _, res = await _collect(ex, text=False)
        assert out == b"yes 1 /tmp\xff\x00" and res.exit_code == 0
        ex = await rest_box.exec("id", ["-u"], user="1000")
        out, _, _ = await _collect(ex)
        assert out == "1000\n"

    run(go())


def test_stdin_of_a_mib_round_trips_over_the_websocket(rest_box):
    data = os.urandom(1 << 20)

    async def go():
        ex = await rest_box.exec("cat")
        stdin = ex.stdin()

        async def feed():
            await stdin.send_input(data)
            await stdin.close()

        got = []

        async def drain():
            async for chunk in ex.stdout(text=False):
                got.append(chunk)

        await asyncio.gather(feed(), drain())
        assert b"".join(got) == data
        assert (await ex.wait()).exit_code == 0
        # Stdin of a command that has ended takes nothing more.
        ex = await rest_box.exec("true")
        late = ex.stdin()
        assert (await ex.wait()).exit_code == 0
        with pytest.raises(boxlite.InvalidStateError, match="has ended"):
            await late.send_input(b"x")
        # The stdin= form: written, then closed.
        ex = await rest_box.exec("wc", ["-c"], stdin=b"12345")
        out, _, _ = await _collect(ex)
        assert out.strip() == "5"

    run(go())


def test_timeouts_kills_and_signals_end_as_locally(rest_box):
    async def go():
        ex = await rest_box.exec("sleep", ["30"], timeout_secs=0.5)
        res = await ex.wait()
        assert (res.exit_code, res.timed_out) == (124, True)
        ex = await rest_box.exec("sleep", ["30"])
        await asyncio.sleep(0.3)
        await ex.kill()
        res = await ex.wait()
        assert (res.exit_code, res.signal) == (137, 9)
        ex = await rest_box.exec("sleep", ["30"])
        await asyncio.sleep(0.3)
        await ex.signal(15)
        res = await ex.wait()
        assert (res.exit_code, res.signal) == (143, 15)
        # Output that nobody reads does not hold up wait().
        ex = await rest_box.exec("sh", ["-c", "head -c 3000000 /dev/zero; exit 7"])
        assert (await ex.wait()).exit_code == 7
        got = 0
        async for chunk in ex.stdout(text=False):
            got += len(chunk)
        assert got == 3_000_000

    run(go())


def test_attach_by_id_and_ten_concurrent_execs(server, rest, rest_box):
    url, _ = server
    # An execution another client started (the CLI, detached), attached to here.
    started = subprocess.run(
        [_boxlite_bin(), "--url", url, "exec", "-d", "rest-shared", "sh", "-c", "sleep 0.5; echo late"],
        env=dict(os.environ, BOXLITE_API_KEY=KEY),
        capture_output=True,
        text=True,
        check=True,
    )
    eid = started.stdout.strip()

    async def go():
        other = await rest.get("rest-shared")
        again = await other.attach(eid)
        # One client at a time: a second attach is refused, typed.
        with pytest.raises(boxlite.AlreadyExistsError, match="another client"):
            await rest_box.attach(eid)
        out, _, res = await _collect(again)
        assert (out, res.exit_code) == ("late\n", 0)

        async def one(i):
            e = await rest_box.exec("sh", ["-c", f"echo {i}"])
            o, _, r = await _collect(e)
            return o, r.exit_code

        results = await asyncio.gather(*(one(i) for i in range(10)))
        assert results == [(f"{i}\n", 0) for i in range(10)]

    run(go())


def test_copies_stream_to_and_from_the_server(rest_box, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    (src / "f.txt").write_bytes(b"hello\x00world")
    out = tmp_path / "out"
    out.mkdir()

    async def go():
        await rest_box.copy_in(str(src), "/tmp/copied")
        ex = await rest_box.exec("cat", ["/tmp/copied/f.txt"])
        o, _, _ = await _collect(ex, text=False)
        assert o == b"hello\x00world"
        await rest_box.copy_out("/tmp/copied", str(out))
        assert (out / "copied" / "f.txt").read_bytes() == b"hello\x00world"
        # A host path that is not there is refused on the host, before any request.
        with pytest.raises(boxlite.BoxliteError, match="nope"):
            await rest_box.copy_in(str(tmp_path / "nope"), "/tmp")

    run(go())


def test_the_collection_info_metrics_and_get_or_create(rest, rest_box):
    async def go():
        info = await rest_box.info()
        assert (info.id, info.name, info.state.status) == (rest_box.id, "rest-shared", "running")
        assert info.image.endswith("boxlite/busybox") or "busybox" in info.image
        assert (await rest.get_info("rest-shared")).id == rest_box.id
        assert rest_box.id in [i.id for i in await rest.list_info()]
        m = await rest_box.metrics()
        assert m.commands_executed_total is not None and m.commands_executed_total >= 1
        rm = await rest.metrics()
        assert rm.num_running_boxes >= 1
        opts = boxlite.BoxOptions(image="boxlite/busybox", auto_remove=False)
        same, created = await rest.get_or_create(opts, name="rest-shared")
        assert (same.id, created) == (rest_box.id, False)
        fresh, created = await rest.get_or_create(opts, name="rest-fresh")
        assert created and fresh.id != rest_box.id
        await rest.remove("rest-fresh")
        assert await rest.get("rest-fresh") is None
        assert await rest.get_info("rest-fresh") is None

    run(go())


def test_the_async_with_and_simplebox_over_rest(rest):
    async def go():
        async with boxlite.SimpleBox(image="boxlite/busybox", runtime=rest) as sb:
            r = await sb.exec("echo", "hi")
            assert (r.stdout, r.exit_code) == ("hi\n", 0)
            sid = sb.id
        # auto_remove: the server removed it as it stopped.
        deadline = time.monotonic() + 20
        while await rest.get(sid) is not None:
            assert time.monotonic() < deadline, "the auto_remove box is still there"
            await asyncio.sleep(0.2)

    run(go())


def test_errors_over_rest_are_typed_and_say_what_to_change(server, rest, rest_box):
    url, _ = server

    async def go():
        with pytest.raises(boxlite.NotFoundError, match="no-such-box"):
            await rest.remove("no-such-box")
        with pytest.raises(boxlite.UnsupportedError, match="ports"):
            await rest.create(boxlite.BoxOptions(image="boxlite/busybox", ports=[(8080, 80)]))
        with pytest.raises(boxlite.ImageError):
            await rest.create(boxlite.BoxOptions(image="127.0.0.1:9/none/such:1"))
        with pytest.raises(boxlite.InvalidArgumentError, match="seconds"):
            await rest_box.exec("sh", ["-c", "true"], timeout_secs=-1)
        with pytest.raises(boxlite.InvalidArgumentError, match="working dir|directory|/nonexistent"):
            ex = await rest_box.exec("true", cwd="/nonexistent")
            await ex.wait()
        bad = boxlite.Boxlite.rest(
            boxlite.BoxliteRestOptions(url, credential=boxlite.ApiKeyCredential("wrong"))
        )
        with pytest.raises(boxlite.ConfigError, match="refused the API key"):
            await bad.list_info()
        none = boxlite.Boxlite.rest(boxlite.BoxliteRestOptions(url))
        with pytest.raises(boxlite.ConfigError, match="ApiKeyCredential"):
            await none.list_info()
        # Nothing listens on port 9 of loopback.
        gone = boxlite.Boxlite.rest(boxlite.BoxliteRestOptions("http://127.0.0.1:9"))
        with pytest.raises(boxlite.NetworkError, match="cannot reach"):
            await gone.list_info()

    run(go())
    with pytest.raises(boxlite.InvalidArgumentError, match="BoxliteRestOptions.url"):
        boxlite.Boxlite.rest(boxlite.BoxliteRestOptions("localhost:8100"))
    with pytest.raises(boxlite.InvalidArgumentError, match="one path segment"):
        boxlite.Boxlite.rest(boxlite.BoxliteRestOptions(url, path_prefix="a/b"))
    with pytest.raises(boxlite.InvalidArgumentError) as e:
        boxlite.Boxlite.rest(boxlite.BoxliteRestOptions("http://me:pw0rd@h:1"))
    assert "pw0rd" not in str(e.value)


def test_the_sync_api_over_rest(server):
    url, _ = server
    with boxlite.SyncBoxlite.rest(
        boxlite.BoxliteRestOptions(url, credential=boxlite.ApiKeyCredential(KEY))
    ) as rt:
        b = rt.create(boxlite.BoxOptions(image="boxlite/busybox", auto_remove=False), name="rest-sync")
        try:
            r = b.exec("echo", ["sync"])
            assert r.wait().exit_code == 0
        finally:
            rt.remove("rest-sync", force=True)


def test_cancellation_over_rest_leaks_no_process(rest_box):
    async def go():
        # A cancelled wait: the execution goes on and its output is still there.
        x = await rest_box.exec("sh", ["-c", "sleep 1; echo done"])
        task = asyncio.ensure_future(x.wait())
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        out, _, res = await _collect(x)
        assert (out, res.exit_code) == ("done\n", 0)
        # A cancelled start: whatever started is killed, nothing is left running.
        for delay in (0.0, 0.01, 0.05, 0.2):
            task = asyncio.ensure_future(rest_box.exec("sleep", ["32"]))
            await asyncio.sleep(delay)
            task.cancel()
            try:
                started = await task
            except asyncio.CancelledError:
                continue
            await started.kill()
        await asyncio.sleep(1.0)
        x = await rest_box.exec("sh", ["-c", "ps -o args | grep '^sleep 32' || true"])
        out, _, _ = await _collect(x)
        assert out == "", out

    run(go())
