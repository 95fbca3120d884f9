"""The async API over the native classes: ``Boxlite``, ``Box`` and ``Execution``."""

from __future__ import annotations

import codecs
from typing import AsyncIterator, List, Optional, Sequence, Tuple

from . import _native


class Execution:
    """A command running in a box."""

    def __init__(self, native: "_native.Execution") -> None:
        self._x = native

    @property
    def id(self) -> str:
        """The execution's id."""
        return self._x.id

    @property
    def stdin(self) -> "_native.Stdin":
        """The command's stdin: ``await stdin.write(data)``, ``await stdin.close()``."""
        return self._x.stdin

    def stdout(self, *, text: bool = True) -> AsyncIterator:
        """stdout as text lines (default), or as raw byte chunks with ``text=False``."""
        return _lines(self._x.stdout_bytes()) if text else self._x.stdout_bytes()

    def stderr(self, *, text: bool = True) -> AsyncIterator:
        """stderr as text lines (default), or as raw byte chunks with ``text=False``."""
        return _lines(self._x.stderr_bytes()) if text else self._x.stderr_bytes()

    async def wait(self) -> "_native.ExecResult":
        """Wait for the command to end; returns its ``ExecResult``."""
        return await self._x.wait()

    async def kill(self) -> None:
        """End the command and its process group (SIGKILL)."""
        await self._x.kill()

    async def signal(self, signal: int) -> None:
        """Send ``signal`` to the command."""
        await self._x.signal(signal)

    async def resize_tty(self, rows: int, cols: int) -> None:
        """Resize the command's terminal (``tty=True`` executions)."""
        await self._x.resize_tty(rows, cols)

    def __repr__(self) -> str:
        return f"Execution(id={self.id!r})"


async def _lines(chunks: AsyncIterator[bytes]) -> AsyncIterator[str]:
    """Text lines (each with its newline, the last one as written), decoded as UTF-8
    across chunk boundaries; undecodable bytes become U+FFFD."""
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    pending = ""
    async for chunk in chunks:
        pending += decoder.decode(chunk)
        *whole, pending = pending.split("\n")
        for line in whole:
            yield line + "\n"
    pending += decoder.decode(b"", final=True)
    if pending:
        yield pending


class Box:
    """A box. ``async with box:`` starts it and stops it at the end."""

    def __init__(self, native: "_native.Box") -> None:
        self._b = native

    @property
    def id(self) -> str:
        """The box's id."""
        return self._b.id

    async def start(self) -> None:
        """Boot the box (a no-op if it runs)."""
        await self._b.start()

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop the box; the VM is killed after ``timeout`` seconds."""
        await self._b.stop(timeout)

    async def remove(self, force: bool = False) -> None:
        """Remove the box and its disks (``force`` stops it first)."""
        await self._b.remove(force)

    async def info(self) -> "_native.BoxInfo":
        """What the box is now."""
        return await self._b.info()

    async def exec(
        self,
        cmd: str,
        args: Optional[Sequence[str]] = None,
        env: Optional[Sequence[Tuple[str, str]]] = None,
        *,
        working_dir: Optional[str] = None,
        user: Optional[str] = None,
        tty: bool = False,
        timeout: Optional[float] = None,
        stdin: "bytes | str | None" = None,
    ) -> Execution:
        """Run ``cmd`` with ``args`` in the box (starting it if needed)."""
        data = stdin.encode() if isinstance(stdin, str) else stdin
        env_list: List[Tuple[str, str]] = list(env.items()) if isinstance(env, dict) else list(env or [])
        x = await self._b.exec(
            cmd, list(args or []), env_list, working_dir, user, tty, timeout, data
        )
        return Execution(x)

    async def copy_in(self, host_path, box_path: str, *, overwrite: bool = True, follow_symlinks: bool = False) -> None:
        """Copy a host file or directory into the box, as ``docker cp`` does."""
        await self._b.copy_in(str(host_path), box_path, overwrite, follow_symlinks)

    async def copy_out(self, box_path: str, host_path, *, overwrite: bool = True, follow_symlinks: bool = False) -> None:
        """Copy a path of the box to the host; nothing lands outside ``host_path``."""
        await self._b.copy_out(box_path, str(host_path), overwrite, follow_symlinks)

    async def __aenter__(self) -> "Box":
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    def __repr__(self) -> str:
        return f"Box(id={self.id!r})"


class Boxlite:
    """A runtime over one home directory."""

    _default: "Optional[Boxlite]" = None

    def __init__(self, options: "Optional[_native.Options]" = None) -> None:
        from . import _packaged_assets

        o = options if options is not None else _native.Options()
        if o.assets_dir is None:
            o = _native.Options(o.home_dir, _packaged_assets())
        self._rt = _native.Boxlite(o)

    @classmethod
    def default(cls) -> "Boxlite":
        """The runtime over ``$BOXLITE_HOME`` (else ``~/.boxlite``), shared."""
        if cls._default is None:
            cls._default = cls()
        return cls._default

    @property
    def home_dir(self) -> str:
        return str(self._rt.home_dir)

    async def create(self, options: "_native.BoxOptions", name: Optional[str] = None) -> Box:
        """Create a box (pulling its image if needed); it is not started."""
        if name is not None:
            options.name = name
        return Box(await self._rt.create(options))

    async def get(self, id_or_name: str) -> "Optional[Box]":
        """The box with this id, prefix or name, or ``None``."""
        try:
            return Box(await self._rt.get(id_or_name))
        except _native.NotFoundError:
            return None

    async def get_or_create(self, options: "_native.BoxOptions", name: Optional[str] = None) -> Box:
        """The box named ``name`` (or ``options.name``), created if there is none."""
        n = name or options.name
        if not n:
            raise _native.InvalidArgumentError("get_or_create needs a name")
        return Box(await self._rt.get_or_create(n, options))

    async def list_info(self) -> "List[_native.BoxInfo]":
        """Every box."""
        return await self._rt.list_info()

    async def remove(self, id_or_name: str, force: bool = False) -> None:
        """Remove a box by id or name."""
        await self._rt.remove(id_or_name, force)

    async def shutdown(self, timeout: float = 10.0) -> None:
        """Stop the boxes this runtime started, then refuse new work."""
        await self._rt.shutdown(timeout)

    def __repr__(self) -> str:
        return f"Boxlite(home_dir={self.home_dir!r})"
