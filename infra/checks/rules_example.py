#!/usr/bin/env python3
"""The example rules file is one the binary and the module accept.

    rules_example.py [ROOT]      (ROOT: the repository root; default .)

Reads every infra/**/rules*.yaml* file and checks it against the format the binary reads, taken
from the source (src/rules/yaml.rs: the fields of RawFile, RawStage, RawPromotion, RawFreeze,
RawTrigger, which deny unknown fields; src/events/signal.rs: the built-in signal names), and
against what the module needs (rules_yaml): every stage has a name and an Artifact Registry
registry (grants are per repository), every promotion's from/to is a stage, and every signal a
promotion or a Cloud Build trigger names is built in or declared under `signals:`.
`promoter rules check FILE` is the full check; infra/checks/test_checks.py runs it when a built
binary is at hand.
"""

from __future__ import annotations

import pathlib
import re
import sys

import yaml

AR_REGISTRY = re.compile(r"^[a-z0-9-]+-docker\.pkg\.dev/[^/]+/[^/]+(/.*)?$")
STRUCTS = {"RawFile": "file", "RawStage": "stage", "RawPromotion": "promotion", "RawFreeze": "freeze", "RawTrigger": "trigger"}


def rust_fields(text: str, struct: str) -> tuple[set[str], set[str]]:
    """(all fields, required fields) of `struct NAME { ... }` in text."""
    body = re.search(rf"struct {struct}\s*\{{(.*?)\n\}}", text, re.S)
    if not body:
        return set(), set()
    fields, required = set(), set()
    default = False
    for line in body.group(1).splitlines():
        line = line.strip()
        if line.startswith("#[serde(default"):
            default = True
            continue
        field = re.match(r"^(?:pub\s+)?([a-z_][a-z0-9_]*)\s*:\s*(.+?),?$", line)
        if field:
            fields.add(field.group(1))
            if not default and not field.group(2).startswith("Option<"):
                required.add(field.group(1))
            default = False
    return fields, required


def format_of(root: pathlib.Path) -> tuple[dict[str, tuple[set[str], set[str]]], set[str]]:
    yaml_rs = (root / "src" / "rules" / "yaml.rs")
    text = yaml_rs.read_text(encoding="utf-8") if yaml_rs.exists() else ""
    shapes = {kind: rust_fields(text, struct) for struct, kind in STRUCTS.items()}
    signal_rs = root / "src" / "events" / "signal.rs"
    signals = set()
    if signal_rs.exists():
        signals = set(re.findall(r'SignalKind::[A-Z][A-Za-z]+ => "([a-z-]+)"', signal_rs.read_text(encoding="utf-8")))
    return shapes, signals


def check_file(path: pathlib.Path, rel: str, shapes, builtins: set[str]) -> list[str]:
    errors: list[str] = []
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        return [f"rules: {rel}: not YAML: {err}"]
    if not isinstance(doc, dict):
        return [f"rules: {rel}: not a mapping of stages, promotions, ..."]

    def shape(kind: str, value, where: str) -> bool:
        fields, required = shapes[kind]
        if not isinstance(value, dict):
            errors.append(f"rules: {rel}: {where} is not a mapping")
            return False
        for key in sorted(set(value) - fields):
            errors.append(f"rules: {rel}: {where}: unknown key {key!r} (the binary refuses it; known: {', '.join(sorted(fields))})")
        for key in sorted(required - set(value)):
            errors.append(f"rules: {rel}: {where}: {key} is required")
        return True

    if not shape("file", doc, "the file"):
        return errors
    declared = set(doc.get("signals") or [])
    known = builtins | declared
    stages = set()
    for i, stage in enumerate(doc.get("stages") or []):
        if shape("stage", stage, f"stages[{i}]"):
            stages.add(stage.get("name"))
            if not AR_REGISTRY.match(str(stage.get("registry", ""))):
                errors.append(f"rules: {rel}: stages[{i}].registry {stage.get('registry')!r} is not an Artifact Registry path LOCATION-docker.pkg.dev/PROJECT/REPOSITORY (the module grants per repository)")
    for i, promotion in enumerate(doc.get("promotions") or []):
        if not shape("promotion", promotion, f"promotions[{i}]"):
            continue
        for end in ("from", "to"):
            if promotion.get(end) not in stages:
                errors.append(f"rules: {rel}: promotions[{i}].{end} {promotion.get(end)!r} is not a stage ({', '.join(sorted(map(str, stages)))})")
        for key in ("require", "block_on"):
            for name in promotion.get(key) or []:
                if name not in known:
                    errors.append(f"rules: {rel}: promotions[{i}].{key}: {name!r} is neither built in ({', '.join(sorted(builtins))}) nor declared under signals:")
    for i, freeze in enumerate(doc.get("freezes") or []):
        if shape("freeze", freeze, f"freezes[{i}]"):
            for stage in freeze.get("into") or []:
                if stage not in stages:
                    errors.append(f"rules: {rel}: freezes[{i}].into: {stage!r} is not a stage")
    for i, trigger in enumerate(doc.get("cloud_build") or []):
        if shape("trigger", trigger, f"cloud_build[{i}]"):
            for key in ("on_success", "on_failure"):
                if key in trigger and trigger[key] not in known:
                    errors.append(f"rules: {rel}: cloud_build[{i}].{key}: {trigger[key]!r} is neither built in nor declared under signals:")
    return errors


def main(argv: list[str]) -> int:
    root = pathlib.Path(argv[1] if len(argv) > 1 else ".").resolve()
    shapes, builtins = format_of(root)
    errors: list[str] = []
    if not all(fields for fields, _ in shapes.values()):
        errors.append("rules: could not read the rules format from src/rules/yaml.rs (Raw* structs)")
    if not builtins:
        errors.append("rules: could not read the built-in signal names from src/events/signal.rs")
    files = sorted(p for p in (root / "infra").rglob("rules*.y*ml*") if ".terraform" not in p.parts)
    if not files:
        errors.append("rules: no example rules file under infra/ (rules.yaml.example)")
    if not errors:
        for path in files:
            errors.extend(check_file(path, str(path.relative_to(root)), shapes, builtins))
    for error in errors:
        print(error)
    if errors:
        print(f"rules: FAILED ({len(errors)} problem(s))")
        return 1
    print(f"rules: {', '.join(str(p.relative_to(root)) for p in files)}: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
