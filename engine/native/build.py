"""Build the C++ side (engine/native/cpp) with CMake: the extension igan.engine.native._native, the C++
API library and the example programs, into build/cpp/ (ignored by git; rebuilt
incrementally). `./run` calls it after installing; a failure leaves the Python paths in use.
It needs a source checkout. `pip install` builds the extension alone (setup.py: the same
sources, flags and module name; in an editable install both write engine/native/_native*.so).

    python -m igan.engine.native.build [--build-dir DIR] [--quiet]
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

from ..errors import BackendError

SOURCE = Path(__file__).resolve().parent / "cpp"
BUILD_DIR = SOURCE.parents[2] / "build" / "cpp"  # the repository's build/cpp


class BuildUnavailable(BackendError):
    """No CMake or no C++ compiler on this machine."""


def missing_tools() -> str | None:
    """Why the C++ side cannot be built here, or None."""
    if not (SOURCE / "CMakeLists.txt").is_file():
        return f"the C++ sources are not here ({SOURCE}): build from a source checkout of igan"
    if shutil.which("cmake") is None:
        return "cmake is not installed"
    if not (os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")):
        return "no C++ compiler (c++/g++) is installed"
    try:
        import pybind11  # noqa: F401
    except ImportError:
        return "pybind11 is not installed in this Python"
    return None


def build(build_dir: Path = BUILD_DIR, *, quiet: bool = True, jobs: int = 2) -> Path:
    """Configure (first time) and build every target; returns the build directory.
    Raises BuildUnavailable without the tools, CalledProcessError when the build fails."""
    import pybind11

    reason = missing_tools()
    if reason:
        raise BuildUnavailable(reason)
    build_dir = Path(build_dir)
    out = subprocess.DEVNULL if quiet else None
    if not (build_dir / "CMakeCache.txt").exists():
        subprocess.run(["cmake", "-S", str(SOURCE), "-B", str(build_dir), f"-DPython_EXECUTABLE={sys.executable}",
                        f"-Dpybind11_DIR={pybind11.get_cmake_dir()}"], check=True, stdout=out)
    subprocess.run(["cmake", "--build", str(build_dir), f"-j{jobs}"], check=True, stdout=out)
    return build_dir


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--build-dir", type=Path, default=BUILD_DIR)
    p.add_argument("--quiet", action="store_true", help="only errors")
    args = p.parse_args(argv)
    try:
        build(args.build_dir, quiet=args.quiet)
    except BuildUnavailable as e:
        print(f"build_native: not built: {e}", file=sys.stderr)
        return 1
    except subprocess.CalledProcessError as e:
        print(f"build_native: the build failed ({e})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
