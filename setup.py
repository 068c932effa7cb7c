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
DEFAULT_ARCHS = "80;86;89;90a"
SUPPORTED_ARCHS = ("80", "86", "87", "89", "90", "90a")
CUTLASS_PIN = "4.2.0.0"


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


def _archs() -> list[str]:
    raw = os.environ.get("QENGINE_CUDA_ARCHS", DEFAULT_ARCHS)
    archs = [a.strip().removeprefix("sm_").replace(".", "") for a in raw.replace(",", ";").split(";") if a.strip()]
    bad = [a for a in archs if a not in SUPPORTED_ARCHS]
    if bad or not archs:
        sys.exit(f"QENGINE_CUDA_ARCHS={raw!r}: unsupported arch(s) {bad}; choose from {', '.join(SUPPORTED_ARCHS)}")
    return list(dict.fromkeys(archs))


def _cutlass_include_dirs() -> tuple[list[str], str]:
    override = os.environ.get("QENGINE_CUTLASS_DIR")
    if override:
        root = Path(override)
        dirs = [root / "include", root / "tools" / "util" / "include"]
        version = "source checkout " + str(root)
    else:
        # find_spec locates the wheel without importing it (its __init__ needs more packages).
        spec = importlib.util.find_spec("cutlass_library")
        if spec is None or not spec.submodule_search_locations:
            sys.exit(f"CUTLASS headers not found: `pip install nvidia-cutlass=={CUTLASS_PIN}` "
                     "or set QENGINE_CUTLASS_DIR to a CUTLASS checkout")
        root = Path(list(spec.submodule_search_locations)[0]) / "source"
        dirs = [root / "include", root / "tools" / "util" / "include"]
        version = f"nvidia-cutlass {CUTLASS_PIN} wheel"
    if not (dirs[0] / "cutlass" / "cutlass.h").exists():
        sys.exit(f"no cutlass/cutlass.h under {dirs[0]}")
    return [str(d) for d in dirs], version


def _gencode(arch: str) -> str:
    return f"-gencode=arch=compute_{arch},code=sm_{arch}"


def _kernel_archs(src: str, archs: list[str]) -> list[str]:
    """The archs a torch-free kernel source is compiled for (same rule as tools/compile_kernels.sh)."""
    # By directory, for every kernel family: csrc/<family>/sm90/ holds wgmma/TMA code (90a only),
    # csrc/<family>/sm89/ needs FP8 mma.sync (sm_89+), everything else builds for every arch.
    parts = src.split("/")
    if "sm90" in parts:
        return [a for a in archs if a == "90a"]
    if "sm89" in parts:
        return [a for a in archs if int(a.rstrip("a")) >= 89]
    return list(archs)


def _cuda_extension():
    from torch.utils.cpp_extension import CUDAExtension

    archs = _archs()
    ccs = [int(a.rstrip("a")) for a in archs]
    if min(ccs) < 80:
        sys.exit("qengine kernels need sm_80 or newer")
    cutlass_dirs, cutlass_version = _cutlass_include_dirs()

    # Plain tokens only: ninja runs these through a shell. The binding stringifies the list.
    defines = [f"-DQENGINE_CUDA_ARCHS={'_'.join(archs)}", "-DQENGINE_HAS_SM80"]
    if any(cc >= 89 for cc in ccs):
        defines.append("-DQENGINE_HAS_SM89_FP8")
    if "90a" in archs:
        defines.append("-DQENGINE_HAS_SM90")

    kernels = []
    for src in sorted(os.path.relpath(p, ROOT) for p in glob.glob(str(ROOT / "csrc" / "**" / "*.cu"), recursive=True)):
        if src.startswith("csrc/bindings/"):
            continue
        src_archs = _kernel_archs(src, archs)
        if src_archs:
            kernels.append((src, src_archs))
    print(f"qengine: building qengine._C for {', '.join('sm_' + a for a in archs)} with CUTLASS from "
          f"{cutlass_version}; {len(kernels)} kernel sources", file=sys.stderr)
    ext = CUDAExtension(
        name="qengine._C",
        sources=sorted(os.path.relpath(p, ROOT) for p in glob.glob(str(ROOT / "csrc" / "bindings" / "*.cpp"))),
        include_dirs=[str(ROOT / "csrc" / "include")] + cutlass_dirs,
        extra_compile_args={"cxx": ["-O3"] + defines},
    )
    ext.qengine_kernels = kernels
    ext.qengine_kernel_flags = defines + ["-I" + str(ROOT / "csrc" / "include")] + ["-I" + d for d in cutlass_dirs]
    return ext


def _build_ext_class():
    from concurrent.futures import ThreadPoolExecutor
    import subprocess
    import time

    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension

    class BuildExtensionWithKernels(BuildExtension):
        """Compiles the torch-free kernels (csrc/**/*.cu) with per-file -gencode flags, in parallel,
        then links them into the extension with the bindings. torch's own build applies one set of
        nvcc flags to every source, which would compile the sm90 wgmma kernels for every arch."""

        def build_extensions(self):
            for ext in self.extensions:
                kernels = getattr(ext, "qengine_kernels", None)
                if kernels:
                    ext.extra_objects = list(ext.extra_objects or []) + self._compile_kernels(ext, kernels)
            super().build_extensions()

        def _compile_kernels(self, ext, kernels):
            nvcc = str(Path(CUDA_HOME) / "bin" / "nvcc") if CUDA_HOME else "nvcc"
            out_dir = Path(self.build_temp) / "qengine_kernels"
            out_dir.mkdir(parents=True, exist_ok=True)
            newest_header = max(p.stat().st_mtime for p in ROOT.glob("csrc/**/*") if p.suffix in (".h", ".cuh"))
            flags = ["-std=c++17", "-O3", "-DNDEBUG", "--expt-relaxed-constexpr", "-Xcompiler=-fPIC"]
            flags += ext.qengine_kernel_flags

            def compile_one(item):
                src, archs = item
                obj = out_dir / (src.replace("/", "_") + "." + "_".join(archs) + ".o")
                if obj.exists() and obj.stat().st_mtime > max(newest_header, (ROOT / src).stat().st_mtime):
                    return str(obj), None
                cmd = [nvcc, *flags, *(_gencode(a) for a in archs), "-c", str(ROOT / src), "-o", str(obj)]
                t0 = time.time()
                r = subprocess.run(cmd, capture_output=True, text=True)
                if r.returncode:
                    return None, f"FAILED: {' '.join(cmd)}\n{r.stdout}{r.stderr}"
                print(f"qengine: compiled {src} for {', '.join('sm_' + a for a in archs)} in {time.time() - t0:.0f}s",
                      file=sys.stderr, flush=True)
                return str(obj), None

            jobs = int(os.environ.get("MAX_JOBS", os.cpu_count() or 1))
            # Longest first (the sm90 CUTLASS sources) so the parallel tail is short.
            order = sorted(kernels, key=lambda k: ("/sm90/" not in k[0], "/sm80/" not in k[0], k[0]))
            with ThreadPoolExecutor(max_workers=jobs) as pool:
                results = list(pool.map(compile_one, order))
            errors = [e for _, e in results if e]
            if errors:
                sys.exit("qengine: kernel compilation failed\n" + "\n".join(errors))
            return [o for o, _ in results]

    return BuildExtensionWithKernels


def _setup_kwargs() -> dict:
    if not _want_cuda():
        return {}
    return {"ext_modules": [_cuda_extension()], "cmdclass": {"build_ext": _build_ext_class()}}


setup(**_setup_kwargs())
