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
        return self._loop.run(self._x.wait)

    def kill(self) -> None:
        self._loop.run(self._x.kill)

    def signal(self, signal: int) -> None:
        self._loop.run(lambda: self._x.signal(signal))

    def resize_tty(self, rows: int, cols: int) -> None:
        self._loop.run(lambda: self._x.resize_tty(rows, cols))


class SyncExecStdin:
    def __init__(self, loop: _Loop, s: _native.ExecStdin) -> None:
        self._loop = loop
        self._s = s

    def send_input(self, data) -> None:
        self._loop.run(lambda: self._s.send_input(data))

    write = send_input

    def close(self) -> None:
        self._loop.run(self._s.close)

    def is_closed(self) -> bool:
        return self._s.is_closed()


class SyncBox:
    """A box, with blocking calls; ``with box:`` starts and stops it."""

    def __init__(self, loop: _Loop, b: _native.Box) -> None:
        self._loop = loop
        self._box = b

    @property
    def id(self) -> str:
        return self._box.id

    @property
    def name(self) -> Optional[str]:
        return self._box.name

    def start(self) -> None:
        self._loop.run(self._box.start)

    def stop(self, timeout: Optional[float] = None) -> None:
        self._loop.run(lambda: self._box.stop(timeout))

    def info(self) -> _native.BoxInfo:
        return self._loop.run(self._box.info)

    def metrics(self) -> _native.BoxMetrics:
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
        x = self._loop.run(
            lambda: self._box.exec(cmd, args, env, tty, user, timeout_secs, cwd, stdin=stdin)
        )
        return SyncExecution(self._loop, x)

    def copy_in(self, host_path, container_dest: str, copy_options=None) -> None:
        self._loop.run(lambda: self._box.copy_in(str(host_path), container_dest, copy_options))

    def copy_out(self, container_src: str, host_dest, copy_options=None) -> None:
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
        return SyncBoxlite(_runtime=_native.Boxlite.default())

    @property
    def runtime(self) -> _native.Boxlite:
        """The async runtime underneath."""
        return self._rt

    def start(self) -> "SyncBoxlite":
        if self._loop is None:
            self._loop = _Loop()
        return self

    def stop(self) -> None:
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
        return SyncBox(self._loop_or_start(), self._run(lambda: self._rt.create(options, name)))

    def get(self, id_or_name: str) -> Optional[SyncBox]:
        b = self._run(lambda: self._rt.get(id_or_name))
        return SyncBox(self._loop_or_start(), b) if b is not None else None

    def get_or_create(self, options: _native.BoxOptions, name: Optional[str] = None) -> Tuple[SyncBox, bool]:
        b, created = self._run(lambda: self._rt.get_or_create(options, name))
        return SyncBox(self._loop_or_start(), b), created

    def get_info(self, id_or_name: str):
        return self._run(lambda: self._rt.get_info(id_or_name))

    def list_info(self):
        return self._run(self._rt.list_info)

    def remove(self, id_or_name: str, force: bool = False) -> None:
        self._run(lambda: self._rt.remove(id_or_name, force))

    def metrics(self):
        return self._run(self._rt.metrics)

    def shutdown(self, timeout: Optional[float] = None) -> None:
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
        return self.__enter__()

    @property
    def id(self) -> str:
        return self._async.id

    @property
    def name(self) -> Optional[str]:
        return self._async.name

    @property
    def created(self) -> Optional[bool]:
        return self._async.created

    @property
    def _box(self) -> SyncBox:
        return SyncBox(self._runtime._loop_or_start(), self._async._started_box())

    def exec(self, cmd: str, *args: str, env=None, user=None, timeout=None, cwd=None) -> ExecResult:
        return self._run(lambda: self._async.exec(cmd, *args, env=env, user=user, timeout=timeout, cwd=cwd))

    def info(self):
        return self._run(self._async.info)

    def metrics(self):
        return self._run(self._async.metrics)

    def copy_in(self, host_path, container_dest: str, **kw) -> None:
        self._run(lambda: self._async.copy_in(host_path, container_dest, **kw))

    def copy_out(self, container_src: str, host_dest, **kw) -> None:
        self._run(lambda: self._async.copy_out(container_src, host_dest, **kw))

    def stop(self) -> None:
        self._run(self._async.stop)


class SyncCodeBox(SyncSimpleBox):
    """The blocking ``CodeBox``."""

    _async_class = CodeBox

    def __init__(self, image: str = "boxlite/python", memory_mib=None, cpus=None, runtime=None, **kwargs) -> None:
        super().__init__(image=image, memory_mib=memory_mib, cpus=cpus, runtime=runtime, **kwargs)

    def run(self, code: str, timeout: Optional[float] = None) -> str:
        return self._run(lambda: self._async.run(code, timeout))

    def run_script(self, script_path: str) -> str:
        return self._run(lambda: self._async.run_script(script_path))

    def install_package(self, package: str) -> str:
        return self._run(lambda: self._async.install_package(package))

    def install_packages(self, *packages: str) -> str:
        return self._run(lambda: self._async.install_packages(*packages))
