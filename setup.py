"""igan: a fast inference engine for InfinityGAN.

The top-level folders (engine/, kernels/, export/, trainer/) install under one import
namespace, ``igan`` (``igan.engine``, ``igan.kernels``, ...), so that bare names such as
``kernels`` never collide with other installed packages.

The build requirements are in pyproject.toml. `pip install .` and `pip install -e .` also
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
                            [f"{NATIVE_SRC}/native.cpp", f"{NATIVE_SRC}/hotpaths.cpp"],
                            include_dirs=[NATIVE_SRC], cxx_std=17, extra_compile_args=NATIVE_FLAGS,
                            optional=True)  # a failed compile warns; the Python paths serve
    return [ext], {"build_ext": build_ext}


packages, package_dir = _packages()
ext_modules, cmdclass = _native()

# onnx (igan-export --onnx, --backend onnx) is an extra: "onnx" with the CPU build of
# onnxruntime, "gpu" with the GPU build. The two builds write the same package: install one.
ONNX = ["onnx>=1.16", "onnxscript>=0.1"]

setup(
    name="igan",
    version="0.2.0",
    description="High-performance inference engine for InfinityGAN (unbounded-size image generation)",
    license="MIT",
    license_files=["LICENSE"],
    python_requires=">=3.11",  # zarr 3
    packages=packages,
    package_dir=package_dir,
    # The embedded default model (igan.engine.embedded), trained by igan-train.
    package_data={"igan.engine": ["default_model.safetensors"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    zip_safe=False,
    install_requires=[
        "torch>=2.4,<2.15",
        "numpy>=1.24",
        "pillow>=10",
        "safetensors>=0.4",
        "tifffile>=2024.1",
        "tqdm>=4.60",
        "zarr>=3.0",  # the tile store (engine/store.py)
        "pybind11>=2.12",  # headers + CMake config for the C++ API (python -m igan.engine.native.build)
    ],
    extras_require={
        "test": ["pytest>=8", "pytest-benchmark>=4", "scipy>=1.10"],
        "onnx": ONNX + ["onnxruntime>=1.18"],
        "gpu": ONNX + ["onnxruntime-gpu>=1.18"],  # instead of "onnx", never with it
        "triton": ["triton>=3.0"],
        "zstd": ["imagecodecs>=2024.1"],  # --compression zstd for TIFF (zlib, the default, needs nothing)
    },
    entry_points={"console_scripts": [
        "igan-render=igan.engine.cli.render:main",
        "igan-train=igan.trainer.cli:main",
        "igan-export=igan.export.cli:main",
        "igan-bench=igan.engine.cli.bench:main",
        "igan-eval=igan.trainer.eval.cli:main",
        "igan-invert=igan.engine.cli.apps:invert_main",
        "igan-outpaint=igan.engine.cli.apps:outpaint_main",
        "igan-inbetween=igan.engine.cli.apps:inbetween_main",
    ]},
)
