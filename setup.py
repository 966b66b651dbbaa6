"""igan: a fast inference engine for InfinityGAN.

The top-level folders (engine/, kernels/, export/, trainer/) install under one import
namespace, ``igan`` (``igan.engine``, ``igan.kernels``, ...), so that bare names such as
``kernels`` never collide with other installed packages.
"""
from setuptools import find_packages, setup

TOP_LEVEL = ["engine", "kernels", "export", "trainer"]


def _packages():
    names, dirs = [], {}
    for top in TOP_LEVEL:
        for sub in [""] + ["." + p for p in find_packages(top)]:
            name = f"igan.{top}{sub}"
            names.append(name)
            dirs[name] = top + sub.replace(".", "/")
    return names, dirs


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
    ],
    extras_require={
        "test": ["pytest>=8", "pytest-benchmark>=4", "scipy>=1.10"],
        "triton": ["triton>=3.0"],
        "onnx": ["onnx>=1.16", "onnxscript>=0.1", "onnxruntime>=1.18"],
        "gpu": ["onnxruntime-gpu>=1.18"],
    },
    entry_points={"console_scripts": ["igan-render=igan.engine.render:main", "igan-train=igan.trainer.cli:main"]},
)
