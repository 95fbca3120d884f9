"""The public surface: every name documented, BoxLite's names present, no VM needed."""

from __future__ import annotations

import inspect

import boxlite


def public_members(obj):
    for name, member in inspect.getmembers(obj):
        if name.startswith("_"):
            continue
        if callable(member) or isinstance(member, property) or inspect.isgetsetdescriptor(member):
            yield name, member


def test_every_public_name_has_a_docstring():
    missing = []
    for name in boxlite.__all__:
        obj = getattr(boxlite, name)
        if name == "__version__":
            continue
        if not (obj.__doc__ or "").strip():
            missing.append(name)
        if inspect.isclass(obj) and not issubclass(obj, BaseException):
            for member_name, member in public_members(obj):
                if not (getattr(member, "__doc__", None) or "").strip():
                    missing.append(f"{name}.{member_name}")
    assert missing == [], f"undocumented: {missing}"


def test_boxlites_names_are_there():
    for name in [
        "Boxlite", "Options", "BoxOptions", "Box", "Execution", "ExecResult", "BoxInfo",
        "BoxMetrics", "RuntimeMetrics", "NetworkSpec", "OutboundNetworkSpec", "CopyOptions",
        "SimpleBox", "CodeBox", "SyncBoxlite", "SyncSimpleBox", "SyncCodeBox", "BoxliteError",
        "NotFoundError", "InvalidStateError", "InvalidArgumentError", "TimeoutError",
        "BoxliteRestOptions", "ApiKeyCredential", "AccessToken", "Credential", "ConfigError", "Secret",
    ]:
        assert hasattr(boxlite, name), name
    assert callable(boxlite.Boxlite.rest) and callable(boxlite.SyncBoxlite.rest)
    assert "reuse_existing" in inspect.signature(boxlite.SimpleBox.__init__).parameters
    for cls in (boxlite.NotFoundError, boxlite.InvalidStateError, boxlite.ImageError):
        assert issubclass(cls, boxlite.BoxliteError) and issubclass(cls, RuntimeError)


def test_options_take_boxlites_shapes_and_refuse_host_paths():
    o = boxlite.BoxOptions(
        image="boxlite/busybox",
        env=[("A", "1")],
        volumes=[{"managed_volume": "data", "guest_path": "/data", "read_only": True}, "/scratch"],
        ports=[(8080, 80), {"guest_port": 53, "protocol": "udp"}],
        network=boxlite.NetworkSpec(mode="enabled", allow_net=["example.com"]),
    )
    assert o.volumes == ["data:/data:ro", "/scratch"]
    assert o.ports == ["8080:80/tcp", "0:53/udp"]
    assert o.network.allow_net == ["example.com"]
    for bad in ([("/etc", "/e")], [{"host_path": "/etc", "guest_path": "/e"}]):
        try:
            boxlite.BoxOptions(volumes=bad)
        except boxlite.InvalidArgumentError as e:
            assert "host directories" in str(e)
        else:
            raise AssertionError(f"{bad} was accepted")
    try:
        boxlite.NetworkSpec(outbound=boxlite.OutboundNetworkSpec(), mode="disabled")
    except boxlite.InvalidArgumentError:
        pass
    else:
        raise AssertionError("outbound and mode together were accepted")
