"""Build of qengine: a pure-Python package, plus the CUDA extension ``qengine._C`` when asked for.

The extension is built when ``QENGINE_BUILD_CUDA=1``, or, with the variable unset, when the
installed torch has CUDA (``torch.version.cuda``) and nvcc is found. ``QENGINE_BUILD_CUDA=0``
always gives the pure-Python package (the CPU reference backend). Build it against the torch
already installed:

    QENGINE_BUILD_CUDA=1 MAX_JOBS=16 pip install --no-build-isolation -e .

Environment:
  QENGINE_CUDA_ARCHS   target archs, ';'- or ','-separated, default "80;86;89;90a". Each is
                       compiled with its own -gencode; only the kernels an arch needs are built
                       (csrc/*/sm90/ only for 90a, csrc/*/sm89/ (FP8 mma.sync) only for 89/90a).
  QENGINE_CUTLASS_DIR  a CUTLASS source checkout to use instead of the nvidia-cutlass wheel's
                       headers (see third_party/README.md for the pinned version).
  MAX_JOBS             parallel compile jobs (ninja).

The kernel objects can be compiled ahead, on a machine without a GPU (tools/kernel_build.py),
and reused here: put them in <build-temp>/qengine_kernels.
"""
from __future__ import annotations

import glob
import importlib.util
import os
import shutil
import sys
from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).parent.resolve()


def _kernel_build():
    """tools/kernel_build.py: archs, CUTLASS headers and the cached kernel-object compile."""
    spec = importlib.util.spec_from_file_location("qengine_kernel_build", ROOT / "tools" / "kernel_build.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _want_cuda() -> bool:
    flag = os.environ.get("QENGINE_BUILD_CUDA", "").strip()
    if flag == "0":
        return False
    try:
        import torch
        from torch.utils.cpp_extension import CUDA_HOME
    except ImportError:
        if flag == "1":
            sys.exit("QENGINE_BUILD_CUDA=1 needs torch importable at build time: "
                     "install with `pip install --no-build-isolation .`")
        return False
    has_nvcc = CUDA_HOME is not None and (Path(CUDA_HOME) / "bin" / "nvcc").exists() or shutil.which("nvcc")
    if flag == "1":
        if not has_nvcc:
            sys.exit("QENGINE_BUILD_CUDA=1 but nvcc was not found (set CUDA_HOME)")
        return True
    return torch.version.cuda is not None and bool(has_nvcc)


def _cuda_extension():
    from torch.utils.cpp_extension import CUDAExtension

    kb = _kernel_build()
    archs = kb.parse_archs(os.environ.get("QENGINE_CUDA_ARCHS", kb.DEFAULT_ARCHS))
    cutlass_dirs, cutlass_version = kb.cutlass_include_dirs()
    kernels = kb.kernel_sources(archs)
    print(f"qengine: building qengine._C for {', '.join('sm_' + a for a in archs)} with CUTLASS from "
          f"{cutlass_version}; {len(kernels)} kernel sources", file=sys.stderr)
    ext = CUDAExtension(
        name="qengine._C",
        sources=sorted(os.path.relpath(p, ROOT) for p in glob.glob(str(ROOT / "csrc" / "bindings" / "*.cpp"))),
        include_dirs=[str(ROOT / "csrc" / "include")] + cutlass_dirs,
        extra_compile_args={"cxx": ["-O3"] + kb.arch_defines(archs)},
    )
    ext.qengine_kernels = kernels
    ext.qengine_kernel_flags = kb.kernel_flags(archs)
    return ext


def _build_ext_class():
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension

    class BuildExtensionWithKernels(BuildExtension):
        """Compiles the torch-free kernels (csrc/**/*.cu) with per-file -gencode flags, in parallel,
        then links them into the extension with the bindings. torch's own build applies one set of
        nvcc flags to every source, which would compile the sm90 wgmma kernels for every arch.
        Objects are cached under <build-temp>/qengine_kernels by content (tools/kernel_build.py), so
        objects compiled on another machine are reused."""

        def build_extensions(self):
            for ext in self.extensions:
                kernels = getattr(ext, "qengine_kernels", None)
                if kernels:
                    nvcc = str(Path(CUDA_HOME) / "bin" / "nvcc") if CUDA_HOME else "nvcc"
                    objs = _kernel_build().compile_kernels(
                        nvcc, kernels, ext.qengine_kernel_flags, Path(self.build_temp) / "qengine_kernels",
                        int(os.environ.get("MAX_JOBS", os.cpu_count() or 1)))
                    ext.extra_objects = list(ext.extra_objects or []) + objs
            super().build_extensions()

    return BuildExtensionWithKernels


def _setup_kwargs() -> dict:
    if not _want_cuda():
        return {}
    return {"ext_modules": [_cuda_extension()], "cmdclass": {"build_ext": _build_ext_class()}}


setup(**_setup_kwargs())
