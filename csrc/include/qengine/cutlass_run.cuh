// Launch of a CUTLASS device GEMM (the 2.x and 3.x adapters share this interface), shared by
// the sm80 and sm90 families: capability check, workspace check, initialize, run, and a
// cudaError_t out (launchers never throw).
#pragma once

#include <cuda_runtime.h>

#include "cutlass/cutlass.h"
#include "qengine/w8a8_gemm.h"

namespace qengine {

template <typename Gemm>
cudaError_t run_cutlass_gemm(const typename Gemm::Arguments& args, const W8A8GemmParams& p, cudaStream_t stream) {
  Gemm gemm;
  if (gemm.can_implement(args) != cutlass::Status::kSuccess) return cudaErrorInvalidValue;
  if (Gemm::get_workspace_size(args) > p.workspace_bytes) return cudaErrorInvalidValue;
  if (gemm.initialize(args, p.workspace, stream) != cutlass::Status::kSuccess) return cudaErrorInvalidValue;
  if (gemm.run(stream) != cutlass::Status::kSuccess) {
    cudaError_t e = cudaGetLastError();
    return e == cudaSuccess ? cudaErrorLaunchFailure : e;
  }
  return cudaGetLastError();
}

}  // namespace qengine
