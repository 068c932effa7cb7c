// Launch of a CUTLASS device operator (the 2.x and 3.x GEMM adapters and the 3.x conv adapter
// share this interface), shared by every kernel family: capability check, workspace check,
// initialize, run, and a cudaError_t out (launchers never throw). `Params` is any launcher
// parameter struct with `workspace` / `workspace_bytes` (W8A8GemmParams, W4A8GemmParams,
// QConv2dParams).
#pragma once

#include <cuda_runtime.h>

#include "cutlass/cutlass.h"

namespace qengine {

template <typename Op, typename Params>
cudaError_t run_cutlass_op(const typename Op::Arguments& args, const Params& p, cudaStream_t stream) {
  Op op;
  if (op.can_implement(args) != cutlass::Status::kSuccess) return cudaErrorInvalidValue;
  if (Op::get_workspace_size(args) > p.workspace_bytes) return cudaErrorInvalidValue;
  if (op.initialize(args, p.workspace, stream) != cutlass::Status::kSuccess) return cudaErrorInvalidValue;
  if (op.run(stream) != cutlass::Status::kSuccess) {
    cudaError_t e = cudaGetLastError();
    return e == cudaSuccess ? cudaErrorLaunchFailure : e;
  }
  return cudaGetLastError();
}

}  // namespace qengine
