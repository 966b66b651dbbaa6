"""igan: a fast inference engine for InfinityGAN.

The top-level folders (engine/, kernels/, export/, trainer/) install under one import
namespace, ``igan`` (``igan.engine``, ``igan.kernels``, ...), so that bare names such as
``kernels`` never collide with other installed packages.

The metadata (PEP 621) and build requirements are in pyproject.toml. `pip install .` and `pip install -e .` also
compile the C++ hot paths, igan.engine.native._native (engine/native/cpp/src, the same
sources and flags as its CMake target); the extension is optional: without a compiler the
install goes on and igan runs the Python paths. The C++ API and its examples are built by
CMake: python -m igan.engine.native.build.
"""
import warnings

from setuptools import find_packages, setup

TOP_LEVEL = ["engine", "kernels", "export", "trainer"]
ROOT = "engine/_root"  # igan/__init__.py itself: the public API (import igan; igan.load())
NATIVE_SRC = "engine/native/cpp/src"
# As the CMake target _native (engine/native/cpp/CMakeLists.txt): -O3 and IGAN_STRICT_FP. No FMA
# contraction: the float -> uint8 conversion must round exactly like torch (tested bit for bit).
NATIVE_FLAGS = ["-O3", "-ffp-contract=off", "-fno-fast-math", "-fno-trapping-math", "-Wall", "-Wextra"]


def _packages():
    names, dirs = ["igan"], {"igan": ROOT}
    for top in TOP_LEVEL:
        for sub in [""] + ["." + p for p in find_packages(top, exclude=["_root"])]:
            name = f"igan.{top}{sub}"
            names.append(name)
            dirs[name] = top + sub.replace(".", "/")
    return names, dirs


def _native():
    """igan.engine.native._native, or nothing when pybind11 is missing (a build outside pip)."""
    try:
        from pybind11.setup_helpers import Pybind11Extension, build_ext
    except ImportError:
        warnings.warn("pybind11 is not installed: igan.engine.native._native is not built "
                      "(igan uses its Python paths)")
        return [], {}
    ext = Pybind11Extension("igan.engine.native._native",
                            [f"{NATIVE_SRC}/native.cpp", f"{NATIVE_SRC}/hotpaths.cpp", f"{NATIVE_SRC}/exactpath.cpp"],
                            include_dirs=[NATIVE_SRC], cxx_std=17, extra_compile_args=NATIVE_FLAGS,
                            optional=True)  # a failed compile warns; the Python paths serve
    return [ext], {"build_ext": build_ext}


packages, package_dir = _packages()
ext_modules, cmdclass = _native()

setup(
    packages=packages,
    package_dir=package_dir,
    # The shipped models (igan.engine.embedded: the default and builtin:NAME), trained by igan-train.
    package_data={"igan.engine": ["models/*.safetensors"],
                  # igan-serve's page and its viewer (Leaflet), served from the package: no CDN
                  "igan.engine.serve": ["static/*.html", "static/*.js", "static/*.css", "static/leaflet/*"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    zip_safe=False,
)
