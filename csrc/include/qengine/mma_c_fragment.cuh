// Where a warp's epilogue values sit relative to the C fragment of mma.sync m16n8 (used by the
// W8A8 low-rank epilogue node, csrc/w8a8_gemm/sm90/lowrank_epilogue.cuh; the W4A8 node,
// csrc/w4a8/sm90/lowrank_staged_epilogue.cuh, reads its values off a wgmma fragment instead).
//
// The wgmma accumulator fragment of a warp is, per 16x8 block, the C fragment of m16n8 (lane
// 4g + t holds rows g, g + 8 and columns 2t, 2t + 1), so a node can compute its values for a
// block with one mma.sync on the lanes that hold the block's accumulators. The nodes do not
// assume this blindly: from the coordinates the epilogue reports for a thread's values (offsets
// dm/dn from its first value, compile-time after unrolling; the first value at absolute
// base_m/base_n) they check the layout per subtile and otherwise take a layout-free path.
#pragma once

#include "cutlass/cutlass.h"

namespace qengine::sm90 {

// The (g, 2t) value of its 16x8 block: the thread computes that block ("leader").
CUTLASS_HOST_DEVICE constexpr bool mma_c_leader(int dm, int dn) { return (dm & 15) == 0 && (dn & 7) == 0; }

// Whether every value of this thread sits where the m16n8 C fragment of its lane puts it: rows
// g or g + 8, columns 2t or 2t + 1 of a 16x8 block whose origin is the same for the whole warp,
// and each block's (g, 2t) value is one of the thread's own, so that computing the leaders'
// blocks covers every value. Warp-uniform (__all_sync): every lane of the warp must call it.
template <int kE>
CUTLASS_DEVICE bool mma_c_fragment_layout(const int (&dm)[kE], const int (&dn)[kE], int base_m, int base_n) {
  const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int warp_m = base_m - g, warp_n = base_n - 2 * t;
  bool ok = (base_m & 15) == g && (base_n & 7) == 2 * t && warp_m == __shfl_sync(0xffffffffu, warp_m, 0) &&
            warp_n == __shfl_sync(0xffffffffu, warp_n, 0);
  CUTLASS_PRAGMA_UNROLL
  for (int j = 0; j < kE; ++j) {
    bool led = false;
    CUTLASS_PRAGMA_UNROLL
    for (int i = 0; i < kE; ++i) led |= mma_c_leader(dm[i], dn[i]) && dm[i] == (dm[j] & ~15) && dn[i] == (dn[j] & ~7);
    ok = ok && led && (dm[j] & 7) == 0 && (dn[j] & 7) <= 1;
  }
  return __all_sync(0xffffffffu, ok);
}

// Hands the four C values of leader i's block to the thread's values that lie in that block.
template <int kE, class Vals>
CUTLASS_DEVICE void mma_c_scatter(const int (&dm)[kE], const int (&dn)[kE], int i, const float (&c)[4], Vals& vals) {
  CUTLASS_PRAGMA_UNROLL
  for (int j = 0; j < kE; ++j)
    if ((dm[j] & ~15) == dm[i] && (dn[j] & ~7) == dn[i]) vals(j) = c[((dm[j] & 8) ? 2 : 0) + (dn[j] & 1)];
}

}  // namespace qengine::sm90
