"""igan: a fast inference engine for InfinityGAN.

The top-level folders (engine/, kernels/, export/, trainer/) install under one import
namespace, ``igan`` (``igan.engine``, ``igan.kernels``, ...), so that bare names such as
``kernels`` never collide with other installed packages.
"""
import os
from importlib.metadata import PackageNotFoundError, version

from setuptools import find_packages, setup

TOP_LEVEL = ["engine", "kernels", "export", "trainer"]
ROOT = "engine/_root"  # igan/__init__.py itself: the public API (import igan; igan.load())


def _packages():
    names, dirs = ["igan"], {"igan": ROOT}
    for top in TOP_LEVEL:
        for sub in [""] + ["." + p for p in find_packages(top, exclude=["_root"])]:
            name = f"igan.{top}{sub}"
            names.append(name)
            dirs[name] = top + sub.replace(".", "/")
    return names, dirs


def _onnxruntime() -> str:
    """The one onnxruntime build to depend on. The CPU and GPU builds write the same package
    and must never be installed together: the GPU build when asked for (IGAN_ONNXRUNTIME=gpu,
    with the "gpu" extra) or already installed, else the CPU build."""
    try:
        version("onnxruntime-gpu")
        return "onnxruntime-gpu>=1.18"
    except PackageNotFoundError:
        pass
    return "onnxruntime-gpu>=1.18" if os.environ.get("IGAN_ONNXRUNTIME") == "gpu" else "onnxruntime>=1.18"


packages, package_dir = _packages()

setup(
    name="igan",
    version="0.1.0",
    description="High-performance inference engine for InfinityGAN (unbounded-size image generation)",
    python_requires=">=3.10",
    packages=packages,
    package_dir=package_dir,
    # The embedded default model (igan.engine.embedded), trained by igan-train.
    package_data={"igan.engine": ["default_model.safetensors"]},
    install_requires=[
        "torch>=2.4,<2.15",
        "numpy>=1.24",
        "pillow>=10",
        "safetensors>=0.4",
        "tifffile>=2024.1",
        "imagecodecs>=2024.1",
        "tqdm>=4.60",
        "zarr>=3.0",
        # the onnx backend and igan-export are default features (export/)
        "onnx>=1.16",
        "onnxscript>=0.1",
        _onnxruntime(),
        "pybind11>=2.12",  # headers + CMake config for the C++ API and igan.engine.native._native
    ],
    extras_require={
        "test": ["pytest>=8", "pytest-benchmark>=4", "scipy>=1.10"],
        "triton": ["triton>=3.0"],
        # GPU build of onnxruntime: IGAN_ONNXRUNTIME=gpu pip install -e ".[gpu]" (see _onnxruntime)
        "gpu": ["onnxruntime-gpu>=1.18"],
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
