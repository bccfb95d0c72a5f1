#!/usr/bin/env python3
"""Parse every .tf file under ROOT/infra with python-hcl2; exit 1 if one does not parse."""

from __future__ import annotations

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import hclutil  # noqa: E402


def main(argv: list[str]) -> int:
    root = pathlib.Path(argv[1] if len(argv) > 1 else ".").resolve()
    files = hclutil.tf_files(root)
    if not files:
        print(f"hcl: no .tf files under {root / 'infra'}")
        return 1
    failed = 0
    for path in files:
        try:
            hclutil.load(path)
        except Exception as err:  # the parser raises several exception types
            failed += 1
            print(f"hcl: {path.relative_to(root)}: does not parse: {err}")
    print(f"hcl: {len(files) - failed}/{len(files)} files parse")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
