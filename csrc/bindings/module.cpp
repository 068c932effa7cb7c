// The qengine._C Python module: build information and debug entry points. The CUDA kernels of
// the torch.ops.qengine.* ops register themselves with TORCH_LIBRARY_IMPL in the other binding
// files (the op schemas are defined in Python: qengine/ops/library.py).
#include <torch/extension.h>

#include <string>
#include <vector>

#include "common.h"
#include <cuda_runtime_api.h>

#include "cutlass/version.h"

namespace qengine::bindings {
void register_gemm_debug(pybind11::module_& m);
void register_w4a4_debug(pybind11::module_& m);
void register_w4a8_debug(pybind11::module_& m);
void register_conv_debug(pybind11::module_& m);
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "qengine CUDA kernels (the ops are torch.ops.qengine.*; this module holds build info and debug hooks)";
  m.def(
      "build_info",
      []() {
        pybind11::dict d;
        std::vector<std::string> archs;
        for (const auto& a : qengine::bindings::compiled_archs()) archs.push_back("sm_" + a);
        d["archs"] = archs;
        d["cuda_version"] = std::to_string(CUDART_VERSION / 1000) + "." + std::to_string(CUDART_VERSION % 1000 / 10);
        d["cutlass"] = std::to_string(CUTLASS_MAJOR) + "." + std::to_string(CUTLASS_MINOR) + "." + std::to_string(CUTLASS_PATCH);
#ifdef QENGINE_HAS_SM90
        d["sm90_wgmma_gemm"] = true;
#else
        d["sm90_wgmma_gemm"] = false;
#endif
#ifdef QENGINE_HAS_SM89_FP8
        d["mma_fp8_gemm"] = true;
#else
        d["mma_fp8_gemm"] = false;
#endif
        return d;
      },
      "What this build holds: {'archs': ['sm_80', ...], 'cuda_version', 'cutlass', ...}; which ops have CUDA kernels: qengine.ops.MISSING_CUDA_KERNELS.");
  qengine::bindings::register_gemm_debug(m);
  qengine::bindings::register_w4a4_debug(m);
  qengine::bindings::register_w4a8_debug(m);
  qengine::bindings::register_conv_debug(m);
}
