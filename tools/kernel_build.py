"""Compile qengine's torch-free CUDA kernels (csrc/**/*.cu, not the bindings) into objects.

Used by setup.py, and runnable alone so the heavy part of the build can happen on a machine
without a GPU or a CUDA torch (the objects need only nvcc and the CUTLASS headers):

    python tools/kernel_build.py --archs 90a --out .kbuild/qengine_kernels
    # later, on the GPU machine: the bindings compile against its torch, the objects are reused
    QENGINE_BUILD_CUDA=1 QENGINE_CUDA_ARCHS=90a python setup.py build_ext --inplace --build-temp .kbuild

An object is reused when its ``.key`` file matches: a hash of the nvcc version, the flags and
archs, the source, every qengine header it includes (followed recursively) and the CUTLASS
version. Timestamps play no part, so objects survive copies between machines; editing one
kernel family's sources recompiles that family only.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CSRC = ROOT / "csrc"
INCLUDE = CSRC / "include"
_INCLUDE_RE = re.compile(r'^\s*#\s*include\s*"([^"]+)"', re.M)


DEFAULT_ARCHS = "80;86;89;90a"
SUPPORTED_ARCHS = ("80", "86", "87", "89", "90", "90a")
CUTLASS_PIN = "4.2.0.0"


def parse_archs(raw: str) -> list[str]:
    """"80;86,sm_90a" -> ["80", "86", "90a"]; exits naming the bad entries."""
    archs = [a.strip().removeprefix("sm_").replace(".", "") for a in raw.replace(",", ";").split(";") if a.strip()]
    bad = [a for a in archs if a not in SUPPORTED_ARCHS]
    if bad or not archs:
        sys.exit(f"QENGINE_CUDA_ARCHS={raw!r}: unsupported arch(s) {bad}; choose from {', '.join(SUPPORTED_ARCHS)}")
    if min(int(a.rstrip("a")) for a in archs) < 80:
        sys.exit("qengine kernels need sm_80 or newer")
    return list(dict.fromkeys(archs))


def cutlass_include_dirs() -> tuple[list[str], str]:
    """CUTLASS/CuTe include directories and a description of where they come from:
    $QENGINE_CUTLASS_DIR (a source checkout), else the nvidia-cutlass wheel."""
    import importlib.util

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


def arch_defines(archs: list[str]) -> list[str]:
    """-D flags shared by the kernels and the bindings (plain tokens: ninja runs them through a
    shell; the binding stringifies the arch list)."""
    ccs = [int(a.rstrip("a")) for a in archs]
    defines = [f"-DQENGINE_CUDA_ARCHS={'_'.join(archs)}", "-DQENGINE_HAS_SM80"]
    if any(cc >= 89 for cc in ccs):
        defines.append("-DQENGINE_HAS_SM89_FP8")
    if "90a" in archs:
        defines.append("-DQENGINE_HAS_SM90")
    return defines


def kernel_flags(archs: list[str]) -> list[str]:
    dirs, version = cutlass_include_dirs()
    tag = re.sub(r"[^A-Za-z0-9_.]", "_", version if "wheel" in version else "checkout")
    return [*arch_defines(archs), f"-DQENGINE_CUTLASS_SOURCE={tag}", "-I" + str(INCLUDE), *("-I" + d for d in dirs)]


def kernel_archs(src: str, archs: list[str]) -> list[str]:
    """The archs a kernel source is compiled for: by directory, for every family.
    csrc/<family>/sm90/ holds wgmma/TMA code (90a only), csrc/<family>/sm89/ needs FP8 mma.sync
    (sm_89+), everything else builds for every arch (setup.py and tools/compile_kernels.sh use this)."""
    parts = src.split("/")
    if "sm90" in parts:
        return [a for a in archs if a == "90a"]
    if "sm89" in parts:
        return [a for a in archs if int(a.rstrip("a")) >= 89]
    return list(archs)


def kernel_sources(archs: list[str]) -> list[tuple[str, list[str]]]:
    out = []
    for p in sorted(CSRC.rglob("*.cu")):
        src = p.relative_to(ROOT).as_posix()
        if src.startswith("csrc/bindings/"):
            continue
        a = kernel_archs(src, archs)
        if a:
            out.append((src, a))
    return out


def _local_includes(path: Path, seen: set[Path]) -> None:
    """Add the qengine headers `path` includes, recursively (CUTLASS/CUDA headers are not ours:
    their version is part of the key instead)."""
    for name in _INCLUDE_RE.findall(path.read_text(errors="replace")):
        for base in (path.parent, INCLUDE):
            cand = (base / name).resolve()
            if cand.is_file() and CSRC in cand.parents:
                if cand not in seen:
                    seen.add(cand)
                    _local_includes(cand, seen)
                break


def object_key(src: str, cmd_flags: list[str], nvcc_version: str) -> str:
    h = hashlib.sha256()
    h.update(nvcc_version.encode())
    # Include directories differ between machines (site-packages paths); what they hold is pinned
    # by the CUTLASS source, which is among the flags (the QENGINE_CUTLASS_SOURCE define).
    h.update(" ".join(f for f in cmd_flags if not f.startswith("-I")).encode())
    for inc in (f[2:] for f in cmd_flags if f.startswith("-I")):
        version_h = Path(inc) / "cutlass" / "version.h"
        if version_h.is_file():
            h.update(version_h.read_bytes())
    path = ROOT / src
    headers: set[Path] = set()
    _local_includes(path, headers)
    for p in [path, *sorted(headers)]:
        h.update(p.relative_to(ROOT).as_posix().encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def nvcc_version(nvcc: str) -> str:
    r = subprocess.run([nvcc, "--version"], capture_output=True, text=True)
    if r.returncode:
        sys.exit(f"qengine: `{nvcc} --version` failed: {r.stderr.strip()}")
    # "release 13.0": objects of one CUDA minor release link together, whatever its patch build
    # (the GPU machines' nvcc may be a different 13.0 build than the one that compiled ahead).
    m = re.search(r"release (\d+\.\d+)", r.stdout)
    return m.group(0) if m else r.stdout.strip()


def compile_kernels(nvcc: str, kernels: list[tuple[str, list[str]]], flags: list[str], out_dir: Path,
                    jobs: int) -> list[str]:
    """Compile (or reuse) one object per kernel source; returns the object paths. Exits on errors."""
    out_dir.mkdir(parents=True, exist_ok=True)
    version = nvcc_version(nvcc)
    base = ["-std=c++17", "-O3", "-DNDEBUG", "--expt-relaxed-constexpr", "-Xcompiler=-fPIC", *flags]

    def compile_one(item):
        src, archs = item
        gencode = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in archs]
        obj = out_dir / (src.replace("/", "_") + "." + "_".join(archs) + ".o")
        key_file = obj.with_suffix(".o.key")
        key = object_key(src, base + gencode, version)
        if obj.exists() and key_file.exists() and key_file.read_text() == key:
            return str(obj), None
        cmd = [nvcc, *base, *gencode, "-c", str(ROOT / src), "-o", str(obj)]
        t0 = time.time()
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode:
            return None, f"FAILED: {' '.join(cmd)}\n{r.stdout}{r.stderr}"
        key_file.write_text(key)  # written after the object: a killed compile leaves no valid key
        print(f"qengine: compiled {src} for {', '.join('sm_' + a for a in archs)} in {time.time() - t0:.0f}s",
              file=sys.stderr, flush=True)
        return str(obj), None

    # Longest first (the sm90 CUTLASS sources) so the parallel tail is short.
    order = sorted(kernels, key=lambda k: ("/sm90/" not in k[0], "/sm80/" not in k[0], k[0]))
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        results = list(pool.map(compile_one, order))
    errors = [e for _, e in results if e]
    if errors:
        sys.exit("qengine: kernel compilation failed\n" + "\n".join(errors))
    return [o for o, _ in results]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--archs", default=os.environ.get("QENGINE_CUDA_ARCHS", DEFAULT_ARCHS),
                    help="target archs, ';' or ',' separated (default: $QENGINE_CUDA_ARCHS or %(default)s)")
    ap.add_argument("--out", type=Path, default=ROOT / "build" / "qengine_kernels",
                    help="object directory (setup.py uses <build-temp>/qengine_kernels)")
    ap.add_argument("--jobs", type=int, default=int(os.environ.get("MAX_JOBS", os.cpu_count() or 1)))
    ap.add_argument("--nvcc", default=os.environ.get("NVCC", "nvcc"))
    args = ap.parse_args()
    archs = parse_archs(args.archs)
    kernels = kernel_sources(archs)
    print(f"qengine: {len(kernels)} kernel sources for {', '.join('sm_' + a for a in archs)}, {args.jobs} jobs",
          file=sys.stderr, flush=True)
    objs = compile_kernels(args.nvcc, kernels, kernel_flags(archs), args.out, args.jobs)
    print(f"qengine: {len(objs)} kernel objects in {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
