"""``SimpleBox``: a box for running commands and collecting their output."""

from __future__ import annotations

import asyncio
import logging
from typing import Dict, Optional

from . import _native
from .exec import ExecResult

log = logging.getLogger("boxlite.simplebox")


class SimpleBox:
    """A box created and started by ``async with``, stopped at the end (and removed,
    unless ``auto_remove=False``). Extra keyword arguments are ``BoxOptions`` fields
    (``working_dir``, ``env``, ``volumes``, ``ports``, ``network``, ``entrypoint``,
    ``cmd``, ``user``, ...). With ``reuse_existing=True`` and a ``name``, an existing box
    of that name is used (``created`` says which happened)."""

    def __init__(
        self,
        image: Optional[str] = None,
        rootfs_path: Optional[str] = None,
        memory_mib: Optional[int] = None,
        cpus: Optional[int] = None,
        runtime: Optional[_native.Boxlite] = None,
        name: Optional[str] = None,
        auto_remove: bool = True,
        reuse_existing: bool = False,
        **kwargs,
    ) -> None:
        if image is None and rootfs_path is None:
            raise ValueError("Either 'image' or 'rootfs_path' must be provided")
        self._runtime = runtime if runtime is not None else _native.Boxlite.default()
        self._name = name
        self._reuse = reuse_existing
        self._box_options = _native.BoxOptions(
            image=image,
            rootfs_path=rootfs_path,
            memory_mib=memory_mib,
            cpus=cpus,
            auto_remove=auto_remove,
            **kwargs,
        )
        self._box: Optional[_native.Box] = None
        self._created: Optional[bool] = None
        self._started = False

    async def __aenter__(self) -> "SimpleBox":
        if self._box is None:
            if self._reuse:
                self._box, self._created = await self._runtime.get_or_create(
                    self._box_options, name=self._name
                )
            else:
                self._box = await self._runtime.create(self._box_options, name=self._name)
                self._created = True
        if not self._started:
            await self._box.start()
            self._started = True
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    async def start(self) -> "SimpleBox":
        """Create (or find) and start the box; the same as entering ``async with``."""
        return await self.__aenter__()

    @property
    def id(self) -> str:
        """The box's id."""
        return self._started_box().id

    @property
    def name(self) -> Optional[str]:
        """The box's name, if it was given one."""
        return self._name

    @property
    def created(self) -> Optional[bool]:
        """Whether the box was created (rather than found), once started."""
        return self._created

    def _started_box(self) -> _native.Box:
        if self._box is None or not self._started:
            raise RuntimeError(
                "Box not started. Use 'async with SimpleBox(...) as box:' or call "
                "'await box.start()' first."
            )
        return self._box

    async def exec(
        self,
        cmd: str,
        *args: str,
        env: Optional[Dict[str, str]] = None,
        user: Optional[str] = None,
        timeout: Optional[float] = None,
        cwd: Optional[str] = None,
    ) -> ExecResult:
        """Run ``cmd`` with ``args`` and collect its output. A non-zero exit is not an
        error: read ``exit_code``. ``timeout`` (seconds) ends the command with 124."""
        box = self._started_box()
        x = await box.exec(
            cmd, list(args), list((env or {}).items()), False, user, timeout, cwd
        )

        async def collect(stream) -> str:
            return "".join([chunk async for chunk in stream])

        stdout, stderr = await asyncio.gather(collect(x.stdout()), collect(x.stderr()))
        result = await x.wait()
        return ExecResult(result.exit_code, stdout, stderr, result.error_message)

    async def info(self) -> _native.BoxInfo:
        """What the box is now."""
        return await self._started_box().info()

    async def metrics(self) -> _native.BoxMetrics:
        """What the box uses and has done."""
        return await self._started_box().metrics()

    async def copy_in(
        self, host_path, container_dest: str, *, overwrite: bool = True, follow_symlinks: bool = False
    ) -> None:
        """Copy a host file or directory into the box, as ``docker cp`` does."""
        opts = _native.CopyOptions(overwrite=overwrite, follow_symlinks=follow_symlinks)
        await self._started_box().copy_in(str(host_path), container_dest, opts)

    async def copy_out(
        self, container_src: str, host_dest, *, overwrite: bool = True, follow_symlinks: bool = False
    ) -> None:
        """Copy a path of the box to the host; nothing lands outside ``host_dest``."""
        opts = _native.CopyOptions(overwrite=overwrite, follow_symlinks=follow_symlinks)
        await self._started_box().copy_out(container_src, str(host_dest), opts)

    async def stop(self) -> None:
        """Stop the box (removing it if it was created with ``auto_remove``)."""
        if self._box is not None and self._started:
            self._started = False
            await self._box.stop()

    shutdown = stop

    def __repr__(self) -> str:
        box = self._box.id if self._box is not None else None
        return f"{type(self).__name__}(box={box!r})"
