"""Build the tollgate-client wheel from the repository's own sources: `make client-wheel`.

Stages this project's pyproject.toml and README.md beside tollgate/clients and the stubs `make proto`
generated, in a throwaway directory, and runs `pip wheel --no-deps` on it. The sources are read where they
live, so the wheel can never drift from the checkout; nothing is copied into the repository.
"""

from __future__ import annotations

import argparse
import fnmatch
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CLIENT_PACKAGES = ("clients",)
STUB_PACKAGES = ("usage", "policy", "audit")
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc")
# The gRPC stubs and their types: what grpcio and protobuf alone can import. Other generators writing beside
# them (the Connect modules, *_connect.py, need connectrpc) stay out of this distribution.
STUB_FILES = ("__init__.py", "*_pb2.py", "*_pb2.pyi", "*_pb2_grpc.py")


class StaleStubs(RuntimeError):
    """The generated stubs are missing or older than the contracts they come from."""


def check_stubs(root: Path = ROOT) -> None:
    """Refuse to package stubs that `make proto` has not generated from the current proto/."""
    stamp_file = root / "tollgate" / ".generated"
    missing = [name for name in STUB_PACKAGES if not (root / "tollgate" / name / "v1" / "__init__.py").is_file()]
    if missing or not stamp_file.is_file():
        raise StaleStubs(f"no generated stubs for {', '.join(missing) or 'the contracts'}: run `make proto` first")
    stamp = stamp_file.stat().st_mtime
    newer = sorted(str(p.relative_to(root)) for p in (root / "proto").rglob("*.proto") if p.stat().st_mtime > stamp)
    if newer:
        raise StaleStubs(f"{', '.join(newer)} changed after the stubs were generated: run `make proto` first")


def _not_stubs(folder: str, names: list[str]) -> set[str]:
    """copytree's ignore: every file of a stub package but the gRPC stubs and their types."""
    return {
        name
        for name in names
        if not (Path(folder) / name).is_dir() and not any(fnmatch.fnmatch(name, p) for p in STUB_FILES)
    } | IGNORED(folder, names)


def stage(into: Path) -> Path:
    """Lay out the project to build: its metadata, the client and stub packages, a py.typed in each."""
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(HERE / name, into / name)
    # tollgate/ itself gets no __init__.py and no marker: it stays a namespace other distributions share.
    for name in CLIENT_PACKAGES + STUB_PACKAGES:
        package = into / "tollgate" / name
        shutil.copytree(ROOT / "tollgate" / name, package, ignore=IGNORED if name in CLIENT_PACKAGES else _not_stubs)
        (package / "py.typed").touch()
    return into


def build(out: Path) -> Path:
    """Build the wheel into `out` and return its path."""
    check_stubs()
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tollgate-client-") as work:
        project = stage(Path(work))
        command = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(out), str(project)]
        subprocess.run(command, check=True)
    version = tomllib.loads((HERE / "pyproject.toml").read_text())["project"]["version"]
    return out / f"tollgate_client-{version}-py3-none-any.whl"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "dist", help="where the wheel goes (default: dist/)")
    args = parser.parse_args(argv)
    try:
        wheel = build(args.out.resolve())
    except StaleStubs as error:
        print(f"client-wheel: {error}", file=sys.stderr)
        return 2
    print(wheel)
    return 0


if __name__ == "__main__":
    sys.exit(main())
