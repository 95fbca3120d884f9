"""``CodeBox``: a box for running Python code."""

from __future__ import annotations

import asyncio
from typing import Optional

from . import _native
from .simplebox import SimpleBox


class CodeBox(SimpleBox):
    """A ``SimpleBox`` of the built-in ``boxlite/python`` image (Debian's Python 3,
    offline), for running code and installing packages."""

    def __init__(
        self,
        image: str = "boxlite/python",
        memory_mib: Optional[int] = None,
        cpus: Optional[int] = None,
        runtime: Optional[_native.Boxlite] = None,
        **kwargs,
    ) -> None:
        super().__init__(image=image, memory_mib=memory_mib, cpus=cpus, runtime=runtime, **kwargs)

    async def run(self, code: str, timeout: Optional[float] = None) -> str:
        """Run ``code`` with ``python3`` and return what it printed (stdout and stderr,
        in order of arrival per stream: stdout first)."""
        r = await self.exec("python3", "-c", code, timeout=timeout)
        return r.stdout + r.stderr

    async def run_script(self, script_path: str) -> str:
        """Run a Python file of the host."""
        code = await asyncio.to_thread(lambda: open(script_path, encoding="utf-8").read())
        return await self.run(code)

    async def install_package(self, package: str) -> str:
        """``pip install`` one package (the box needs a network route to an index)."""
        return await self.install_packages(package)

    async def install_packages(self, *packages: str) -> str:
        """``pip install`` packages; returns pip's output."""
        r = await self.exec("python3", "-m", "pip", "install", "--break-system-packages", *packages)
        return r.stdout + r.stderr
