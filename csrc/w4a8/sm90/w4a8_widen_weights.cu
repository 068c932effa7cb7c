// The prepacked INT4 weights widened to an INT8 copy, 16 x w, [N, K] row-major (K contiguous):
// what the "widened" W4A8 configs write into their workspace before the GEMM, whose mainloop
// then reads both operands from shared memory like the W8A8 INT8 one (no widening per tile).
//
// Why (notes/w4a8.md, "Many tokens: widen once per call"): with thousands of tokens the
// register-widening mainloop converts every weight fragment once per tile of tokens, 18 times
// at FLUX's 4608 tokens with 256-token tiles, while a copy widened once costs a read of the
// 4-bit weights and a write of N x K bytes (mostly into L2); the SS INT8 ping-pong kernel then
// overlaps each warp group's epilogue with the other's mainloop, which the register-sourced
// mainloop cannot (twenty-fourth session).
//
// Layout read (weight_layout.cuh, qengine/formats/w4a8_layout.py): blocks of 16 rows x 32 values
// (256 bytes each), down N first, then along K; inside a block value (r, c) sits at element
//   64 (r % 8) + 4 (r / 8) + (c % 4) + 16 ((c / 4) % 4) + 8 (c / 16),
// element 2i in the low nibble of byte i. So lane (r, h) of a warp, h = which 16 of the block's
// 32 columns, finds its values c = 16h + 4j + t (t < 4) as the 4 nibbles of the 2 bytes at
// 32 (r % 8) + 2 (r / 8) + 4h + 8j, and writes them as one 16-byte row piece. A nibble moved to
// the high half of its byte is 16 x w as int8 (the mainloops' widening does the same).
#include <cstdint>
#include <cuda_runtime.h>

#include "../kernels.h"

namespace qengine::w4a8::sm90 {

namespace {

// 4 nibbles (low nibble first) -> 4 bytes, each nibble in the high half of its byte.
__device__ __forceinline__ uint32_t nibbles_times16(uint32_t x) {
  return ((x << 4) & 0xF0u) | ((x & 0xF0u) << 8) | ((x << 12) & 0xF00000u) | ((x << 16) & 0xF0000000u);
}

// One warp per 16x32 block; a CTA of 8 warps takes 8 consecutive blocks along K of one 16-row
// block, so it writes 16 rows x 256 contiguous bytes.
__global__ void __launch_bounds__(256) widen_kernel(const uint8_t* __restrict__ w, int8_t* __restrict__ out, int N,
                                                    int K) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ == 900
  const int kb = blockIdx.x * 8 + threadIdx.x / 32, nb = blockIdx.y;
  if (kb >= K / 32) return;
  const int lane = threadIdx.x % 32, r = lane / 2, h = lane % 2;
  const uint8_t* block = w + (static_cast<int64_t>(kb) * (N / 16) + nb) * 256;
  const int first = 32 * (r % 8) + 2 * (r / 8) + 4 * h;
  uint4 v;
  v.x = nibbles_times16(*reinterpret_cast<const uint16_t*>(block + first));
  v.y = nibbles_times16(*reinterpret_cast<const uint16_t*>(block + first + 8));
  v.z = nibbles_times16(*reinterpret_cast<const uint16_t*>(block + first + 16));
  v.w = nibbles_times16(*reinterpret_cast<const uint16_t*>(block + first + 24));
  *reinterpret_cast<uint4*>(out + static_cast<int64_t>(16 * nb + r) * K + 32 * kb + 16 * h) = v;
#endif
}

}  // namespace

cudaError_t w4a8_sm90_widen_weights(const uint8_t* w, int8_t* out, int N, int K, cudaStream_t stream) {
  if (N <= 0 || K <= 0 || N % 16 != 0 || K % 32 != 0 || N / 16 > 65535) return cudaErrorInvalidValue;
  const dim3 grid((K / 32 + 7) / 8, N / 16);
  widen_kernel<<<grid, 256, 0, stream>>>(w, out, N, K);
  return cudaGetLastError();
}

}  // namespace qengine::w4a8::sm90
