"""Helpers over python-hcl2 output, shared by the checks.

python-hcl2 8 keeps the quotes of string literals and block labels ('"roles/run.invoker"') and
marks blocks with __is_block__; older releases wrap every attribute in a one-element list. The
helpers below accept both shapes.
"""

from __future__ import annotations

import pathlib
from typing import Any, Iterator

import hcl2


def unq(value: Any) -> Any:
    """A string without the quotes HCL literals keep in python-hcl2 8."""
    if isinstance(value, str) and len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        return value[1:-1]
    return value


def attr(body: dict, name: str, default: Any = None) -> Any:
    """The value of an attribute (unquoted; one-element lists of old releases unwrapped)."""
    if not isinstance(body, dict) or name not in body:
        return default
    value = body[name]
    if isinstance(value, list) and len(value) == 1 and not isinstance(value[0], dict):
        value = value[0]
    if isinstance(value, list):
        return [unq(v) for v in value]
    return unq(value)


def blocks(body: dict, name: str) -> list[dict]:
    """Nested blocks called `name` (e.g. env, template, containers)."""
    if not isinstance(body, dict):
        return []
    value = body.get(name)
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, dict)]
    return []


def load(path: pathlib.Path) -> dict:
    with open(path, encoding="utf-8") as handle:
        return hcl2.load(handle)


def tf_files(root: pathlib.Path) -> list[pathlib.Path]:
    infra = root / "infra"
    return sorted(p for p in infra.rglob("*.tf") if ".terraform" not in p.parts)


def resources(root: pathlib.Path) -> Iterator[tuple[pathlib.Path, str, str, dict]]:
    """(file, type, name, body) of every resource under infra/."""
    for path in tf_files(root):
        doc = load(path)
        for entry in doc.get("resource", []):
            for rtype, named in entry.items():
                for rname, body in named.items():
                    yield path, unq(rtype), unq(rname), body


def walk_blocks(body: Any, name: str) -> Iterator[dict]:
    """Every block called `name` at any depth below body."""
    if isinstance(body, dict):
        for key, value in body.items():
            key = unq(key)
            items = value if isinstance(value, list) else [value]
            for item in items:
                if isinstance(item, dict):
                    if key == name:
                        yield item
                    yield from walk_blocks(item, name)
    elif isinstance(body, list):
        for item in body:
            yield from walk_blocks(item, name)
