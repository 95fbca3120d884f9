"""Blocking twins of the async API, for scripts and notebooks: ``SyncBoxlite``,
``SyncBox``, ``SyncExecution``, ``SyncSimpleBox`` and ``SyncCodeBox``.

Each runtime runs an asyncio event loop on a thread of its own; a blocking call submits
the coroutine there and waits for it, so a call never holds the GIL while Rust waits,
and other Python threads keep running. Calling from inside a running event loop is
refused (it would block the loop): use the async API there.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Awaitable, Callable, Iterator, List, Optional, Tuple

from . import _native
from .codebox import CodeBox
from .exec import ExecResult
from .simplebox import SimpleBox


class _Loop:
    """An event loop on a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="boxlite-sync", daemon=True)
        self._thread.start()

    def run(self, make: Callable[[], Awaitable[Any]]) -> Any:
        """Run the coroutine ``make()`` builds on the loop's thread and wait for it."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise RuntimeError(
                "the synchronous boxlite API cannot be used inside a running asyncio loop; "
                "use the async API there"
            )

        async def call() -> Any:
            return await make()

        return asyncio.run_coroutine_threadsafe(call(), self.loop).result()

    def close(self) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=10)


class SyncExecution:
    """A running command, with blocking calls."""

    def __init__(self, loop: _Loop, x: _native.Execution) -> None:
        self._loop = loop
        self._x = x

    @property
    def id(self) -> str:
        """The execution's id."""
        return self._x.id

    def _iterate(self, stream: _native.OutputStream) -> Iterator:
        while True:
            try:
                yield self._loop.run(stream.__anext__)
            except StopAsyncIteration:
                return

    def stdout(self, text: bool = True) -> Iterator:
        """stdout as text lines (or byte chunks with ``text=False``). Once."""
        return self._iterate(self._x.stdout(text))

    def stderr(self, text: bool = True) -> Iterator:
        """stderr, as ``stdout``. Once."""
        return self._iterate(self._x.stderr(text))

    def stdin(self) -> "SyncExecStdin":
        """The command's stdin. Once."""
        return SyncExecStdin(self._loop, self._x.stdin())

    def wait(self):
        """Wait for the command to end; returns its ``ExecResult``."""
        return self._loop.run(self._x.wait)

    def kill(self) -> None:
        """End the command and its process group (SIGKILL)."""
        self._loop.run(self._x.kill)

    def signal(self, signal: int) -> None:
        """Send ``signal`` to the command."""
        self._loop.run(lambda: self._x.signal(signal))

    def resize_tty(self, rows: int, cols: int) -> None:
        """Resize the command's terminal (``tty=True`` executions)."""
        self._loop.run(lambda: self._x.resize_tty(rows, cols))


class SyncExecStdin:
    def __init__(self, loop: _Loop, s: _native.ExecStdin) -> None:
        self._loop = loop
        self._s = s

    def send_input(self, data) -> None:
        """Write bytes (or text, as UTF-8) to the command."""
        self._loop.run(lambda: self._s.send_input(data))

    write = send_input

    def close(self) -> None:
        """Close stdin: the command reads end of file."""
        self._loop.run(self._s.close)

    def is_closed(self) -> bool:
        """Whether ``close`` was called."""
        return self._s.is_closed()


class SyncBox:
    """A box, with blocking calls; ``with box:`` starts and stops it."""

    def __init__(self, loop: _Loop, b: _native.Box) -> None:
        self._loop = loop
        self._box = b

    @property
    def id(self) -> str:
        """The box's id."""
        return self._box.id

    @property
    def name(self) -> Optional[str]:
        """The box's name, if it has one."""
        return self._box.name

    def start(self) -> None:
        """Boot the box (a no-op if it runs)."""
        self._loop.run(self._box.start)

    def stop(self, timeout: Optional[float] = None) -> None:
        """Stop the box (removing it if it was created with ``auto_remove``)."""
        self._loop.run(lambda: self._box.stop(timeout))

    def info(self) -> _native.BoxInfo:
        """What the box is now."""
        return self._loop.run(self._box.info)

    def metrics(self) -> _native.BoxMetrics:
        """What the box uses and has done."""
        return self._loop.run(self._box.metrics)

    def exec(
        self,
        cmd: str,
        args: Optional[List[str]] = None,
        env=None,
        tty: bool = False,
        user: Optional[str] = None,
        timeout_secs: Optional[float] = None,
        cwd: Optional[str] = None,
        *,
        stdin=None,
    ) -> SyncExecution:
        """Run ``cmd`` with ``args`` in the box (starting it if needed); see ``Box.exec``."""
        x = self._loop.run(
            lambda: self._box.exec(cmd, args, env, tty, user, timeout_secs, cwd, stdin=stdin)
        )
        return SyncExecution(self._loop, x)

    def copy_in(self, host_path, container_dest: str, copy_options=None) -> None:
        """Copy a host file or directory into the box, as ``docker cp`` does."""
        self._loop.run(lambda: self._box.copy_in(str(host_path), container_dest, copy_options))

    def copy_out(self, container_src: str, host_dest, copy_options=None) -> None:
        """Copy a path of the box to the host; nothing lands outside ``host_dest``."""
        self._loop.run(lambda: self._box.copy_out(container_src, str(host_dest), copy_options))

    def __enter__(self) -> "SyncBox":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class SyncBoxlite:
    """A runtime with blocking calls. ``with SyncBoxlite(Options(...)) as rt:`` (or
    ``start()``/``stop()``)."""

    def __init__(self, options: Optional[_native.Options] = None, *, _runtime=None) -> None:
        self._rt = _runtime if _runtime is not None else _native.Boxlite(options)
        self._loop: Optional[_Loop] = None

    @staticmethod
    def default() -> "SyncBoxlite":
        """The process's shared runtime, with blocking calls."""
        return SyncBoxlite(_runtime=_native.Boxlite.default())

    @staticmethod
    def rest(options: _native.BoxliteRestOptions) -> "SyncBoxlite":
        """A runtime over a ``boxlite serve``, with blocking calls."""
        return SyncBoxlite(_runtime=_native.Boxlite.rest(options))

    @property
    def runtime(self) -> _native.Boxlite:
        """The async runtime underneath."""
        return self._rt

    def start(self) -> "SyncBoxlite":
        """Start the runtime's event-loop thread (``with`` does it)."""
        if self._loop is None:
            self._loop = _Loop()
        return self

    def stop(self) -> None:
        """Stop the event-loop thread; boxes keep running."""
        if self._loop is not None:
            self._loop.close()
            self._loop = None

    def __enter__(self) -> "SyncBoxlite":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _run(self, make: Callable[[], Awaitable[Any]]) -> Any:
        return self.start()._loop.run(make)  # type: ignore[union-attr]

    def create(self, options: _native.BoxOptions, name: Optional[str] = None) -> SyncBox:
        """Create a box (pulling its image if needed); it is not started."""
        return SyncBox(self._loop_or_start(), self._run(lambda: self._rt.create(options, name)))

    def get(self, id_or_name: str) -> Optional[SyncBox]:
        """The box with this id, prefix or name, or ``None``."""
        b = self._run(lambda: self._rt.get(id_or_name))
        return SyncBox(self._loop_or_start(), b) if b is not None else None

    def get_or_create(self, options: _native.BoxOptions, name: Optional[str] = None) -> Tuple[SyncBox, bool]:
        """``(box, created)``: the box named ``name``, created if there is none."""
        b, created = self._run(lambda: self._rt.get_or_create(options, name))
        return SyncBox(self._loop_or_start(), b), created

    def get_info(self, id_or_name: str):
        """What the box with this id or name is, or ``None``."""
        return self._run(lambda: self._rt.get_info(id_or_name))

    def list_info(self):
        """Every box."""
        return self._run(self._rt.list_info)

    def remove(self, id_or_name: str, force: bool = False) -> None:
        """Remove a box by id or name (``force`` stops it first)."""
        self._run(lambda: self._rt.remove(id_or_name, force))

    def metrics(self):
        """Counts of the boxes there are now."""
        return self._run(self._rt.metrics)

    def shutdown(self, timeout: Optional[float] = None) -> None:
        """Stop the boxes this runtime started, then refuse new work."""
        self._run(lambda: self._rt.shutdown(timeout))

    def _loop_or_start(self) -> _Loop:
        return self.start()._loop  # type: ignore[return-value]


class SyncSimpleBox:
    """The blocking ``SimpleBox``: ``with SyncSimpleBox(image=...) as box:
    box.exec(...)``."""

    _async_class = SimpleBox

    def __init__(
        self,
        image: Optional[str] = None,
        rootfs_path: Optional[str] = None,
        memory_mib: Optional[int] = None,
        cpus: Optional[int] = None,
        runtime: Optional[SyncBoxlite] = None,
        name: Optional[str] = None,
        auto_remove: bool = True,
        reuse_existing: bool = False,
        **kwargs,
    ) -> None:
        self._owns_runtime = runtime is None
        self._runtime = runtime if runtime is not None else SyncBoxlite.default()
        self._async = self._async_class(
            image=image,
            rootfs_path=rootfs_path,
            memory_mib=memory_mib,
            cpus=cpus,
            runtime=self._runtime.runtime,
            name=name,
            auto_remove=auto_remove,
            reuse_existing=reuse_existing,
            **kwargs,
        )

    def _run(self, make):
        return self._runtime._run(make)

    def __enter__(self):
        self._run(self._async.__aenter__)
        return self

    def __exit__(self, *exc) -> None:
        try:
            self._run(self._async.stop)
        finally:
            if self._owns_runtime:
                self._runtime.stop()

    def start(self):
        """Create (or find) and start the box; the same as entering ``with``."""
        return self.__enter__()

    @property
    def id(self) -> str:
        """The box's id."""
        return self._async.id

    @property
    def name(self) -> Optional[str]:
        """The box's name, if it has one."""
        return self._async.name

    @property
    def created(self) -> Optional[bool]:
        """Whether the box was created (rather than found), once started."""
        return self._async.created

    @property
    def _box(self) -> SyncBox:
        return SyncBox(self._runtime._loop_or_start(), self._async._started_box())

    def exec(self, cmd: str, *args: str, env=None, user=None, timeout=None, cwd=None) -> ExecResult:
        """Run ``cmd`` with ``args`` and collect its output; see ``SimpleBox.exec``."""
        return self._run(lambda: self._async.exec(cmd, *args, env=env, user=user, timeout=timeout, cwd=cwd))

    def info(self):
        """What the box is now."""
        return self._run(self._async.info)

    def metrics(self):
        """What the box uses and has done."""
        return self._run(self._async.metrics)

    def copy_in(self, host_path, container_dest: str, **kw) -> None:
        """Copy a host file or directory into the box, as ``docker cp`` does."""
        self._run(lambda: self._async.copy_in(host_path, container_dest, **kw))

    def copy_out(self, container_src: str, host_dest, **kw) -> None:
        """Copy a path of the box to the host; nothing lands outside ``host_dest``."""
        self._run(lambda: self._async.copy_out(container_src, host_dest, **kw))

    def stop(self) -> None:
        """Stop the box (removing it if it was created with ``auto_remove``)."""
        self._run(self._async.stop)


class SyncCodeBox(SyncSimpleBox):
    """The blocking ``CodeBox``."""

    _async_class = CodeBox

    def __init__(self, image: str = "boxlite/python", memory_mib=None, cpus=None, runtime=None, **kwargs) -> None:
        super().__init__(image=image, memory_mib=memory_mib, cpus=cpus, runtime=runtime, **kwargs)

    def run(self, code: str, timeout: Optional[float] = None) -> str:
        """Run ``code`` with ``python3``; returns what it printed."""
        return self._run(lambda: self._async.run(code, timeout))

    def run_script(self, script_path: str) -> str:
        """Run a Python file of the host."""
        return self._run(lambda: self._async.run_script(script_path))

    def install_package(self, package: str) -> str:
        """``pip install`` one package; returns pip's output."""
        return self._run(lambda: self._async.install_package(package))

    def install_packages(self, *packages: str) -> str:
        """``pip install`` packages; returns pip's output."""
        return self._run(lambda: self._async.install_packages(*packages))
