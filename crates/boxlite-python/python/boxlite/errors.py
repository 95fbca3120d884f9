"""The exception hierarchy. Every error the native library raises is a ``BoxliteError``
and also a ``RuntimeError`` (as BoxLite's SDK raises them), of the class for its kind;
the message is the library's whole error chain, as the CLI prints it."""

from __future__ import annotations


class BoxliteError(Exception):
    """Base class of every boxlite error."""


class ExecError(BoxliteError):
    """A helper's command failed (raised by convenience boxes, never by ``exec``)."""

    def __init__(self, command: str, exit_code: int, stderr: str) -> None:
        self.command = command
        self.exit_code = exit_code
        self.stderr = stderr
        super().__init__(f"Command {command!r} failed with exit code {exit_code}: {stderr}")


class TimeoutError(BoxliteError):  # noqa: A001 - BoxLite's name
    """Something did not finish in time (an exec's own timeout does not raise: it ends
    the command with exit code 124)."""


class ParseError(BoxliteError):
    """Output that could not be parsed."""


class _NativeError(BoxliteError, RuntimeError):
    """An error of the library; ``code`` is its stable kind."""

    code = "internal"


class InvalidArgumentError(_NativeError):
    """A bad argument: an option, a name, an image reference, a command, a path."""

    code = "invalid_argument"


class UnsupportedError(_NativeError):
    """Not supported by this runtime."""

    code = "unsupported"


class NotFoundError(_NativeError):
    """No such box, execution, image, volume or path."""

    code = "not_found"


class AlreadyExistsError(_NativeError):
    """The name is taken."""

    code = "already_exists"


class InvalidStateError(_NativeError):
    """Not possible now: the box is not running (or is), the image is in use, stdin is
    closed."""

    code = "invalid_state"


class StoppedError(_NativeError):
    """The box stopped."""

    code = "stopped"


class ImageError(_NativeError):
    """An image could not be pulled."""

    code = "image_pull_failed"


class ExecutionError(_NativeError):
    """A command could not be run."""

    code = "execution_failed"


class ResourceExhaustedError(_NativeError):
    """A disk in the box is full."""

    code = "resource_exhausted"


class NetworkError(_NativeError):
    """The network is unavailable."""

    code = "network_unavailable"


class UpstreamUnavailableError(_NativeError):
    """A service the server depends on did not answer (REST runtime)."""

    code = "upstream_unavailable"


class ConfigError(_NativeError):
    """The runtime's configuration is wrong: for a REST runtime, a missing or refused
    credential, or a missing ``BOXLITE_REST_URL``."""

    code = "config_error"


class EngineError(_NativeError):
    """The runtime has been shut down."""

    code = "engine_unavailable"


class InternalError(_NativeError):
    """A fault of this machine or of boxlite; the message says what."""

    code = "internal"


class AgentTimeoutError(_NativeError, TimeoutError):
    """The box's agent did not answer in time."""

    code = "timeout"


__all__ = [
    "AgentTimeoutError",
    "AlreadyExistsError",
    "BoxliteError",
    "ConfigError",
    "EngineError",
    "ExecError",
    "ExecutionError",
    "ImageError",
    "InternalError",
    "InvalidArgumentError",
    "InvalidStateError",
    "NetworkError",
    "NotFoundError",
    "ParseError",
    "ResourceExhaustedError",
    "StoppedError",
    "TimeoutError",
    "UnsupportedError",
    "UpstreamUnavailableError",
]
