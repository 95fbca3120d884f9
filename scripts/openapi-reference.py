#!/usr/bin/env python3
"""Extract the facts the compatibility test needs from BoxLite's OpenAPI document.

Usage: scripts/openapi-reference.py BOX_OPENAPI_YAML "WHERE IT CAME FROM" > openapi/boxlite-reference.json

BoxLite's document (openapi/box.openapi.yaml in its repository) is not reachable from CI,
so this keeps only what the test compares: each operation's method, path (without the
optional routing segment `/{prefix}`), operation id and body schemas, and each schema's
properties as type signatures (`string`, `integer`, `array<ref:Box>`, ...), with which
are required and which may be null. See crates/boxlite-server/src/openapi.rs.
"""
import json
import sys

import yaml


def sig(s):
    """A schema's type signature: the same grammar as `sig` in openapi.rs."""
    if s is None:
        return "any", False
    if "$ref" in s:
        return "ref:" + s["$ref"].rsplit("/", 1)[1], False
    for key in ("oneOf", "anyOf"):
        if key in s:
            parts = [sig(x) for x in s[key]]
            real = [p for p, _ in parts if p != "null"]
            nullable = any(p == "null" or n for p, n in parts)
            return (real[0] if len(real) == 1 else "any"), nullable
    if "allOf" in s and len(s["allOf"]) == 1:
        return sig(s["allOf"][0])[0], bool(s.get("nullable"))
    t = s.get("type")
    nullable = bool(s.get("nullable"))
    if isinstance(t, list):
        nullable = nullable or "null" in t
        t = [x for x in t if x != "null"]
        t = t[0] if len(t) == 1 else None
    if t == "array":
        return "array<" + sig(s.get("items"))[0] + ">", nullable
    if t is None:
        return "any", nullable
    return t, nullable


def body_sig(content):
    if not content:
        return None
    for media in ("application/json", "application/x-tar", "application/octet-stream"):
        if media in content:
            return media + " " + sig(content[media].get("schema"))[0]
    return sorted(content)[0]


def main():
    doc = yaml.safe_load(open(sys.argv[1]))
    responses = doc.get("components", {}).get("responses", {})
    ops = []
    for path, item in doc["paths"].items():
        for method in ("get", "put", "post", "delete", "head", "patch"):
            op = item.get(method)
            if not op:
                continue
            req = (op.get("requestBody") or {}).get("content")
            ok = {}
            for status, r in op.get("responses", {}).items():
                if "$ref" in r:
                    r = responses[r["$ref"].rsplit("/", 1)[1]]
                ok[status] = body_sig(r.get("content"))
            ops.append({
                "method": method,
                "path": "/v1" + path.replace("/{prefix}", ""),
                "operationId": op.get("operationId"),
                "request": body_sig(req),
                "responses": ok,
            })
    schemas = {}
    for name, s in doc["components"]["schemas"].items():
        props = {}
        for p, ps in (s.get("properties") or {}).items():
            t, n = sig(ps)
            props[p] = {"type": t, "nullable": n}
        entry = {"type": sig(s)[0], "required": sorted(s.get("required", [])), "properties": props}
        if "enum" in s:
            entry["enum"] = s["enum"]
        schemas[name] = entry
    out = {
        "source": sys.argv[2],
        "info_version": doc["info"]["version"],
        "operations": ops,
        "schemas": schemas,
    }
    json.dump(out, sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")


main()
