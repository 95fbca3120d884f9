"""``boxlite.Secret``: construction, a repr that never shows the value, validation, and a
real box that sees only the placeholder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import boxlite

from conftest import run

VALUE = "sk-py-4c1d2e3f"


async def _create(rt, opts):
    return await rt.create(opts)


def test_a_secret_takes_exactly_one_source_and_its_repr_never_shows_the_value(tmp_path):
    s = boxlite.Secret("OPENAI_KEY", VALUE, ["api.openai.com"])
    e = boxlite.Secret("GH", hosts=["api.github.com"], env="GITHUB_TOKEN", body=True)
    f = boxlite.Secret("F", hosts=["a.test"], placeholder="PLACEHOLDER_F", file=tmp_path / "k")

    assert VALUE not in repr(s) and VALUE not in str(s)
    assert "value=[REDACTED]" in repr(s)
    assert s.value == VALUE and s.env is None and s.file is None
    assert s.get_placeholder() == "<BOXLITE_SECRET:OPENAI_KEY>"
    assert (e.value, e.env, e.body) == (None, "GITHUB_TOKEN", True)
    assert 'env="GITHUB_TOKEN"' in repr(e)
    assert (f.file, f.get_placeholder()) == (str(tmp_path / "k"), "PLACEHOLDER_F")
    # BoxLite's positional shape and attributes.
    b = boxlite.Secret(name="K", value="v", hosts=["x.test"], placeholder=None)
    assert (b.name, b.hosts, b.placeholder) == ("K", ["x.test"], None)
    for bad in (
        dict(),
        dict(value="v", env="V"),
        dict(env="V", file="/f"),
        dict(value="v", file="/f"),
    ):
        with pytest.raises(boxlite.InvalidArgumentError, match="exactly one of"):
            boxlite.Secret("K", hosts=["a.test"], **bad)
    opts = boxlite.BoxOptions(image="boxlite/busybox", secrets=[s, e])
    assert [x.name for x in opts.secrets] == ["OPENAI_KEY", "GH"]
    assert VALUE not in repr(opts)


def test_invalid_secrets_are_refused_at_create_naming_the_problem(runtime):
    os.environ.pop("BOXLITE_PY_UNSET_VAR", None)
    cases = [
        (boxlite.Secret("K", VALUE), "has no hosts"),
        (boxlite.Secret("1K", VALUE, ["a.test"]), "invalid secret name"),
        (boxlite.Secret("K", VALUE, ["10.0.0.1"]), "not secret hosts"),
        (boxlite.Secret("K", hosts=["a.test"], env="BOXLITE_PY_UNSET_VAR"),
         "environment variable BOXLITE_PY_UNSET_VAR is not set"),
        (boxlite.Secret("K", hosts=["a.test"], file="/nonexistent/k"), "/nonexistent/k"),
    ]

    for secret, want in cases:
        with pytest.raises(boxlite.InvalidArgumentError) as err:
            run(_create(runtime, boxlite.BoxOptions(image="boxlite/busybox", secrets=[secret])))
        assert want in str(err.value), str(err.value)
        assert VALUE not in str(err.value)
    off = boxlite.BoxOptions(
        image="boxlite/busybox",
        network=boxlite.NetworkSpec(mode="disabled"),
        secrets=[boxlite.Secret("K", VALUE, ["a.test"])],
    )
    with pytest.raises(boxlite.InvalidArgumentError, match="needs the network"):
        run(_create(runtime, off))
    clash = boxlite.BoxOptions(
        image="boxlite/busybox", env=[("K", "x")], secrets=[boxlite.Secret("K", VALUE, ["a.test"])]
    )
    with pytest.raises(boxlite.InvalidArgumentError, match="environment variable K of the box"):
        run(_create(runtime, clash))


def test_a_local_box_sees_only_the_placeholder(runtime, home, tmp_path):
    key = tmp_path / "token"
    key.write_text(VALUE + "\n")
    opts = boxlite.BoxOptions(
        image="boxlite/busybox",
        auto_remove=False,
        secrets=[boxlite.Secret("API_KEY", hosts=["api.test"], file=key)],
    )

    async def go():
        b = await runtime.create(opts)
        async with b:
            x = await b.exec("env")
            out = []
            async for line in x.stdout():
                out.append(line)
            await x.wait()
        await runtime.remove(b.id)
        return "".join(out)

    env = run(go())

    assert "API_KEY=<BOXLITE_SECRET:API_KEY>\n" in env
    assert "BOXLITE_SECRET_API_KEY=<BOXLITE_SECRET:API_KEY>\n" in env
    assert VALUE not in env
    for p in Path(home).rglob("*"):
        if p.is_file() and not p.is_symlink():
            assert VALUE.encode() not in p.read_bytes(), p
