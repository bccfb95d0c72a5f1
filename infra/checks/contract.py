#!/usr/bin/env python3
"""Contract check: every environment variable the deployment sets is one the binary reads.

    contract.py [ROOT]      (ROOT: the repository root; default .)

Names set by the deployment:
  - infra/**/*.tf: `env { name = "..." }` blocks of Cloud Run services and jobs;
  - cloudbuild.yaml: `env:` / `secretEnv:` of steps that run the promoter image, and
    `--set-env-vars` / `--update-env-vars` / `docker run -e|--env NAME=...` in any step;
  - Dockerfile: `ENV NAME=...`.
Names the binary reads: every double-quoted string literal of the form "NAME" in ROOT/src/**/*.rs
(src/config.rs keeps each one as a `pub const`).

Exit 1, naming each offending variable and where it is set, when one is not read by the binary.
"""

from __future__ import annotations

import pathlib
import re
import shlex
import sys

import yaml

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import hclutil  # noqa: E402

NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
RUST_LITERAL = re.compile(r'"([A-Za-z_][A-Za-z0-9_]*)"')
ENV_FLAG = re.compile(r"--(?:set|update)-env-vars(?:=|\s+)(\S+)")
DOCKER_ENV = re.compile(r"(?:^|\s)(?:-e|--env)(?:=|\s+)['\"]?([A-Za-z_][A-Za-z0-9_]*)=")
CLOUD_RUN_TYPES = {
    "google_cloud_run_v2_service",
    "google_cloud_run_v2_job",
    "google_cloud_run_service",
}


def names_read_by_binary(root: pathlib.Path) -> set[str]:
    names: set[str] = set()
    for path in (root / "src").rglob("*.rs"):
        names.update(RUST_LITERAL.findall(path.read_text(encoding="utf-8")))
    return names


def names_in_infra(root: pathlib.Path) -> tuple[list[tuple[str, str]], list[str]]:
    """[(name, where)], [errors]"""
    found: list[tuple[str, str]] = []
    errors: list[str] = []
    for path, rtype, rname, body in hclutil.resources(root):
        if rtype not in CLOUD_RUN_TYPES:
            continue
        where = f"{path.relative_to(root)}: {rtype}.{rname}"
        for dyn in hclutil.walk_blocks(body, "dynamic"):
            if "env" in {hclutil.unq(k) for k in dyn}:
                errors.append(f"{where}: dynamic \"env\" block: set env vars statically so their names can be checked")
        for env in hclutil.walk_blocks(body, "env"):
            name = hclutil.attr(env, "name")
            if not isinstance(name, str) or not NAME.match(name):
                errors.append(f"{where}: env name {name!r} is not a literal variable name")
                continue
            found.append((name, where))
    return found, errors


def _step_text(step: dict) -> str:
    parts: list[str] = []
    args = step.get("args") or []
    if isinstance(args, str):
        args = [args]
    parts.extend(str(a) for a in args)
    if step.get("script"):
        parts.append(str(step["script"]))
    return "\n".join(parts)


def _is_promoter_step(step: dict) -> bool:
    image = str(step.get("name", ""))
    entrypoint = str(step.get("entrypoint", ""))
    return bool(re.search(r"(^|/)promoter([:@]|$)", image)) or entrypoint.rstrip("/").endswith("promoter")


def names_in_cloudbuild(root: pathlib.Path) -> tuple[list[tuple[str, str]], list[str]]:
    found: list[tuple[str, str]] = []
    errors: list[str] = []
    path = root / "cloudbuild.yaml"
    if not path.exists():
        return found, [f"{path} is missing"]
    doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    for index, step in enumerate(doc.get("steps") or []):
        where = f"cloudbuild.yaml: step {step.get('id', index)!s}"
        if _is_promoter_step(step):
            for key in ("env", "secretEnv"):
                for entry in step.get(key) or []:
                    name = str(entry).split("=", 1)[0]
                    if not NAME.match(name):
                        errors.append(f"{where}: {key} entry {entry!r} is not NAME=value")
                        continue
                    found.append((name, f"{where} ({key})"))
        text = _step_text(step)
        for match in ENV_FLAG.finditer(text):
            for token in shlex.split(match.group(1).replace(",", " ")):
                name = token.split("=", 1)[0].strip("'\"")
                if NAME.match(name):
                    found.append((name, f"{where} (--set/--update-env-vars)"))
        if "docker run" in text and "promoter" in text:
            for match in DOCKER_ENV.finditer(text):
                found.append((match.group(1), f"{where} (docker run --env)"))
    return found, errors


def names_in_dockerfile(root: pathlib.Path) -> list[tuple[str, str]]:
    path = root / "Dockerfile"
    if not path.exists():
        return []
    found = []
    text = re.sub(r"\\\n", " ", path.read_text(encoding="utf-8"))
    for line in text.splitlines():
        parts = line.strip().split(None, 1)
        if len(parts) == 2 and parts[0].upper() == "ENV":
            for token in shlex.split(parts[1]):
                name = token.split("=", 1)[0]
                if NAME.match(name):
                    found.append((name, "Dockerfile (ENV)"))
                if "=" not in token:  # legacy form: ENV NAME value
                    break
    return found


def set_by_deployment(root: pathlib.Path) -> tuple[list[tuple[str, str]], list[str]]:
    infra, errors = names_in_infra(root)
    build, build_errors = names_in_cloudbuild(root)
    return infra + build + names_in_dockerfile(root), errors + build_errors


def main(argv: list[str]) -> int:
    root = pathlib.Path(argv[1] if len(argv) > 1 else ".").resolve()
    if not (root / "src").is_dir():
        print(f"contract: {root / 'src'} is missing")
        return 1
    read = names_read_by_binary(root)
    found, errors = set_by_deployment(root)
    if not found:
        errors.append("no environment variables found in infra/ or cloudbuild.yaml (is the parser looking in the right place?)")
    for name, where in found:
        if name not in read:
            errors.append(f'{where}: sets {name}, but no "{name}" literal exists under src/ (the binary does not read it)')
    for error in errors:
        print(f"contract: {error}")
    names = sorted({name for name, _ in found})
    print(f"contract: {len(names)} names set by the deployment: {' '.join(names)}")
    if errors:
        print(f"contract: FAILED ({len(errors)} problem(s))")
        return 1
    print("contract: every name is read by the binary")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
