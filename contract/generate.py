"""Regenerate the Python code for every .proto in contract/proto into contract/.

Run as `python -m contract.generate` (or `make protos`). `--check` regenerates
into a temporary folder and exits 1 when the committed files differ (CI freshness check).
Imports are rewritten to `from contract import x_pb2` so the package is the only import root.
"""

from __future__ import annotations

import argparse
import filecmp
import re
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE / "proto"
SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")
_IMPORT = re.compile(r"^import (\w+_pb2)( as \w+)?$", re.MULTILINE)


def generate(out: Path) -> list[Path]:
    """Run protoc on every source into `out`; return the files written."""
    from grpc_tools import protoc  # type: ignore[import-untyped]

    protos = sorted(str(p.name) for p in SRC.glob("*.proto"))
    include = Path(protoc.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{SRC}",
        f"-I{include}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    written = sorted(p for p in out.iterdir() if p.name.endswith(SUFFIXES))
    for path in written:
        text = _IMPORT.sub(r"from contract import \1\2", path.read_text())
        path.write_text(text)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if committed code is stale")
    args = parser.parse_args(argv)
    if not args.check:
        for path in generate(HERE):
            print(f"wrote {path.relative_to(HERE.parent)}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp))
        stale = [
            p.name
            for p in fresh
            if not (HERE / p.name).exists() or not filecmp.cmp(p, HERE / p.name, shallow=False)
        ]
        known = {p.name for p in fresh}
        extra = [
            p.name for p in HERE.iterdir() if p.name.endswith(SUFFIXES) and p.name not in known
        ]
    if stale or extra:
        print(f"generated protos are stale: {sorted(stale + extra)}; run `make protos`")
        return 1
    print("generated protos are fresh")
    return 0


if __name__ == "__main__":
    sys.exit(main())
