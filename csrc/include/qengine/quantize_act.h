// Per-token dynamic activation quantization (torch-free launcher).
//
// Math (the contract of qengine.formats.spec, bit for bit):
//   xs[m,k]  = float(x[m,k]) / float(smooth[k])        (IEEE fp32 division; no smooth: xs = x)
//   absmax   = max_k |xs[m,k]|
//   scale[m] = absmax / QMAX  (127 for INT8, 448 for FP8; IEEE fp32 division), or 1 if absmax == 0
//   INT8: q = clamp(rint_half_even(xs / scale), -127, 127)
//   FP8 : q = e4m3_rne(clamp(xs / scale, -448, 448))
//
// One pass over X: each row is read once into registers (rows up to the kernel's register
// capacity, 8192 16-byte vectors: 65536 16-bit or 32768 fp32 elements), reduced, then quantized
// from registers. Longer rows re-read the tail from global memory (L2). Quantized bytes are
// written once. Bit-exact with the math above for all finite inputs (the division by the scale is
// computed without a divide instruction but exactly rounded: see quantize_act.cu).
//
// Optional low-rank down-projection in the same pass (SVDQuant's lora_down), when rank > 0:
//   lowrank[m,j] = sum_k xs[m,k] * lora_down[j,k]      (fp32 out, [M, rank] row-major)
// computed on tensor cores (mma.sync bf16 -> fp32): xs is split into bf16 hi + lo parts (exact for
// 16-bit input, ~2^-17 relative for smoothed or fp32 input), lora_down must be bf16. Not bit-exact
// with an fp32 matmul (summation order, the lo part's rounding): SQNR > 90 dB in the tests. This
// path uses a tile kernel (16 rows per block, two passes over X: the second mostly from L2; one
// pass when the rows' absmax is given, amax_in below).
//
// Low-rank "cat" mode (FP8 only; lowrank_inv_c != nullptr, rank <= 256; qengine/formats/lowrank_cat.py):
// the branch is folded into the FP8 GEMM's K instead of being written out. With
//   v[m,j]   = lowrank[m,j] * lowrank_inv_c[j]                    (fp32 multiply)
//   absmax'  = max(absmax, max_j |v[m,j]|),  scale[m] = absmax' / 448 (or 1 if 0)
//   a[m,j]   = v[m,j] / scale[m] (IEEE),  hi = e4m3_rne(clamp(a)),  lo = e4m3_rne(clamp(a - hi))
// q has K + W columns (row stride K + W, W = lowrank_cat_width(rank)): q[:, :K] as above with the
// grown scale, then [hi | lo | hi] (| lo when lowrank_cat_terms(rank) == 4), then zeros. `lowrank`
// is not written (may be nullptr). q and scale are bit-exact with the reference given the same
// lowrank values; lowrank itself carries the tensor-core rounding above.
//
// Gelu-cat input (16-bit x; K_gelu > 0): the row that is quantized is
//   [x[m, :K - K_gelu] | gelu_tanh(gelu_x[m, :K_gelu])]
// read from the two tensors in place (never concatenated in memory), with gelu_tanh computed as
// PyTorch's CUDA gelu(approximate="tanh") does (fp32: 0.5 x (1 + tanh(b (x + k x^3)))) and rounded
// to x_type, so the result is bit-exact with quantizing torch.cat([x, F.gelu(g, "tanh")], -1).
// FLUX's single blocks feed proj_out with cat(attention output, gelu(proj_mlp(.))): this reads
// both once instead of writing and re-reading the concatenation. No low-rank branch here: see the
// two-part row below.
//
// Two-part row (16-bit x; K_x2 > 0; rank > 0, plain or cat mode): the row quantized and projected
// is [x[m, :K - K_x2] | x2[m, :K_x2]], read from the two tensors in place by the tile kernel's two
// passes, so q, scale and lowrank equal those of the concatenated row, bit for bit. The gelu-cat
// ops with a low-rank branch pass a GELU output as x2 (a GELU in both of the tile kernel's passes,
// ~30 instructions per element, made it slower than three separate kernels: notes/h100_2026-11-24d,
// call 1): in plain mode gelu_absmax's, with the rows' absmax as amax_in (one pass, below); in cat
// mode torch's.
//
// GEGLU input (geglu = true; 16-bit, no low-rank): the row quantized is
//   h[m, k] * gelu_erf(gate[m, k]),   h = gelu_x[m, :K], gate = gelu_x[m, K:2K]
// with gelu_erf computed as PyTorch's CUDA gelu(approximate="none") does (fp32:
// x * 0.5 * (1 + erf(x * sqrt(1/2)))) and rounded to x_type, then the product rounded to x_type:
// bit-exact with quantizing diffusers' GEGLU output (h * F.gelu(gate)). SD/SDXL feed-forwards
// feed their output linear from it; the [M, K] product is never written.
#pragma once

#include <cstdint>
#include <cuda_runtime.h>

#include "qengine/types.h"

namespace qengine {

// The cat columns' layout (qengine/formats/lowrank_cat.py): W = 3 rank rounded up to 128 (whole
// 128-deep k-blocks and 128-byte aligned rows for the GEMM), 4 products where 4 rank fits in W.
inline int lowrank_cat_width(int rank) { return (3 * rank + 127) / 128 * 128; }
inline int lowrank_cat_terms(int rank) { return 4 * rank <= lowrank_cat_width(rank) ? 4 : 3; }

struct QuantizeActParams {
  const void* x;          // [M, K] x_type, row stride ldx elements; 16-byte aligned rows
  int64_t ldx;            // elements between rows of x (>= K, multiple of 16 bytes / element size)
  FloatType x_type;
  const void* smooth;     // [K] smooth_type, or nullptr for no smoothing
  FloatType smooth_type;  // must be x_type or kFP32
  void* q;                // [M, K] int8 or fp8 e4m3, contiguous (row stride K; K + W in cat mode)
  float* scale;           // [M] fp32
  int64_t M;
  int64_t K;              // multiple of 16
  QuantType q_type;
  int sm_count;           // multiprocessors of the device (the grid is sized to what stays resident)
  // Low-rank down-projection (rank == 0: none). rank must be a multiple of 16.
  const void* lora_down = nullptr;  // [rank, K] bf16, row-major, contiguous, 16-byte aligned
  void* lowrank = nullptr;          // [M, rank] lowrank_type, row-major, contiguous (unused in cat mode)
  FloatType lowrank_type = FloatType::kFP32;  // 16-bit: each fp32 sum rounded once (nearest even)
  int rank = 0;
  const float* lowrank_inv_c = nullptr;  // [rank] fp32: cat mode (see above); q is then [M, K + W]
  // Cat mode with the low-rank product given ([M, rank] fp32, e.g. from a cuBLAS x @ (lora_down /
  // smooth)^T): the one-pass row kernel adds the cat columns; lora_down is not read.
  const float* lowrank_in = nullptr;
  // Gelu-cat input (see above). x may be nullptr when K_gelu == K; both K - K_gelu and K_gelu are
  // multiples of 16; gelu_x has x_type, 16-byte aligned rows of stride ld_gelu elements.
  const void* gelu_x = nullptr;
  int64_t ld_gelu = 0;
  int64_t K_gelu = 0;
  // GEGLU input (see above): with K_gelu == K and x == nullptr, a gelu_x row holds [h | gate]
  // (2K columns, ld_gelu >= 2K) and the row quantized is h * gelu_erf(gate).
  bool geglu = false;
  // Two-part row (see above): x2 has x_type, 16-byte aligned rows of stride ld_x2 elements; x may
  // be nullptr when K_x2 == K. Needs rank > 0 (the row kernel has gelu-cat input for rank 0).
  const void* x2 = nullptr;
  int64_t ld_x2 = 0;
  int64_t K_x2 = 0;
  // The row absmax given ([M] fp32, max_k |xs[m,k]| computed by the producer, e.g. gelu_absmax):
  // rank > 0, not cat mode. The tile kernel then quantizes in its one pass over X (no second
  // pass); q and scale are those of the contract when amax_in holds the rows' absmax.
  const float* amax_in = nullptr;
};

// Returns cudaErrorInvalidValue for unsupported arguments, else the launch's error.
cudaError_t quantize_act(const QuantizeActParams& p, cudaStream_t stream);

// GELU with the row absmax, for the gelu-cat ops with a low-rank branch (16-bit input):
//   gelu_out[m, :] = gelu_tanh(gelu_x[m, :K_gelu])        (torch's CUDA arithmetic, rounded to x_type)
//   amax[m]        = max_k |xs[m, k]|,  xs = [x[m, :K_plain] | gelu_out[m, :]] (/ smooth[k] if given)
// i.e. the absmax quantize_act computes for that two-part row, exactly. One pass: x and gelu_x read
// once, gelu_out written once. The tile kernel then takes gelu_out as x2 and amax as amax_in and
// quantizes in one pass: the row is read twice in all (here, then there) instead of three times
// (torch's GELU, then the tile kernel's two passes).
struct GeluAbsmaxParams {
  const void* x;           // [M, K_plain] x_type, row stride ldx; nullptr when K_plain == 0
  int64_t ldx;
  int64_t K_plain;         // multiple of 16 bytes / element size (may be 0)
  const void* gelu_x;      // [M, K_gelu] x_type, row stride ld_gelu
  int64_t ld_gelu;
  int64_t K_gelu;          // > 0, multiple of 8
  FloatType x_type;        // kBF16 or kFP16
  const void* smooth;      // [K_plain + K_gelu] smooth_type, or nullptr
  FloatType smooth_type;   // x_type or kFP32
  void* gelu_out;          // [M, K_gelu] x_type, contiguous, 16-byte aligned
  float* amax;             // [M]
  int64_t M;
  int sm_count;
};
cudaError_t gelu_absmax(const GeluAbsmaxParams& p, cudaStream_t stream);

}  // namespace qengine
