// Per-token dynamic activation quantization: see qengine/quantize_act.h for the contract.
//
// Speed comes from three things (notes/kernels.md has the measurements):
//  1. every 16-byte load of a row is issued before any of them is used, and a row is spread over
//     enough threads (a whole block for K > 512) that many rows are in flight per SM;
//  2. the division by the row scale costs 3 full-rate FP32 instructions instead of ~10 plus a
//     quarter-rate MUFU.RCP (ExactDiv in row_quant.cuh: Markstein's correction step, exact);
//  3. INT8 rounding is one FADD (the 1.5 * 2^23 trick) instead of a quarter-rate F2I, and the
//     clamps the spec asks for are provably inactive on that path (see quantize_vec).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <climits>
#include <type_traits>
#include <cstdint>

#include "qengine/quantize_act.h"
#include "row_quant.cuh"
#include "torch_gelu.cuh"

namespace qengine {
namespace {

using namespace rowq;

// Which row the row kernel quantizes (quantize_act.h): kActNone x; kActGeluCat [x | gelu_tanh(gelu_x)]
// (the gelu part starts at vector nvec_plain: a 16-byte vector never straddles the two);
// kActGeglu h * gelu_erf(gate), h and gate the two halves of a gelu_x row (the gate starts at
// vector nvec, the row's width in vectors).
constexpr int kActNone = 0, kActGeluCat = 1, kActGeglu = 2;

template <typename T>
struct RowSource {
  const T* gelu_x;
  int64_t ld_gelu;
  int nvec_plain;
};

// h <- h * gelu_erf(gate), with torch's two roundings: the GELU to T, then the product to T.
template <typename T>
__device__ __forceinline__ void geglu_in_place(Vec<T>& h, const Vec<T>& gate) {
#pragma unroll
  for (int j = 0; j < Vec<T>::kN; ++j) {
    const float g = to_float(from_float<T>(gelu_erf(to_float(gate.v[j]))));
    h.v[j] = from_float<T>(__fmul_rn(to_float(h.v[j]), g));
  }
}

template <typename T, int kAct>
__device__ __forceinline__ Vec<T> load_vec(const Vec<T>* xr, const Vec<T>* gr, const RowSource<T>& src, int nvec,
                                           int vi) {
  if constexpr (kAct == kActGeluCat) {
    if (vi >= src.nvec_plain) {
      Vec<T> g = gr[vi - src.nvec_plain];
      gelu_in_place(g);
      return g;
    }
  } else if constexpr (kAct == kActGeglu) {
    Vec<T> h = gr[vi];
    geglu_in_place(h, gr[vi + nvec]);
    return h;
  }
  return xr[vi];
}

// Hides a vector's value from the optimizer, so the second pass re-converts the packed 16-bit
// values instead of keeping all converted floats alive across the row reduction.
template <typename V>
__device__ __forceinline__ void launder(V& v) {
  uint32_t* w = reinterpret_cast<uint32_t*>(&v);
#pragma unroll
  for (int i = 0; i < static_cast<int>(sizeof(V) / 4); ++i) asm volatile("" : "+r"(w[i]));
}

// ---------------------------------------------------------------- low-rank cat columns
// Cat mode (quantize_act.h): max |v| (v = lowrank * inv_c) joins the row's absmax, and the row gets
// [hi | lo | hi (| lo) | 0] after its K bytes (cat width bytes in all, cat terms products).
constexpr int kLowRankCatMaxRank = 256;

// e4m3 of a (RNE, saturating) and back to fp32 (exact).
__device__ __forceinline__ float e4m3_round_trip(float a, __nv_fp8_storage_t& byte) {
  byte = __nv_cvt_float_to_fp8(a, __NV_SATFINITE, __NV_E4M3);
  return __half2float(__half(__nv_cvt_fp8_to_halfraw(byte, __NV_E4M3)));
}

// The cat columns of one row: 4 values v[j0 .. j0 + 3] -> hi, lo bytes at K + j0, K + rank + j0,
// K + 2 rank + j0 (and lo at K + 3 rank + j0 with 4 terms). The quotient is the one quantize_vec
// computes (exact division; copysign keeps -0), so hi is e4m3_rne(clamp(v / scale));
// lo = e4m3_rne(clamp(a - hi)), where a - hi is exact.
__device__ __forceinline__ void emit_cat_word(uint8_t* __restrict__ qrow, int64_t K, int rank, int terms, int j0,
                                              const float* v, float scale) {
  const bool fast = ExactDiv::exact_for(scale);
  const ExactDiv div{scale, __frcp_rn(scale)};
  uint32_t hi = 0, lo = 0;
#pragma unroll
  for (int e = 0; e < 4; ++e) {
    const float a = fast ? copysignf(div(v[e]), v[e]) : fminf(fmaxf(__fdiv_rn(v[e], scale), -448.f), 448.f);
    __nv_fp8_storage_t hb, lb;
    const float hf = e4m3_round_trip(a, hb);
    e4m3_round_trip(a - hf, lb);
    hi |= static_cast<uint32_t>(hb) << (8 * e);
    lo |= static_cast<uint32_t>(lb) << (8 * e);
  }
  *reinterpret_cast<uint32_t*>(qrow + K + j0) = hi;
  *reinterpret_cast<uint32_t*>(qrow + K + rank + j0) = lo;
  *reinterpret_cast<uint32_t*>(qrow + K + 2 * rank + j0) = hi;
  if (terms == 4) *reinterpret_cast<uint32_t*>(qrow + K + 3 * rank + j0) = lo;
}

// The cat columns of the row kernel (lowrank given): the product, its inverse column scales, the layout.
struct CatArgs {
  const float* lowrank;  // [M, rank] fp32
  const float* inv_c;    // [rank]
  int rank, width, terms;
};

// Grid-stride over rows. kWarpRows: a warp per row, blockDim.x / 32 rows per block (short rows);
// else a block per row (blockDim.x threads, a multiple of 32). Thread t of a row owns vectors
// t, t + G, ..., t + (kVecs - 1) G in registers; rows longer than kVecs * G vectors re-read the
// rest from L2 in the second pass.
template <typename T, typename S, QuantType Q, int kVecs, bool kWarpRows, bool kCat, int kAct>
__global__ void __launch_bounds__(1024)
quantize_rows_kernel(const T* __restrict__ x, int64_t ldx, const S* __restrict__ smooth, uint8_t* __restrict__ q,
                     float* __restrict__ scale_out, int64_t M, int64_t K, CatArgs cat, RowSource<T> src) {
  static_assert(!kCat || Q == QuantType::kFP8E4M3, "cat mode is FP8-only");
  static_assert(!(kCat && kAct != kActNone), "gelu-cat and GEGLU input have no low-rank branch");
  const int64_t ldq = kCat ? K + cat.width : K;
  using V = Vec<T>;
  constexpr int kN = V::kN;
  using OB = typename OutBytes<kN>::type;
  constexpr bool kSmooth = !std::is_void_v<S>;
  using AM = AbsMax<T>;
  const int G = kWarpRows ? 32 : blockDim.x;
  const int t = kWarpRows ? threadIdx.x % 32 : threadIdx.x;
  const int rows_per_block = kWarpRows ? blockDim.x / 32 : 1;
  const int nvec = static_cast<int>(K / kN);
  __shared__ float warp_max[32];

  for (int64_t row = static_cast<int64_t>(blockIdx.x) * rows_per_block + (kWarpRows ? threadIdx.x / 32 : 0); row < M;
       row += static_cast<int64_t>(gridDim.x) * rows_per_block) {
    const V* xr = reinterpret_cast<const V*>(x + row * ldx);
    const V* gr = kAct != kActNone ? reinterpret_cast<const V*>(src.gelu_x + row * src.ld_gelu) : nullptr;
    const auto load = [&](int vi) { return load_vec<T, kAct>(xr, gr, src, nvec, vi); };
    // All loads first: kVecs independent 16-byte requests per thread in flight at once (the GELU
    // after all of them are issued).
    V regs[kVecs];
    V gates[kAct == kActGeglu ? kVecs : 1];
#pragma unroll
    for (int i = 0; i < kVecs; ++i) {
      const int vi = t + i * G;
      if constexpr (kAct == kActGeluCat) {
        if (vi < nvec) regs[i] = vi < src.nvec_plain ? xr[vi] : gr[vi - src.nvec_plain];
      } else if constexpr (kAct == kActGeglu) {
        if (vi < nvec) {
          regs[i] = gr[vi];
          gates[i] = gr[vi + nvec];
        }
      } else {
        if (vi < nvec) regs[i] = xr[vi];
      }
    }
    if constexpr (kAct == kActGeluCat) {
#pragma unroll
      for (int i = 0; i < kVecs; ++i) {
        const int vi = t + i * G;
        if (vi < nvec && vi >= src.nvec_plain) gelu_in_place(regs[i]);
      }
    } else if constexpr (kAct == kActGeglu) {
#pragma unroll
      for (int i = 0; i < kVecs; ++i)
        if (t + i * G < nvec) geglu_in_place(regs[i], gates[i]);
    }
    float amax;
    if constexpr (kSmooth) {
      amax = 0.f;
#pragma unroll
      for (int i = 0; i < kVecs; ++i) {
        const int vi = t + i * G;
        if (vi < nvec) {
#pragma unroll
          for (int j = 0; j < kN; ++j) amax = fmaxf(amax, fabsf(smoothed<T, S>(regs[i].v[j], smooth, int64_t(vi) * kN + j)));
        }
      }
      for (int vi = t + kVecs * G; vi < nvec; vi += G) {
        const V r = load(vi);
#pragma unroll
        for (int j = 0; j < kN; ++j) amax = fmaxf(amax, fabsf(smoothed<T, S>(r.v[j], smooth, int64_t(vi) * kN + j)));
      }
    } else {
      typename AM::Acc acc = AM::zero();
#pragma unroll
      for (int i = 0; i < kVecs; ++i)
        if (t + i * G < nvec) acc = AM::add(acc, regs[i]);
      for (int vi = t + kVecs * G; vi < nvec; vi += G) acc = AM::add(acc, load(vi));
      amax = AM::finish(acc);
    }
    if constexpr (kCat) {  // the branch's values join the absmax: the scale makes room for them
      const float* lr = cat.lowrank + row * cat.rank;
      for (int j = t; j < cat.rank; j += G) amax = fmaxf(amax, fabsf(lr[j] * cat.inv_c[j]));
    }
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, off));
    if (!kWarpRows && G > 32) {
      __syncthreads();  // a previous row's readers are done with warp_max
      if (t % 32 == 0) warp_max[t / 32] = amax;
      __syncthreads();
      for (int w = 0; w < G / 32; ++w) amax = fmaxf(amax, warp_max[w]);
    }

#pragma unroll
    for (int i = 0; i < kVecs; ++i) launder(regs[i]);
    const float scale = amax > 0.f ? __fdiv_rn(amax, Q == QuantType::kInt8 ? 127.f : 448.f) : 1.f;
    if (t == 0) scale_out[row] = scale;
    const ExactDiv div{scale, __frcp_rn(scale)};

    OB* qr = reinterpret_cast<OB*>(q + row * ldq);
    auto emit_row = [&](auto fast) {
#pragma unroll
      for (int i = 0; i < kVecs; ++i) {
        const int vi = t + i * G;
        if (vi < nvec) qr[vi] = quantize_vec<decltype(fast)::value, Q>(regs[i], smooth, int64_t(vi) * kN, div);
      }
      for (int vi = t + kVecs * G; vi < nvec; vi += G)
        qr[vi] = quantize_vec<decltype(fast)::value, Q>(load(vi), smooth, int64_t(vi) * kN, div);
    };
    // Uniform per row; false only for rows of absmax < ~2^-57 or > ~2^71 (and inf/NaN).
    if (ExactDiv::exact_for(scale)) {
      emit_row(std::true_type{});
    } else {
      emit_row(std::false_type{});
    }
    if constexpr (kCat) {
      const float* lr = cat.lowrank + row * cat.rank;
      uint8_t* qrow = q + row * ldq;
      for (int i = t; i < cat.rank / 4; i += G) {
        float v[4];
#pragma unroll
        for (int e = 0; e < 4; ++e) v[e] = lr[4 * i + e] * cat.inv_c[4 * i + e];
        emit_cat_word(qrow, K, cat.rank, cat.terms, 4 * i, v, scale);
      }
      const int pad = (cat.width - cat.terms * cat.rank) / 16;
      for (int i = t; i < pad; i += G)
        reinterpret_cast<uint4*>(qrow + K + cat.terms * cat.rank)[i] = make_uint4(0, 0, 0, 0);
    }
  }
}

// Launch shape: kVecs vectors per thread, `threads` threads per row (a multiple of 32; 32 with
// warp_rows, which packs 4 rows per block).
struct Config {
  int vecs;
  int threads;
  bool warp_rows;
};

template <typename T, typename S, QuantType Q, int kVecs, bool kWarpRows, bool kCat, int kAct>
cudaError_t launch(const QuantizeActParams& p, int threads, cudaStream_t stream) {
  const int block = kWarpRows ? 128 : threads;
  const int64_t rows_per_block = kWarpRows ? 4 : 1;
  const int64_t needed = (p.M + rows_per_block - 1) / rows_per_block;
  // One row (group) per block: blocks are short, so a non-persistent grid balances the tail;
  // the grid-stride loop in the kernel only matters beyond 2^31 - 1 blocks.
  const unsigned blocks = static_cast<unsigned>(needed < INT_MAX ? needed : INT_MAX);
  const CatArgs cat{p.lowrank_in, p.lowrank_inv_c, p.rank, kCat ? lowrank_cat_width(p.rank) : 0,
                    kCat ? lowrank_cat_terms(p.rank) : 0};
  const RowSource<T> src{static_cast<const T*>(p.gelu_x), p.ld_gelu, static_cast<int>((p.K - p.K_gelu) / Vec<T>::kN)};
  quantize_rows_kernel<T, S, Q, kVecs, kWarpRows, kCat, kAct><<<blocks, block, 0, stream>>>(
      static_cast<const T*>(p.x), p.ldx, static_cast<const S*>(p.smooth), static_cast<uint8_t*>(p.q), p.scale, p.M, p.K,
      cat, src);
  return cudaGetLastError();
}

template <typename T, typename S, QuantType Q, bool kCat = false, int kAct = kActNone>
cudaError_t launch_config(const QuantizeActParams& p, Config c, cudaStream_t stream) {
  if (c.warp_rows) return launch<T, S, Q, 2, true, kCat, kAct>(p, 32, stream);
  switch (c.vecs) {
    case 1: return launch<T, S, Q, 1, false, kCat, kAct>(p, c.threads, stream);
    case 2: return launch<T, S, Q, 2, false, kCat, kAct>(p, c.threads, stream);
    case 4: return launch<T, S, Q, 4, false, kCat, kAct>(p, c.threads, stream);
    case 8: return launch<T, S, Q, 8, false, kCat, kAct>(p, c.threads, stream);
  }
  return cudaErrorInvalidValue;
}

int round_up32(int64_t n) { return static_cast<int>((n + 31) / 32 * 32); }

// Launch shape, from a sweep of every shape on an H200 (benchmarks/quantize_act_micro.cu,
// notes/kernels.md): rows of <= 64 vectors (K <= 512 for 16-bit input) get a warp each. Longer
// rows get a block. Problems of at least two GPU-fulls of resident threads (M * nvec >= 2 * 2048
// * SMs vectors) take 8 vectors per thread: the most bytes in flight per thread and the fewest
// threads per row (blocks of <= 256 threads for K <= 16384); 4 per thread lost up to 16% there
// (K = 15360), blocks of 384+ threads lost more. Smaller problems are latency-bound: the fewest
// vectors per thread that keep the block at <= 128 threads.
Config choose_config(int64_t M, int64_t nvec, int sm_count) {
  if (nvec <= 64) return {2, 32, true};
  const int64_t slots = static_cast<int64_t>(sm_count > 0 ? sm_count : 132) * 2048;  // resident threads
  int vecs = 8;
  if (M * nvec < 2 * slots)
    for (vecs = 1; vecs < 8 && nvec > static_cast<int64_t>(vecs) * 128; vecs *= 2) {
    }
  const int64_t per_thread = (nvec + vecs - 1) / vecs;
  return {vecs, round_up32(per_thread < 1024 ? per_thread : 1024), false};
}


// ---------------------------------------------------------------- low-rank (lora_down) path
//
// lowrank = xs @ lora_down^T is a [M,K]x[K,r] product: on CUDA cores it would cost more issue
// slots than the quantization itself (r FMAs + r weight loads per element), so it runs on tensor
// cores (mma.sync m16n8k16 bf16 -> fp32), which needs tiles of 16 rows. A block owns 16 rows;
// warp w of kW owns the 32-column slots s = w, w + kW, ... In a slot, lane
// (g = lane / 4, t = lane % 4) loads the 8 consecutive columns 32 s + 8 t .. + 7 of rows g and
// g + 8: one 16-byte vector per row (16-bit input). Read as mma operands, these registers are the
// A fragments of two m16n8k16 MMAs whose k index is a fixed permutation of the slot's 32 columns
// (logical k 2t+e <-> column 8t+e, 2t+8+e <-> 8t+2+e for the first MMA, +4 for the second); the
// 16-byte vector of lora_down row j at the same columns is, under the same permutation, the
// B fragment of both. A dot product does not care about the order of k, so the operands come
// straight from the quantizer's own loads: no shared memory, no shuffles. Partial products of
// the warps meet in shared memory once per rank chunk.
// Pass 2 re-reads the block's rows (16 x K: 96 KB at K = 3072, mostly L2 hits) and quantizes
// them with the same quantize_vec as the row kernel, so q and scale stay bit-exact.
// Launch shape, from call 1 (notes/kernels.md): with 8 warps per block (<= 2 blocks per SM) the
// 288 row tiles of M = 4608 needed 1.09 waves and each SM held only ~2 tiles, so the kernel ran
// near the latency of one tile's two passes (2.3x the row kernel). 4 warps per block and
// <= 128 registers let all tiles of the FLUX shapes be resident at once (4 blocks per SM), and
// pass 2 (loads only) keeps 4 slots of loads in flight instead of 2. Fewer tiles than that
// (launch_lowrank) get 8 warps per block.
constexpr int kLowRankUnroll = 2;   // slots of loads in flight per warp in pass 1 (x + lora_down)
constexpr int kLowRankUnroll2 = 4;  // the same in pass 2 (x only)

__device__ __forceinline__ void mma_bf16_m16n8k16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}

// The 8 columns c .. c + 7 of one row (zeros for rows past M).
template <typename T>
struct Cols8 {
  static constexpr int kVecs = 8 / Vec<T>::kN;
  Vec<T> v[kVecs];
  __device__ __forceinline__ T at(int e) const { return v[e / Vec<T>::kN].v[e % Vec<T>::kN]; }
  // From the row that starts at xrow (columns c .. c + 7; zeros unless ok).
  __device__ __forceinline__ void load(const T* __restrict__ xrow, bool ok, int64_t c) {
    const Vec<T>* p = reinterpret_cast<const Vec<T>*>(xrow + c);
#pragma unroll
    for (int j = 0; j < kVecs; ++j) {
      if (ok) {
        v[j] = p[j];
      } else {
#pragma unroll
        for (int e = 0; e < Vec<T>::kN; ++e) v[j].v[e] = T(0.f);
      }
    }
  }
};

// A fragments of the slot's two MMAs from the smoothed values of rows g (f0) and g + 8 (f1).
__device__ __forceinline__ void a_fragments(const float (&f0)[8], const float (&f1)[8], uint32_t (&a)[2][4]) {
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    a[h][0] = pack_bf16x2(f0[4 * h], f0[4 * h + 1]);
    a[h][1] = pack_bf16x2(f1[4 * h], f1[4 * h + 1]);
    a[h][2] = pack_bf16x2(f0[4 * h + 2], f0[4 * h + 3]);
    a[h][3] = pack_bf16x2(f1[4 * h + 2], f1[4 * h + 3]);
  }
}

// f - bf16(f): the part of f the bf16 hi fragment missed (a second MMA adds it; hi + lo carries
// 16 significant bits, exact for fp16 input).
__device__ __forceinline__ void remainder_bf16(float (&f)[8]) {
#pragma unroll
  for (int e = 0; e < 8; ++e) f[e] -= __bfloat162float(__float2bfloat16_rn(f[e]));
}

// One row of the quantized input: x's, or for a two-part row past x's `plain` columns those of the
// second part (src.gelu_x; a lane's 8 columns never straddle the two: both widths are multiples of
// 16). One-part rows have plain = K. Each part's row start is computed once; a load selects between
// them (run-time, not a template parameter: half the instantiations). With the select inside the
// address arithmetic (row * ld per load) or a branch, the kernel ran 10% and 2x slower
// (notes/h100_2026-11-24d, calls 2 and 3).
template <typename T>
struct RowParts {
  const T* first;   // x + row * ldx
  const T* second;  // src.gelu_x + row * ld - plain (indexed by the row's column), or first
  int64_t plain;
  __device__ __forceinline__ RowParts(const T* x, int64_t ldx, const RowSource<T>& src, int64_t plain_cols, int64_t row)
      : first(x + row * ldx), second(src.gelu_x != nullptr ? src.gelu_x + row * src.ld_gelu - plain_cols : first),
        plain(plain_cols) {}
  __device__ __forceinline__ void load(Cols8<T>& v, bool ok, int64_t c) const { v.load(c >= plain ? second : first, ok, c); }
};

// One lowrank value in the dtype the caller asked for (rounded once, to nearest even, as torch's
// .to() would round the fp32 value).
__device__ __forceinline__ void store_lowrank(void* __restrict__ lowrank, FloatType t, int64_t i, float v) {
  if (t == FloatType::kBF16) {
    static_cast<__nv_bfloat16*>(lowrank)[i] = __float2bfloat16_rn(v);
  } else if (t == FloatType::kFP16) {
    static_cast<__half*>(lowrank)[i] = __float2half_rn(v);
  } else {
    static_cast<float*>(lowrank)[i] = v;
  }
}

// kNT: n8 tiles per rank chunk (4: chunks of 32, 2: chunks of 16 for ranks that are odd multiples of 16).
// kW: warps per block, sharing the 32-column slots of the block's 16 rows (launch_lowrank: more for
// fewer row tiles, whose blocks would otherwise run long serial chains on few SMs).
// src: the second part of a two-part row [x | src.gelu_x] (quantize_act.h; src.nvec_plain = K / kN
// for a one-part row).
// kGiven: the rows' absmax comes in amax_in (quantize_act.h), so the scale is known before the
// first load and pass 1 quantizes what it loads for the product: one pass over X, no pass 2.
template <typename T, typename S, QuantType Q, int kNT, bool kCat, int kW, bool kGiven = false>
__global__ void __launch_bounds__(kW * 32, 16 / kW)
quantize_lowrank_kernel(const T* __restrict__ x, int64_t ldx, const S* __restrict__ smooth,
                        const __nv_bfloat16* __restrict__ down, uint8_t* __restrict__ q, float* __restrict__ scale_out,
                        void* __restrict__ lowrank, FloatType lowrank_type, const float* __restrict__ inv_c, int64_t M,
                        int64_t K, int rank, int cat_width, int cat_terms, RowSource<T> src,
                        const float* __restrict__ amax_in) {
  static_assert(!kCat || Q == QuantType::kFP8E4M3, "cat mode is FP8-only");
  static_assert(!(kCat && kGiven), "cat mode's scale depends on the product: no given absmax");
  static_assert(kW == 4 || kW == 8, "4 or 8 warps (launch_lowrank)");
  constexpr int kU = kLowRankUnroll;
  constexpr int kCols = kNT * 8;
  // bf16 input without smoothing is exact in one bf16 fragment; anything else gets a lo part.
  constexpr bool kSplit = !(std::is_same_v<T, __nv_bfloat16> && std::is_void_v<S>);
  using C8 = Cols8<T>;
  using OB = typename OutBytes<Vec<T>::kN>::type;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * 16 + g, row1 = row0 + 8;
  const bool ok0 = row0 < M, ok1 = row1 < M;
  const int64_t nslots = (K + 31) / 32;
  const int64_t ldq = kCat ? K + cat_width : K;
  const int64_t plain = static_cast<int64_t>(src.nvec_plain) * Vec<T>::kN;  // x's columns
  const RowParts<T> r0(x, ldx, src, plain, row0), r1(x, ldx, src, plain, row1);
  __shared__ float red_lr[kW][16][kCols + 1];
  __shared__ float red_max[kW][16];
  // Cat mode only (1-element stand-ins otherwise); +1 column: the row-max reads hit distinct banks.
  __shared__ float cat_v[kCat ? 16 : 1][kCat ? kLowRankCatMaxRank + 1 : 1];
  __shared__ float cat_max[kCat ? 16 : 1];
  __shared__ float cat_scale[kCat ? 16 : 1];

  constexpr float kQMax = Q == QuantType::kInt8 ? 127.f : 448.f;
  auto scale_of = [](float amax) { return amax > 0.f ? __fdiv_rn(amax, kQMax) : 1.f; };
  // The quantized bytes of one 8-column piece of a row (the same quantize_vec as the row kernel:
  // bit-exact).
  auto emit = [&](const C8& v, int64_t row, int64_t c, bool fast, ExactDiv div) {
    OB* out = reinterpret_cast<OB*>(q + row * ldq + c);
#pragma unroll
    for (int j = 0; j < C8::kVecs; ++j)
      out[j] = fast ? quantize_vec<true, Q>(v.v[j], smooth, c + j * Vec<T>::kN, div)
                    : quantize_vec<false, Q>(v.v[j], smooth, c + j * Vec<T>::kN, div);
  };
  float sc0 = 1.f, sc1 = 1.f;
  if constexpr (kGiven) {
    sc0 = ok0 ? scale_of(amax_in[row0]) : 1.f;
    sc1 = ok1 ? scale_of(amax_in[row1]) : 1.f;
    if (warp == 0 && t == 0) {
      if (ok0) scale_out[row0] = sc0;
      if (ok1) scale_out[row1] = sc1;
    }
  }
  // (Given absmax: the real divisors; otherwise placeholders until pass 2 recomputes them.)
  ExactDiv div0{sc0, __frcp_rn(sc0)}, div1{sc1, __frcp_rn(sc1)};
  bool fast0 = ExactDiv::exact_for(sc0), fast1 = ExactDiv::exact_for(sc1);

  float amax0 = 0.f, amax1 = 0.f;
  for (int chunk = 0; chunk < rank; chunk += kCols) {
    float acc[kNT][4];
#pragma unroll
    for (int j = 0; j < kNT; ++j) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.f;
    for (int64_t s0 = warp; s0 < nslots; s0 += kW * kU) {
      C8 xv[kU][2];
      uint4 dv[kU][kNT];
#pragma unroll
      for (int u = 0; u < kU; ++u) {
        const int64_t c = (s0 + u * kW) * 32 + 8 * t;
        const bool in = c < K;
        r0.load(xv[u][0], ok0 && in, c);
        r1.load(xv[u][1], ok1 && in, c);
#pragma unroll
        for (int j = 0; j < kNT; ++j)
          dv[u][j] = in ? *reinterpret_cast<const uint4*>(down + (chunk + j * 8 + g) * K + c) : make_uint4(0, 0, 0, 0);
      }
#pragma unroll
      for (int u = 0; u < kU; ++u) {
        const int64_t c = (s0 + u * kW) * 32 + 8 * t;
        const bool in = c < K;
        if constexpr (kGiven) {
          if (chunk == 0 && in) {
            if (ok0) emit(xv[u][0], row0, c, fast0, div0);
            if (ok1) emit(xv[u][1], row1, c, fast1, div1);
          }
        }
        float f0[8], f1[8];
#pragma unroll
        for (int e = 0; e < 8; ++e) {
          f0[e] = in ? smoothed<T, S>(xv[u][0].at(e), smooth, c + e) : 0.f;
          f1[e] = in ? smoothed<T, S>(xv[u][1].at(e), smooth, c + e) : 0.f;
        }
        if (!kGiven && chunk == 0) {
#pragma unroll
          for (int e = 0; e < 8; ++e) {
            amax0 = fmaxf(amax0, fabsf(f0[e]));
            amax1 = fmaxf(amax1, fabsf(f1[e]));
          }
        }
        uint32_t a[2][4];
        a_fragments(f0, f1, a);
#pragma unroll
        for (int j = 0; j < kNT; ++j) {
          mma_bf16_m16n8k16(acc[j], a[0], dv[u][j].x, dv[u][j].y);
          mma_bf16_m16n8k16(acc[j], a[1], dv[u][j].z, dv[u][j].w);
        }
        if constexpr (kSplit) {
          remainder_bf16(f0);
          remainder_bf16(f1);
          a_fragments(f0, f1, a);
#pragma unroll
          for (int j = 0; j < kNT; ++j) {
            mma_bf16_m16n8k16(acc[j], a[0], dv[u][j].x, dv[u][j].y);
            mma_bf16_m16n8k16(acc[j], a[1], dv[u][j].z, dv[u][j].w);
          }
        }
      }
    }
    // Sum the warps' partial products in a fixed order (deterministic), write the chunk.
#pragma unroll
    for (int j = 0; j < kNT; ++j) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        red_lr[warp][g][j * 8 + 2 * t + e] = acc[j][e];
        red_lr[warp][g + 8][j * 8 + 2 * t + e] = acc[j][2 + e];
      }
    }
    __syncthreads();
    for (int i = threadIdx.x; i < 16 * kCols; i += kW * 32) {
      const int r = i / kCols, col = i % kCols;
      float sum = 0.f;
#pragma unroll
      for (int w = 0; w < kW; ++w) sum += red_lr[w][r][col];
      const int64_t row = static_cast<int64_t>(blockIdx.x) * 16 + r;
      if constexpr (kCat) {
        cat_v[r][chunk + col] = sum * inv_c[chunk + col];
      } else {
        if (row < M) store_lowrank(lowrank, lowrank_type, row * rank + chunk + col, sum);
      }
    }
    __syncthreads();  // red_lr is reused by the next chunk
  }

  if constexpr (!kGiven) {  // (given absmax: q, scale and lowrank are written by now)
    // Row absmax: the quad (same rows) by shuffles, then the warps through shared memory.
#pragma unroll
    for (int off = 1; off <= 2; off <<= 1) {
      amax0 = fmaxf(amax0, __shfl_xor_sync(0xffffffffu, amax0, off));
      amax1 = fmaxf(amax1, __shfl_xor_sync(0xffffffffu, amax1, off));
    }
    if (t == 0) {
      red_max[warp][g] = amax0;
      red_max[warp][g + 8] = amax1;
    }
    if constexpr (kCat) {
      // max_j |v[row, j]|: 8 consecutive lanes per row, the first 4 warps (the chunk loop's last
      // barrier made cat_v whole).
      if (threadIdx.x < 16 * 8) {
        const int r = threadIdx.x / 8, l = threadIdx.x % 8;
        float m = 0.f;
        for (int j = l; j < rank; j += 8) m = fmaxf(m, fabsf(cat_v[r][j]));
#pragma unroll
        for (int off = 1; off < 8; off <<= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, off));
        if (l == 0) cat_max[r] = m;
      }
    }
    __syncthreads();
#pragma unroll
    for (int w = 0; w < kW; ++w) {
      amax0 = fmaxf(amax0, red_max[w][g]);
      amax1 = fmaxf(amax1, red_max[w][g + 8]);
    }
    if constexpr (kCat) {
      amax0 = fmaxf(amax0, cat_max[g]);
      amax1 = fmaxf(amax1, cat_max[g + 8]);
    }
    sc0 = scale_of(amax0);
    sc1 = scale_of(amax1);
    if (warp == 0 && t == 0) {
      if (ok0) scale_out[row0] = sc0;
      if (ok1) scale_out[row1] = sc1;
      if constexpr (kCat) {
        cat_scale[g] = sc0;
        cat_scale[g + 8] = sc1;
      }
    }
    if constexpr (kCat) {
      __syncthreads();
      const int words = rank / 4;
      for (int i = threadIdx.x; i < 16 * words; i += kW * 32) {
        const int r = i / words, j0 = (i % words) * 4;
        const int64_t row = static_cast<int64_t>(blockIdx.x) * 16 + r;
        if (row < M) emit_cat_word(q + row * ldq, K, rank, cat_terms, j0, &cat_v[r][j0], cat_scale[r]);
      }
      // Zeros after the terms, up to the 128-aligned width (16-byte stores: widths are multiples of 16).
      const int pad = (cat_width - cat_terms * rank) / 16;
      for (int i = threadIdx.x; i < 16 * pad; i += kW * 32) {
        const int64_t row = static_cast<int64_t>(blockIdx.x) * 16 + i / pad;
        if (row < M)
          reinterpret_cast<uint4*>(q + row * ldq + K + cat_terms * rank)[i % pad] = make_uint4(0, 0, 0, 0);
      }
    }
    div0 = ExactDiv{sc0, __frcp_rn(sc0)};
    div1 = ExactDiv{sc1, __frcp_rn(sc1)};
    fast0 = ExactDiv::exact_for(sc0);
    fast1 = ExactDiv::exact_for(sc1);

    // Pass 2: quantize, walking the slots last to first: those pass 1 read last are the likeliest
    // L2 hits where the rows do not all fit (1-3% at 4608 x 3072 and 4608 x 15360 on an H100,
    // notes/h100_2026-11-25b).
    constexpr int kU2 = kLowRankUnroll2;
    const int64_t iters2 = (nslots + kW * kU2 - 1) / (kW * kU2);
    for (int64_t it = iters2 - 1; it >= 0; --it) {
      const int64_t s0 = it * (kW * kU2) + warp;
      C8 xv[kU2][2];
#pragma unroll
      for (int u = 0; u < kU2; ++u) {
        const int64_t c = (s0 + u * kW) * 32 + 8 * t;
        r0.load(xv[u][0], ok0 && c < K, c);
        r1.load(xv[u][1], ok1 && c < K, c);
      }
#pragma unroll
      for (int u = 0; u < kU2; ++u) {
        const int64_t c = (s0 + u * kW) * 32 + 8 * t;
        if (c >= K) continue;
        if (ok0) emit(xv[u][0], row0, c, fast0, div0);
        if (ok1) emit(xv[u][1], row1, c, fast1, div1);
      }
    }
  }
}

// Warps per block: 4 where the row tiles fill the GPU (<= 4 blocks per SM, all resident at FLUX's
// 4608 tokens: notes/kernels.md); with at most two tiles per SM, 8, so the few blocks split K over
// more warps instead of each running K / 128 columns per warp in a serial chain (512 tokens: 32
// tiles on 132 SMs). Not 16: the cat buffers leave no static shared memory for it, and the plain
// and cat kernels must pick the same warps to sum the product in the same order (the cat tests
// compare against the plain kernel's product).
template <typename T, typename S, QuantType Q>
cudaError_t launch_lowrank(const QuantizeActParams& p, cudaStream_t stream) {
  const int64_t blocks = (p.M + 15) / 16;
  if (blocks > INT_MAX) return cudaErrorInvalidValue;
  const RowSource<T> src{static_cast<const T*>(p.x2), p.ld_x2, static_cast<int>((p.K - p.K_x2) / Vec<T>::kN)};
  const int64_t sms = p.sm_count > 0 ? p.sm_count : 132;
  const int warps = blocks <= 2 * sms ? 8 : 4;
  auto run = [&](auto kernel, int w) {
    kernel<<<static_cast<unsigned>(blocks), w * 32, 0, stream>>>(
        static_cast<const T*>(p.x), p.ldx, static_cast<const S*>(p.smooth),
        static_cast<const __nv_bfloat16*>(p.lora_down), static_cast<uint8_t*>(p.q), p.scale, p.lowrank,
        p.lowrank_type, p.lowrank_inv_c, p.M, p.K, p.rank, lowrank_cat_width(p.rank), lowrank_cat_terms(p.rank), src,
        p.amax_in);
    return cudaGetLastError();
  };
  // kNT 4 for ranks that are multiples of 32, else 2; fp32 input (rare: diffusers runs 16-bit) keeps
  // 4 warps, which saves instantiations.
  auto by_rank = [&](auto kernel32, auto kernel16, int w) { return p.rank % 32 == 0 ? run(kernel32, w) : run(kernel16, w); };
  constexpr bool kWide = !std::is_same_v<T, float>;
  if constexpr (Q == QuantType::kFP8E4M3) {
    if (p.lowrank_inv_c != nullptr) {
      if constexpr (kWide) {
        if (warps >= 8)
          return by_rank(quantize_lowrank_kernel<T, S, Q, 4, true, 8>, quantize_lowrank_kernel<T, S, Q, 2, true, 8>, 8);
      }
      return by_rank(quantize_lowrank_kernel<T, S, Q, 4, true, 4>, quantize_lowrank_kernel<T, S, Q, 2, true, 4>, 4);
    }
  }
  if constexpr (kWide) {
    if (p.amax_in != nullptr) {  // two-part rows with the absmax given (16-bit only: valid())
      if (warps == 8)
        return by_rank(quantize_lowrank_kernel<T, S, Q, 4, false, 8, true>,
                       quantize_lowrank_kernel<T, S, Q, 2, false, 8, true>, 8);
      return by_rank(quantize_lowrank_kernel<T, S, Q, 4, false, 4, true>,
                     quantize_lowrank_kernel<T, S, Q, 2, false, 4, true>, 4);
    }
    if (warps == 8)
      return by_rank(quantize_lowrank_kernel<T, S, Q, 4, false, 8>, quantize_lowrank_kernel<T, S, Q, 2, false, 8>, 8);
  }
  return by_rank(quantize_lowrank_kernel<T, S, Q, 4, false, 4>, quantize_lowrank_kernel<T, S, Q, 2, false, 4>, 4);
}

template <typename T, typename S, QuantType Q>
cudaError_t dispatch_shape(const QuantizeActParams& p, cudaStream_t stream) {
  if constexpr (Q == QuantType::kFP8E4M3) {
    // Cat mode with the low-rank product given: the one-pass row kernel plus the branch's columns.
    if (p.lowrank_in != nullptr)
      return launch_config<T, S, Q, true>(p, choose_config(p.M, p.K / Vec<T>::kN, p.sm_count), stream);
  }
  if (p.K_gelu > 0) {  // [x | gelu(gelu_x)] or GEGLU (16-bit input only; valid() checked the rest)
    if constexpr (!std::is_same_v<T, float>) {
      const Config c = choose_config(p.M, p.K / Vec<T>::kN, p.sm_count);
      return p.geglu ? launch_config<T, S, Q, false, kActGeglu>(p, c, stream)
                     : launch_config<T, S, Q, false, kActGeluCat>(p, c, stream);
    }
    return cudaErrorInvalidValue;
  }
  if (p.K_x2 > 0) {  // two-part row [x | x2] with the down-projection (16-bit only; valid() checked the rest)
    if constexpr (!std::is_same_v<T, float>) return launch_lowrank<T, S, Q>(p, stream);
    return cudaErrorInvalidValue;
  }
  if (p.rank > 0) return launch_lowrank<T, S, Q>(p, stream);
  return launch_config<T, S, Q>(p, choose_config(p.M, p.K / Vec<T>::kN, p.sm_count), stream);
}

template <typename T, QuantType Q>
cudaError_t dispatch_smooth(const QuantizeActParams& p, cudaStream_t stream) {
  if (p.smooth == nullptr) return dispatch_shape<T, void, Q>(p, stream);
  if (p.smooth_type == p.x_type) return dispatch_shape<T, T, Q>(p, stream);
  if constexpr (!std::is_same_v<T, float>) {
    if (p.smooth_type == FloatType::kFP32) return dispatch_shape<T, float, Q>(p, stream);
  }
  return cudaErrorInvalidValue;
}

template <QuantType Q>
cudaError_t dispatch_input(const QuantizeActParams& p, cudaStream_t stream) {
  switch (p.x_type) {
    case FloatType::kBF16: return dispatch_smooth<__nv_bfloat16, Q>(p, stream);
    case FloatType::kFP16: return dispatch_smooth<__half, Q>(p, stream);
    case FloatType::kFP32: return dispatch_smooth<float, Q>(p, stream);
  }
  return cudaErrorInvalidValue;
}

bool valid_gelu(const QuantizeActParams& p) {
  if (p.K_gelu == 0) return p.gelu_x == nullptr && !p.geglu;
  if (p.geglu && (p.x != nullptr || p.K_gelu != p.K || p.ld_gelu < 2 * p.K)) return false;
  return p.x_type != FloatType::kFP32 && p.K_gelu > 0 && p.K_gelu <= p.K && p.K_gelu % 16 == 0 &&
         p.gelu_x != nullptr && reinterpret_cast<uintptr_t>(p.gelu_x) % 16 == 0 && p.ld_gelu >= p.K_gelu &&
         (p.ld_gelu * 2) % 16 == 0 && (p.x != nullptr || p.K_gelu == p.K) && p.rank == 0 &&
         p.lowrank_inv_c == nullptr && p.lowrank_in == nullptr && p.K_x2 == 0;
}

bool valid_x2(const QuantizeActParams& p) {
  if (p.K_x2 == 0) return p.x2 == nullptr;
  return p.x_type != FloatType::kFP32 && p.K_x2 > 0 && p.K_x2 <= p.K && p.K_x2 % 16 == 0 && p.x2 != nullptr &&
         reinterpret_cast<uintptr_t>(p.x2) % 16 == 0 && p.ld_x2 >= p.K_x2 && (p.ld_x2 * 2) % 16 == 0 &&
         (p.x != nullptr || p.K_x2 == p.K) && p.rank > 0 && p.lowrank_in == nullptr && p.K_gelu == 0;
}

bool valid(const QuantizeActParams& p) {
  const int64_t elem = p.x_type == FloatType::kFP32 ? 4 : 2;
  const int64_t plain = p.K - p.K_gelu - p.K_x2;  // the columns read from x
  return valid_gelu(p) && valid_x2(p) && p.M >= 0 && p.K > 0 && p.K % 16 == 0 && p.K / (16 / elem) <= INT_MAX && p.ldx >= plain &&
         (p.ldx * elem) % 16 == 0 &&
         reinterpret_cast<uintptr_t>(p.x) % 16 == 0 && reinterpret_cast<uintptr_t>(p.q) % 16 == 0 &&
         (p.rank == 0 || p.lowrank_in != nullptr || (p.rank > 0 && p.rank % 16 == 0 && p.lora_down != nullptr &&
                          (p.lowrank != nullptr || p.lowrank_inv_c != nullptr || p.M == 0) &&
                          reinterpret_cast<uintptr_t>(p.lora_down) % 16 == 0)) &&
         (p.lowrank_inv_c == nullptr ||
          (p.q_type == QuantType::kFP8E4M3 && p.rank > 0 && p.rank <= kLowRankCatMaxRank)) &&
         (p.lowrank_in == nullptr || (p.lowrank_inv_c != nullptr && p.rank > 0 && p.rank % 16 == 0)) &&
         (p.amax_in == nullptr || (p.rank > 0 && p.lora_down != nullptr && p.lowrank != nullptr &&
                                   p.lowrank_inv_c == nullptr && p.lowrank_in == nullptr && p.K_gelu == 0 &&
                                   p.x_type != FloatType::kFP32));
}

}  // namespace

cudaError_t quantize_act(const QuantizeActParams& p, cudaStream_t stream) {
  if (!valid(p)) return cudaErrorInvalidValue;
  if (p.M == 0) return cudaSuccess;
  return p.q_type == QuantType::kInt8 ? dispatch_input<QuantType::kInt8>(p, stream)
                                      : dispatch_input<QuantType::kFP8E4M3>(p, stream);
}

}  // namespace qengine
