"""Type stubs for boxlite's native extension (see docs/python.md)."""

from os import PathLike
from typing import Any, AsyncIterator, Dict, List, Optional, Sequence, Tuple, Union

__version__: str

_Env = Union[Sequence[Tuple[str, str]], Dict[str, str], None]

class Options:
    """How a runtime opens: its home directory and guest assets."""

    home_dir: Optional[str]
    assets_dir: Optional[str]
    def __init__(self, home_dir: Optional[Union[str, PathLike]] = None, assets_dir: Optional[Union[str, PathLike]] = None) -> None: ...

class OutboundNetworkSpec:
    """Outbound traffic: ``mode`` and ``allow_net`` rules."""

    mode: str
    allow_net: List[str]
    def __init__(self, mode: str = "enabled", allow_net: List[str] = ...) -> None: ...

class NetworkSpec:
    """A box's network and egress policy."""

    outbound: OutboundNetworkSpec
    deny_net: List[str]
    hosts: List[str]
    @property
    def mode(self) -> str: ...
    @property
    def allow_net(self) -> List[str]: ...
    def __init__(
        self,
        outbound: Optional[OutboundNetworkSpec] = None,
        inbound: None = None,
        mode: Optional[str] = None,
        allow_net: Optional[List[str]] = None,
        *,
        deny_net: List[str] = ...,
        hosts: List[str] = ...,
    ) -> None: ...

class CopyOptions:
    """How a copy treats its source and destination."""

    recursive: bool
    overwrite: bool
    follow_symlinks: bool
    def __init__(self, recursive: bool = True, overwrite: bool = True, follow_symlinks: bool = False) -> None: ...

class Secret:
    """A secret the box uses without holding it: the box sees a placeholder, and the
    value replaces it on HTTPS requests to ``hosts`` only. Exactly one of ``value``,
    ``env`` or ``file`` gives the value; a repr never shows it."""

    name: str
    hosts: List[str]
    placeholder: Optional[str]
    body: bool
    @property
    def value(self) -> Optional[str]: ...
    @property
    def env(self) -> Optional[str]: ...
    @property
    def file(self) -> Optional[str]: ...
    def __init__(
        self,
        name: str,
        value: Optional[str] = None,
        hosts: List[str] = ...,
        placeholder: Optional[str] = None,
        *,
        env: Optional[str] = None,
        file: Optional[Union[str, PathLike]] = None,
        body: bool = False,
    ) -> None: ...
    def get_placeholder(self) -> str: ...

class BoxOptions:
    """What a box is made of."""

    image: Optional[str]
    rootfs_path: Optional[str]
    cpus: Optional[int]
    memory_mib: Optional[int]
    disk_size_gb: Optional[int]
    working_dir: Optional[str]
    env: List[Tuple[str, str]]
    volumes: List[str]
    network: Optional[NetworkSpec]
    ports: List[str]
    auto_remove: Optional[bool]
    auto_stop: Optional[int]
    auto_delete: Optional[int]
    auto_resume: Optional[bool]
    detach: Optional[bool]
    entrypoint: Optional[List[str]]
    cmd: Optional[List[str]]
    user: Optional[str]
    tty: Optional[bool]
    advanced: Any
    secrets: List[Secret]
    def __init__(
        self,
        image: Optional[str] = None,
        rootfs_path: Optional[str] = None,
        cpus: Optional[int] = None,
        memory_mib: Optional[int] = None,
        disk_size_gb: Optional[int] = None,
        working_dir: Optional[str] = None,
        env: List[Tuple[str, str]] = ...,
        volumes: List[Union[str, Dict[str, Any], Tuple[Any, ...]]] = ...,
        network: Optional[NetworkSpec] = None,
        ports: List[Union[Tuple[Any, ...], Dict[str, Any]]] = ...,
        auto_remove: Optional[bool] = None,
        auto_stop: Optional[int] = None,
        auto_delete: Optional[int] = None,
        auto_resume: Optional[bool] = None,
        detach: Optional[bool] = None,
        entrypoint: Optional[List[str]] = None,
        cmd: Optional[List[str]] = None,
        user: Optional[str] = None,
        tty: Optional[bool] = None,
        advanced: Any = None,
        secrets: List[Secret] = ...,
    ) -> None: ...

class BoxStateInfo:
    status: str
    running: bool
    pid: Optional[int]
    exit_code: Optional[int]

class BoxInfo:
    id: str
    name: Optional[str]
    image: str
    state: BoxStateInfo
    cpus: int
    memory_mib: int
    created_at: str
    started_at: Optional[str]
    stopped_at: Optional[str]
    last_error: Optional[str]
    auto_remove: bool

class BoxMetrics:
    commands_executed_total: Optional[int]
    exec_errors_total: Optional[int]
    bytes_sent_total: Optional[int]
    bytes_received_total: Optional[int]
    cpu_percent: Optional[float]
    memory_bytes: Optional[int]
    memory_total_bytes: Optional[int]
    vmm_rss_bytes: Optional[int]
    network_bytes_sent: Optional[int]
    network_bytes_received: Optional[int]
    network_tcp_connections: Optional[int]
    network_tcp_errors: Optional[int]
    total_create_duration_ms: Optional[int]
    guest_boot_duration_ms: Optional[int]
    stage_box_spawn_ms: Optional[int]
    disk_overlay_bytes: int
    oom_kills: Optional[int]

class RuntimeMetrics:
    boxes_created_total: int
    boxes_failed_total: int
    num_running_boxes: int
    total_commands_executed: Optional[int]
    total_exec_errors: Optional[int]

class ExecResult:
    """How a command ended."""

    exit_code: int
    error_message: Optional[str]
    signal: Optional[int]
    timed_out: bool
    oom_killed: bool

class OutputStream:
    """An async iterator over an execution's output: ``str`` lines, or ``bytes`` chunks."""

    def __aiter__(self) -> "OutputStream": ...
    async def __anext__(self) -> Union[str, bytes]: ...

class ExecStdin:
    async def send_input(self, data: Union[bytes, bytearray, str]) -> None: ...
    async def write(self, data: Union[bytes, bytearray, str]) -> None: ...
    async def close(self) -> None: ...
    def is_closed(self) -> bool: ...

class Execution:
    """A command running in a box."""

    @property
    def id(self) -> str: ...
    def stdout(self, text: bool = True) -> OutputStream: ...
    def stderr(self, text: bool = True) -> OutputStream: ...
    def stdin(self) -> ExecStdin: ...
    async def wait(self) -> ExecResult: ...
    async def kill(self) -> None: ...
    async def signal(self, signal: int) -> None: ...
    async def resize_tty(self, rows: int, cols: int) -> None: ...

class SnapshotInfo:
    id: str
    box_id: str
    name: str
    created_at: int
    container_disk_bytes: int
    size_bytes: int
    memory: bool

class SnapshotHandle:
    async def create(
        self, *, name: str, disk_only: bool = False, options: Optional[object] = None
    ) -> SnapshotInfo: ...
    async def list(self) -> list[SnapshotInfo]: ...
    async def get(self, name: str) -> SnapshotInfo: ...
    async def remove(self, name: str) -> None: ...
    async def restore(self, name: str) -> None: ...

class Box:
    """A box (durable: it outlives the process)."""

    @property
    def id(self) -> str: ...
    @property
    def name(self) -> Optional[str]: ...
    async def start(self) -> None: ...
    async def stop(self, timeout: Optional[float] = None) -> None: ...
    async def pause(self) -> None: ...
    async def resume(self) -> None: ...
    @property
    def snapshot(self) -> SnapshotHandle: ...
    async def clone_box(
        self,
        *,
        options: Optional[object] = None,
        name: Optional[str] = None,
        snapshot: Optional[str] = None,
    ) -> Box: ...
    async def info(self) -> BoxInfo: ...
    async def metrics(self) -> BoxMetrics: ...
    async def exec(
        self,
        command: str,
        args: Optional[List[str]] = None,
        env: _Env = None,
        tty: bool = False,
        user: Optional[str] = None,
        timeout_secs: Optional[float] = None,
        cwd: Optional[str] = None,
        *,
        stdin: Union[bytes, str, None] = None,
    ) -> Execution: ...
    async def attach(self, execution_id: Optional[str] = None, stdin: bool = True) -> Execution: ...
    async def copy_in(self, host_path: Union[str, PathLike], container_dest: str, copy_options: Optional[CopyOptions] = None) -> None: ...
    async def copy_out(self, container_src: str, host_dest: Union[str, PathLike], copy_options: Optional[CopyOptions] = None) -> None: ...
    async def __aenter__(self) -> "Box": ...
    async def __aexit__(self, *exc: Any) -> bool: ...

class AccessToken:
    """A bearer token; its repr hides it."""

    token: str
    expires_at: Optional[float]

class ApiKeyCredential:
    """An API key for ``boxlite serve``; its repr hides it."""

    def __init__(self, key: str) -> None: ...
    @staticmethod
    def from_env() -> Optional["ApiKeyCredential"]: ...
    def get_token(self) -> AccessToken: ...

class BoxliteRestOptions:
    """Where a ``boxlite serve`` is, and the key it takes."""

    url: str
    credential: Optional[ApiKeyCredential]
    path_prefix: Optional[str]
    def __init__(
        self,
        url: str,
        credential: Optional[ApiKeyCredential] = None,
        path_prefix: Optional[str] = None,
    ) -> None: ...
    @staticmethod
    def from_env() -> "BoxliteRestOptions": ...

def _quiesce() -> None: ...

class Boxlite:
    """A runtime over one home directory, or over a ``boxlite serve``."""

    def __init__(self, options: Optional[Options] = None) -> None: ...
    @staticmethod
    def default() -> "Boxlite": ...
    @staticmethod
    def init_default(options: Options) -> None: ...
    @staticmethod
    def rest(options: BoxliteRestOptions) -> "Boxlite": ...
    @property
    def home_dir(self) -> Optional[str]: ...
    async def create(self, options: BoxOptions, name: Optional[str] = None) -> Box: ...
    async def get(self, id_or_name: str) -> Optional[Box]: ...
    async def get_info(self, id_or_name: str) -> Optional[BoxInfo]: ...
    async def get_or_create(self, options: BoxOptions, name: Optional[str] = None) -> Tuple[Box, bool]: ...
    async def list_info(self, _state: Any = None) -> List[BoxInfo]: ...
    async def remove(self, id_or_name: str, force: bool = False) -> None: ...
    async def metrics(self) -> RuntimeMetrics: ...
    async def shutdown(self, timeout: Optional[float] = None) -> None: ...
    def close(self) -> None: ...
    def __enter__(self) -> "Boxlite": ...
    def __exit__(self, *exc: Any) -> bool: ...
