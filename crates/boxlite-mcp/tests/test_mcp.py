"""`boxlite mcp` driven by the official Python MCP client, over stdio and over HTTP."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import signal
import subprocess
import time

import httpx2
import pytest
from mcp import ClientSession, MCPError, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

from conftest import BOXLITE, boxes, cli, server_env, vm_processes, wait_for

TOOLS = {
    "create_box", "list_boxes", "stop_box", "start_box", "remove_box", "exec", "run_code",
    "write_file", "read_file", "list_files", "pause_box", "resume_box", "clone_box",
}


def stdio_params(home: str, *args: str) -> StdioServerParameters:
    return StdioServerParameters(
        command=str(BOXLITE), args=["--home", home, "mcp", *args], env=server_env(home)
    )


async def call(s: ClientSession, tool: str, **args):
    """A tool call that must succeed: its structured result."""
    r = await s.call_tool(tool, args)
    text = " ".join(getattr(c, "text", "") for c in r.content)
    assert not r.is_error, f"{tool}({args}) failed: {text}"
    return r.structured_content


async def fails(s: ClientSession, tool: str, **args) -> str:
    """A tool call that must fail as a tool error (not a protocol error): its message."""
    r = await s.call_tool(tool, args)
    text = " ".join(getattr(c, "text", "") for c in r.content)
    assert r.is_error, f"{tool}({args}) should have failed: {r.structured_content}"
    return text


def mcp_boxes(home: str) -> list[dict]:
    return [b for b in boxes(home) if "boxlite.mcp.session" in b["config"]["labels"]]


async def check_tools(s: ClientSession):
    tools = {t.name: t for t in (await s.list_tools()).tools}
    assert set(tools) == TOOLS
    for t in tools.values():
        assert t.description and len(t.description) > 20, t.name
        assert t.input_schema["type"] == "object", t.name
        assert t.output_schema and t.output_schema["type"] == "object", t.name
    ex = tools["exec"].input_schema
    assert set(ex["required"]) == {"box", "command"}
    assert {"args", "stdin", "working_dir", "user", "env", "timeout_secs"} <= set(ex["properties"])
    assert {"exit_code", "stdout", "stderr", "stdout_dropped_bytes"} <= set(
        tools["exec"].output_schema["properties"])
    rc = tools["run_code"].input_schema
    assert set(rc["required"]) == {"language", "code"}
    assert "python" in json.dumps(rc) and "shell" in json.dumps(rc)
    cb = tools["create_box"].input_schema["properties"]
    assert {"image", "name", "memory_mib", "cpus", "env", "network", "allow_net", "deny_net",
            "volumes"} <= set(cb)
    assert tools["read_file"].annotations.read_only_hint is True
    assert tools["remove_box"].annotations.destructive_hint is True


async def stdio_session(home: str):
    """The main flow over stdio, in one session (one box per capability where isolation
    is not what is tested)."""
    async with stdio_client(stdio_params(home, "--max-output", "4096")) as (r, w):
        async with ClientSession(r, w) as s:
            init = await s.initialize()
            assert init.server_info.name == "boxlite"
            assert init.instructions and "run_code" in init.instructions
            await check_tools(s)

            made = await call(s, "create_box", image="boxlite/busybox", name="mcp-one",
                              network="none")
            bid = made["box_id"]
            assert made["state"] == "running" and made["this_session"] is True

            # exec: exit code, both streams, stdin, cwd, env.
            r = await call(s, "exec", box="mcp-one", command="sh",
                           args=["-c", "echo out; echo err >&2; exit 3"])
            assert (r["exit_code"], r["stdout"], r["stderr"]) == (3, "out\n", "err\n")
            assert r["timed_out"] is False and r["box_id"] == bid
            r = await call(s, "exec", box=bid, command="sh", args=["-c", "cat; pwd; echo $GREETING"],
                           stdin="from stdin\n", working_dir="/tmp", env={"GREETING": "hi"})
            assert r["stdout"] == "from stdin\n/tmp\nhi\n"

            # Output past the cap: the middle is dropped and counted, never silently.
            r = await call(s, "exec", box=bid, command="sh",
                           args=["-c", "echo START; head -c 100000 /dev/zero | tr '\\0' a; echo; echo END"])
            assert r["stdout_bytes"] == 100011
            assert r["stdout_dropped_bytes"] == 100011 - 4096
            assert r["stdout"].startswith("START\n") and r["stdout"].endswith("END\n")
            assert f"{100011 - 4096} bytes of stdout dropped" in r["stdout"]

            # A timeout ends the command and says so.
            r = await call(s, "exec", box=bid, command="sleep", args=["60"], timeout_secs=1)
            assert r["timed_out"] is True and r["exit_code"] is None

            # A process left in the background holding stdout does not hold the call: it
            # returns once the command exits, saying the output was left open.
            r = await call(s, "exec", box=bid, command="sh", args=["-c", "echo up; sleep 300 &"])
            assert (r["exit_code"], r["stdout"], r["output_left_open"]) == (0, "up\n", True)
            r = await call(s, "exec", box=bid, command="true")
            assert r["output_left_open"] is False

            # A call the client abandons (its read timeout sends notifications/cancelled)
            # kills its command.
            with pytest.raises(Exception):
                await s.call_tool("exec", {"box": bid, "command": "sh",
                                           "args": ["-c", "echo $$ > /tmp/victim; exec sleep 300"]},
                                  read_timeout_seconds=3)
            probe = "kill -0 $(cat /tmp/victim) 2>/dev/null && echo alive || echo gone"
            for _ in range(50):
                if (await call(s, "exec", box=bid, command="sh", args=["-c", probe]))["stdout"] == "gone\n":
                    break
                await asyncio.sleep(0.2)
            else:
                raise AssertionError("the cancelled call's command still runs")

            # Errors are tool errors with the library's message.
            msg = await fails(s, "exec", box=bid, command="no-such-program")
            assert "no-such-program" in msg
            msg = await fails(s, "exec", box="no-such-box", command="true")
            assert "not_found" in msg and "no-such-box" in msg
            msg = await fails(s, "create_box", image="boxlite/busybox", memory_mib=1)
            assert "memory" in msg
            msg = await fails(s, "create_box", image="boxlite/busybox", volumes=["/etc:/x"])
            assert "volume" in msg
            msg = await fails(s, "create_box", image="boxlite/busybox", volumes=["shared:/x"])
            assert "named volume" in msg
            assert "timeout_secs" in await fails(s, "exec", box=bid, command="true",
                                                 timeout_secs=10**9)
            assert "limit" in await fails(s, "create_box", image="boxlite/busybox",
                                          memory_mib=65536)
            # Egress an agent must never open: refused, and denied on every box made here.
            for rule in ["loopback", "host", "metadata", "private", "10.0.2.2", "169.254.169.254:80",
                         "127.0.0.1/32", "192.168.1.0/24"]:
                assert "never reach" in await fails(s, "create_box", image="boxlite/busybox",
                                                    allow_net=[rule]), rule
            # Arguments that do not match the schema: a tool error, not a crash.
            await fails(s, "exec", box=bid)
            await fails(s, "exec", box=bid, command="true", bogus=1)
            await fails(s, "exec", box=123, command="true")
            with pytest.raises(MCPError):
                await s.call_tool("no_such_tool", {})

            # Files: text with parents created, binary in base64, limits and paths.
            w = await call(s, "write_file", box=bid, path="/tmp/d/e/note.txt", content="hello\n")
            assert w["bytes"] == 6
            f = await call(s, "read_file", box=bid, path="/tmp/d/e/note.txt")
            assert (f["content"], f["encoding"], f["size"]) == ("hello\n", "text", 6)
            blob = bytes(range(256))
            await call(s, "write_file", box=bid, path="/tmp/d/blob", encoding="base64",
                       content=base64.b64encode(blob).decode(), mode="600")
            f = await call(s, "read_file", box=bid, path="/tmp/d/blob")
            assert f["encoding"] == "base64" and base64.b64decode(f["content"]) == blob
            r = await call(s, "exec", box=bid, command="stat", args=["-c", "%a %s", "/tmp/d/blob"])
            assert r["stdout"] == "600 256\n"
            assert "not UTF-8" in await fails(s, "read_file", box=bid, path="/tmp/d/blob",
                                              encoding="text")
            msg = await fails(s, "read_file", box=bid, path="/tmp/d/e/note.txt", max_bytes=2)
            assert "6 bytes" in msg and "limit of 2" in msg
            assert "directory" in await fails(s, "read_file", box=bid, path="/tmp/d")
            assert "not_found" in await fails(s, "read_file", box=bid, path="/tmp/nothing")
            assert "absolute" in await fails(s, "write_file", box=bid, path="rel.txt", content="x")
            assert "base64" in await fails(s, "write_file", box=bid, path="/tmp/x",
                                           content="%%%", encoding="base64")
            assert "mode" in await fails(s, "write_file", box=bid, path="/tmp/x", content="x",
                                         mode="999")
            # A link is followed inside the box: an absolute target is the box's path, and
            # the box's /etc/passwd is not the host's.
            await call(s, "exec", box=bid, command="ln", args=["-s", "/tmp/d/e/note.txt", "/tmp/d/link"])
            assert (await call(s, "read_file", box=bid, path="/tmp/d/link"))["content"] == "hello\n"

            listing = await call(s, "list_files", box=bid, path="/tmp/d")
            by_name = {e["name"]: e for e in listing["entries"]}
            assert set(by_name) == {"e", "blob", "link"}
            assert by_name["e"]["type"] == "dir"
            assert by_name["blob"]["type"] == "file" and by_name["blob"]["size"] == 256
            assert by_name["blob"]["mode"] == "600"
            assert by_name["link"]["type"] == "symlink"
            assert by_name["link"]["link_target"] == "/tmp/d/e/note.txt"
            assert listing["truncated"] is False
            assert "not_found" in await fails(s, "list_files", box=bid, path="/nowhere")

            # Paths resolve inside the box's root whatever they say: `..` past the root and
            # a link to / land in the box's own /tmp.
            marker = f"bx-escape-{os.urandom(6).hex()}"
            await call(s, "write_file", box=bid, path=f"/../../../tmp/{marker}", content="a")
            await call(s, "exec", box=bid, command="ln", args=["-s", "/", "/tmp/d/root"])
            await call(s, "write_file", box=bid, path=f"/tmp/d/root/tmp/{marker}.2", content="b")
            r = await call(s, "exec", box=bid, command="cat", args=[f"/tmp/{marker}", f"/tmp/{marker}.2"])
            assert r["stdout"] == "ab"
            f = await call(s, "read_file", box=bid, path=f"/tmp/d/root/../../tmp/{marker}")
            assert f["content"] == "a"

            # run_code: the session's code box, made once and reused.
            py = await call(s, "run_code", language="python",
                            code="import sys\nprint(6 * 7)\nopen('/tmp/kept', 'w').write('x')\nsys.exit(2)")
            assert (py["exit_code"], py["stdout"]) == (2, "42\n")
            code_box = py["box_id"]
            assert code_box != bid
            sh = await call(s, "run_code", language="shell", code="cat /tmp/kept; echo; echo $0")
            assert sh["box_id"] == code_box and sh["stdout"].startswith("x\n")
            err = await call(s, "run_code", language="python", code="raise ValueError('boom')")
            assert err["exit_code"] == 1 and "ValueError: boom" in err["stderr"]
            inbox = await call(s, "run_code", language="shell", code="echo in-one", box=bid)
            assert inbox["box_id"] == bid and inbox["stdout"] == "in-one\n"

            # Pause, resume, clone.
            await call(s, "write_file", box=bid, path="/tmp/before-clone", content="cloned")
            await call(s, "pause_box", box=bid)
            states = {b["box_id"]: b["state"] for b in (await call(s, "list_boxes"))["boxes"]}
            assert states[bid] == "paused"
            await call(s, "resume_box", box=bid)
            assert (await call(s, "exec", box=bid, command="cat", args=["/tmp/before-clone"]))[
                "stdout"] == "cloned"
            clone = await call(s, "clone_box", box=bid, name="mcp-clone")
            assert clone["this_session"] is True and clone["box_id"] != bid
            r = await call(s, "exec", box=clone["box_id"], command="cat", args=["/tmp/before-clone"])
            assert r["stdout"] == "cloned"
            await call(s, "remove_box", box="mcp-clone")
            listed = {b["box_id"] for b in (await call(s, "list_boxes"))["boxes"]}
            assert clone["box_id"] not in listed and {bid, code_box} <= listed
            await call(s, "stop_box", box=bid)
            await call(s, "start_box", box=bid)
            assert (await call(s, "exec", box=bid, command="true"))["exit_code"] == 0

            # A box not made through MCP is out of reach.
            other = cli(home, "create", "--name", "not-mcp", "boxlite/busybox").stdout.strip()
            assert "not created through MCP" in await fails(s, "exec", box="not-mcp",
                                                            command="true")
            assert other not in {b["box_id"] for b in (await call(s, "list_boxes"))["boxes"]}
            one = next(b for b in boxes(home) if b["id"] == code_box)  # networked
            assert {"private", "loopback", "link-local", "metadata", "host"} <= set(
                one["config"]["network"]["deny"])
            # A clone made outside MCP does not inherit the session's marks: it stays.
            kept_clone = cli(home, "clone", bid, "--name", "cli-clone").stdout.strip()
            clone_labels = next(b for b in boxes(home) if b["id"] == kept_clone)["config"]["labels"]
            assert not [k for k in clone_labels if k.startswith("boxlite.mcp.")]
            labels = mcp_boxes(home)[0]["config"]["labels"]
            assert labels["boxlite.mcp.remove"] == "session-end"
            assert re.fullmatch(r"\d+-\d+", labels["boxlite.mcp.server"])
            return {bid, code_box}, {other, kept_clone}


def test_stdio_session_and_cleanup(home):
    made, others = asyncio.run(stdio_session(home))
    # The session ended (stdin closed): its boxes and their processes are gone; the
    # boxes made outside MCP are untouched.
    left = {b["id"] for b in boxes(home)}
    assert not (made & left), "the session's boxes outlived it"
    assert left == others
    assert not [p for p in vm_processes(home) if not any(o in p for o in others)]


async def keep_session(home: str) -> str:
    async with stdio_client(stdio_params(home, "--keep-boxes", "--max-boxes", "1")) as (r, w):
        async with ClientSession(r, w) as s:
            await s.initialize()
            bid = (await call(s, "create_box", image="boxlite/busybox", network="none"))["box_id"]
            # The session's limit: a second box is refused before anything is made.
            msg = await fails(s, "create_box", image="boxlite/busybox", network="none")
            assert "resource_exhausted" in msg and "limit" in msg
            assert len(boxes(home)) == 1
            return bid


def test_keep_boxes_keeps_them(home):
    bid = asyncio.run(keep_session(home))
    kept = {b["id"]: b for b in boxes(home)}
    assert kept[bid]["config"]["labels"]["boxlite.mcp.remove"] == "never"
    assert kept[bid]["state"] == "Running"


def start_http(home: str, *args: str, key: str | None = None):
    env = server_env(home)
    env.pop("BOXLITE_API_KEY", None)
    if key:
        env["BOXLITE_API_KEY"] = key
    p = subprocess.Popen([str(BOXLITE), "--home", home, "mcp", "--http", "127.0.0.1:0", *args],
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env)
    line = p.stderr.readline()
    m = re.search(r"http://(\S+)/mcp", line)
    assert m, f"no address in {line!r}"
    return p, f"http://{m.group(1)}/mcp"


async def http_session(url: str, key: str, home: str) -> str:
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"},
                                  timeout=httpx2.Timeout(300)) as h:
        async with streamable_http_client(url, http_client=h) as (r, w):
            async with ClientSession(r, w) as s:
                await s.initialize()
                await check_tools(s)
                b = await call(s, "create_box", image="boxlite/busybox", network="none")
                r = await call(s, "exec", box=b["box_id"], command="sh", args=["-c", "echo hi; exit 4"])
                assert (r["exit_code"], r["stdout"]) == (4, "hi\n")
                assert "not_found" in await fails(s, "exec", box="nope", command="true")
                assert [x["box_id"] for x in mcp_boxes_of(home)] == [b["box_id"]]
                return b["box_id"]


def mcp_boxes_of(home):
    return [{"box_id": b["id"]} for b in mcp_boxes(home)]


async def http_open_session(url: str, key: str) -> str:
    """A session left open (no DELETE): only the server's end removes its box."""
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"},
                                  timeout=httpx2.Timeout(300)) as h:
        async with streamable_http_client(url, http_client=h, terminate_on_close=False) as (r, w):
            async with ClientSession(r, w) as s:
                await s.initialize()
                b = await call(s, "create_box", image="boxlite/busybox", network="none")
                return b["box_id"]


def test_http_transport_key_sessions_and_shutdown(home):
    key = "mcp-test-key-" + os.urandom(8).hex()
    p, url = start_http(home, key=key)
    try:
        # Without the key (or with a wrong one), nothing is served.
        init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
                "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                           "clientInfo": {"name": "t", "version": "0"}}}
        hdrs = {"Accept": "application/json, text/event-stream"}
        assert httpx2.post(url, json=init, headers=hdrs).status_code == 401
        bad = dict(hdrs, Authorization="Bearer wrong")
        assert httpx2.post(url, json=init, headers=bad).status_code == 401
        assert httpx2.get(url.replace("/mcp", "/health")).status_code == 200
        # A body over the request limit (8 MiB of file in base64, plus 1 MiB) is refused
        # while it streams.
        auth = dict(hdrs, Authorization=f"Bearer {key}", **{"Content-Type": "application/json"})
        big = b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"x":"' + b"a" * (16 << 20) + b'"}}'
        assert httpx2.post(url, content=big, headers=auth).status_code == 413

        # A tool call outside any session (the stateless lifecycle) is refused: its boxes
        # would belong to nobody.
        call_body = {"jsonrpc": "2.0", "id": 7, "method": "tools/call",
                     "params": {"name": "list_boxes", "arguments": {},
                                "_meta": {"io.modelcontextprotocol/protocolVersion": "2025-11-25",
                                          "io.modelcontextprotocol/clientCapabilities": {}}}}
        r = httpx2.post(url, json=call_body,
                        headers=dict(hdrs, Authorization=f"Bearer {key}",
                                     **{"MCP-Protocol-Version": "2025-11-25"}))
        assert r.status_code >= 400 or "within a session" in r.text, r.text
        assert '"boxes"' not in r.text

        # A session: its box goes when the client ends it (DELETE).
        bid = asyncio.run(http_session(url, key, home))
        wait_for("the ended session's box to go", lambda: bid not in {b["id"] for b in boxes(home)})

        # A session left open: its box goes when the server stops (SIGTERM).
        bid = asyncio.run(http_open_session(url, key))
        assert bid in {b["id"] for b in boxes(home)}
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=120) == 0
        assert bid not in {b["id"] for b in boxes(home)}
        assert not vm_processes(home)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_http_off_loopback_needs_a_key(home):
    env = server_env(home)
    env.pop("BOXLITE_API_KEY", None)
    r = subprocess.run([str(BOXLITE), "--home", home, "mcp", "--http", "0.0.0.0:0"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode != 0 and "without an API key" in r.stderr
    r = subprocess.run([str(BOXLITE), "--home", home, "mcp", "--http", "nonsense"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode != 0 and "--http" in r.stderr


def rpc(p: subprocess.Popen, msg) -> dict:
    data = msg if isinstance(msg, bytes) else (json.dumps(msg) + "\n").encode()
    p.stdin.write(data)
    p.stdin.flush()
    return json.loads(p.stdout.readline())


def peak_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_misbehaving_client_gets_errors_and_bounded_memory(home):
    """Raw JSON-RPC on stdio: malformed lines, huge lines, unknown methods and tools; the
    server answers what it can, drops what it must, and its memory stays bounded."""
    p = subprocess.Popen([str(BOXLITE), "--home", home, "mcp", "--max-file-size", "64K"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=server_env(home))
    try:
        init = rpc(p, {"jsonrpc": "2.0", "id": 1, "method": "initialize",
                       "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                                  "clientInfo": {"name": "raw", "version": "0"}}})
        assert init["result"]["serverInfo"]["name"] == "boxlite"
        p.stdin.write(b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n')
        # Not JSON at all, then a line of 48 MiB (far over the 1 MiB request limit).
        p.stdin.write(b"this is not json\n")
        p.stdin.write(b'{"jsonrpc":"2.0","id":2,"method":"ping","params":{"x":"' +
                      b"a" * (48 << 20) + b'"}}\n')
        p.stdin.flush()
        # The server is still there and answers.
        r = rpc(p, {"jsonrpc": "2.0", "id": 3, "method": "ping"})
        while r.get("id") != 3:
            # Errors for the bad lines may come first.
            assert "error" in r, r
            r = json.loads(p.stdout.readline())
        assert r["result"] == {}
        assert peak_rss_kib(p.pid) < 40 * 1024, "the huge line was buffered"
        r = rpc(p, {"jsonrpc": "2.0", "id": 4, "method": "tools/call",
                    "params": {"name": "nope", "arguments": {}}})
        assert "error" in r
        r = rpc(p, {"jsonrpc": "2.0", "id": 5, "method": "no/such/method"})
        assert r["error"]["code"] == -32601
        # A file over the server's limit is refused by the tool, with the sizes.
        r = rpc(p, {"jsonrpc": "2.0", "id": 6, "method": "tools/call",
                    "params": {"name": "write_file", "arguments": {
                        "box": "x", "path": "/tmp/f", "content": "a" * (65 << 10)}}})
        assert r["result"]["isError"] is True
        assert "limit of 65536" in r["result"]["content"][0]["text"]
    finally:
        p.stdin.close()
        assert p.wait(timeout=60) == 0
        p.stdout.close()
        p.stderr.close()


def test_a_killed_servers_boxes_are_removed_by_the_next(home):
    p = subprocess.Popen([str(BOXLITE), "--home", home, "mcp"], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=server_env(home))
    try:
        rpc(p, {"jsonrpc": "2.0", "id": 1, "method": "initialize",
                "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                           "clientInfo": {"name": "raw", "version": "0"}}})
        p.stdin.write(b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n')
        r = rpc(p, {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                    "params": {"name": "create_box",
                               "arguments": {"image": "boxlite/busybox", "network": "none"}}})
        bid = r["result"]["structuredContent"]["box_id"]
    finally:
        p.kill()
        p.wait()
        p.stdin.close()
        p.stdout.close()
    assert bid in {b["id"] for b in boxes(home)}
    # The next server on this home sees the owner is gone and removes the box.
    q = subprocess.run([str(BOXLITE), "--home", home, "mcp"], input=b"", capture_output=True,
                       env=server_env(home), timeout=120)
    assert q.returncode == 0, q.stderr
    assert bid not in {b["id"] for b in boxes(home)}
    assert not vm_processes(home)


def test_stdout_carries_only_json_rpc(home):
    """Everything on stdout parses as JSON-RPC; warnings and logs go to stderr."""
    env = server_env(home, BOXLITE_JAIL="off", RUST_LOG="debug")
    out = subprocess.run([str(BOXLITE), "--home", home, "mcp"],
                         input=(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize",
                                            "params": {"protocolVersion": "2025-06-18",
                                                       "capabilities": {},
                                                       "clientInfo": {"name": "t", "version": "0"}}})
                                + "\n").encode(),
                         capture_output=True, env=env, timeout=120)
    assert out.returncode == 0
    lines = out.stdout.decode().splitlines()
    assert lines and all(json.loads(line)["jsonrpc"] == "2.0" for line in lines)
    assert b"BOXLITE_JAIL=off" in out.stderr and b"INFO" in out.stderr
