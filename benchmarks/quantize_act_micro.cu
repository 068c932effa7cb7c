// Standalone check + timing of the activation quantize kernel (no torch): every launch shape of
// csrc/quantize/quantize_act.cu, bit for bit against a CPU reference of the spec (adversarial rows:
// exact ties, near ties, signed zeros, subnormal / huge scales), timed against a device-to-device
// copy in CUDA graphs over rotating buffers (bf16, no smoothing). Optionally also an older kernel,
// built separately with -Dquantize_act=quantize_act_v2 and linked in with -DWITH_OLD (config -2).
//   nvcc -std=c++17 -O3 -arch=sm_90a -Icsrc/include benchmarks/quantize_act_micro.cu -o /tmp/qam && /tmp/qam
// The CPU reference maps inf/NaN to int8 differently from the kernels (not part of the contract).
#include "../csrc/quantize/quantize_act.cu"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <algorithm>
#include <random>
#include <string>
#include <vector>

#define CK(x) do { cudaError_t e_ = (x); if (e_ != cudaSuccess) { printf("CUDA %s at %d\n", cudaGetErrorString(e_), __LINE__); exit(1); } } while (0)

#ifdef WITH_OLD
namespace qengine { cudaError_t quantize_act_v2(const QuantizeActParams& p, cudaStream_t stream); }
#endif

using namespace qengine;

static uint16_t f2bf(float f) { uint32_t u; memcpy(&u, &f, 4); u += 0x7fff + ((u >> 16) & 1); return u >> 16; }
static float bf2f(uint16_t h) { uint32_t u = uint32_t(h) << 16; float f; memcpy(&f, &u, 4); return f; }
static float h2f(uint16_t h) { __half x; memcpy(&x, &h, 2); return __half2float(x); }
static uint16_t f2h(float f) { __half x = __float2half_rn(f); uint16_t h; memcpy(&h, &x, 2); return h; }

struct Host { std::vector<float> x; int M, K; };  // values exactly representable in the input type

// CPU reference of the spec (IEEE fp32 division, RNE).
static void reference(const Host& h, const std::vector<float>* smooth, QuantType qt, std::vector<uint8_t>& q, std::vector<float>& sc) {
  q.assign(size_t(h.M) * h.K, 0); sc.assign(h.M, 0);
  const float qmax = qt == QuantType::kInt8 ? 127.f : 448.f;
  std::vector<float> xs(h.K);
  for (int m = 0; m < h.M; ++m) {
    float amax = 0;
    for (int k = 0; k < h.K; ++k) { xs[k] = h.x[size_t(m) * h.K + k]; if (smooth) xs[k] = xs[k] / (*smooth)[k]; amax = std::fmax(amax, std::fabs(xs[k])); }
    const float s = amax > 0 ? amax / qmax : 1.f; sc[m] = s;
    for (int k = 0; k < h.K; ++k) {
      float v = xs[k] / s;
      if (qt == QuantType::kInt8) { v = std::nearbyint(v); v = std::fmin(std::fmax(v, -127.f), 127.f); q[size_t(m) * h.K + k] = uint8_t(int8_t(v)); }
      else { v = std::fmin(std::fmax(v, -448.f), 448.f); q[size_t(m) * h.K + k] = __nv_cvt_float_to_fp8(v, __NV_SATFINITE, __NV_E4M3); }
    }
  }
}

static Host make_input(int M, int K, FloatType ft, uint64_t seed, bool adversarial) {
  Host h{std::vector<float>(size_t(M) * K), M, K};
  std::mt19937_64 g(seed); std::normal_distribution<float> n(0, 1); std::uniform_real_distribution<float> u(0, 1);
  auto rep = [&](float v) { return ft == FloatType::kBF16 ? bf2f(f2bf(v)) : ft == FloatType::kFP16 ? h2f(f2h(v)) : v; };
  for (int m = 0; m < M; ++m) {
    float* r = &h.x[size_t(m) * K];
    int kind = adversarial ? m % 8 : 7;
    float e = std::ldexp(1.f, int(g() % 20) - 10);
    for (int k = 0; k < K; ++k) {
      float v;
      switch (kind) {
        case 0: v = (float(int(g() % 254) - 127) + 0.5f) * e; break;                 // INT8 ties (|v| <= 126.5 e), scale = e exactly
        case 1: { static const float mid[] = {1.0625f, 1.1875f, 2.125f, 2.375f, 9.f, 11.f, 104.f, 120.f, 432.f, 0.0087890625f, 0.0009765625f, 0.00146484375f};
                  v = mid[g() % 12] * e * (g() & 1 ? -1 : 1); break; }            // E4M3 midpoints, scale = e
        case 2: { float s = (0.5f + u(g)) / 127.f; int nn = int(g() % 255) - 127; float t = (nn + 0.5f) * s;
                  uint32_t b; memcpy(&b, &t, 4); b += int(g() % 7) - 3; memcpy(&t, &b, 4); v = t; break; }  // near ties
        case 3: v = n(g) * 1e-37f; break;                                           // subnormal scale (slow path)
        case 4: v = (g() % 5 == 0) ? -0.f : n(g) * 1e-3f; break;                    // signed zeros
        case 5: v = n(g) * (ft == FloatType::kFP16 ? 1e4f : 1e30f); break;          // huge (bf16/fp32: slow path)
        case 6: v = n(g) * 1e-20f; break;                                            // tiny quotients
        default: v = n(g) * (g() % 64 == 0 ? 20.f : 1.f); break;                      // activations with outliers
      }
      r[k] = rep(v);
    }
    if (kind == 0) r[g() % K] = rep(127.f * e);
    if (kind == 1) r[g() % K] = rep(448.f * e);
  }
  return h;
}

static void upload(const Host& h, FloatType ft, void* d) {
  size_t n = h.x.size();
  if (ft == FloatType::kFP32) { CK(cudaMemcpy(d, h.x.data(), n * 4, cudaMemcpyHostToDevice)); return; }
  std::vector<uint16_t> b(n);
  for (size_t i = 0; i < n; ++i) b[i] = ft == FloatType::kBF16 ? f2bf(h.x[i]) : f2h(h.x[i]);
  CK(cudaMemcpy(d, b.data(), n * 2, cudaMemcpyHostToDevice));
}



// cfg: -2 old kernel, -1 auto, 0 warp rows, 1/2/4/8 block with that many vectors per thread.
static cudaError_t launch_any(const QuantizeActParams& p, int cfg, cudaStream_t s) {
  if (cfg == -2) {
#ifdef WITH_OLD
    return quantize_act_v2(p, s);
#else
    return cudaErrorNotSupported;
#endif
  }
  if (cfg == -1) return quantize_act(p, s);
  const int64_t nvec = p.K / (p.x_type == FloatType::kFP32 ? 4 : 8);
  Config c{cfg, 32, cfg == 0};
  if (cfg > 0) { int64_t t = (nvec + cfg - 1) / cfg; if (t > 1024) return cudaErrorNotSupported; c.threads = round_up32(t); }
  if (p.x_type != FloatType::kBF16 || p.smooth) return cudaErrorNotSupported;
  return p.q_type == QuantType::kInt8 ? launch_config<__nv_bfloat16, void, QuantType::kInt8>(p, c, s)
                                      : launch_config<__nv_bfloat16, void, QuantType::kFP8E4M3>(p, c, s);
}

int main() {
  int dev = 0, sms = 0; CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  cudaStream_t st; CK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
  // ---------------- exactness
  long total_bad = 0, checked = 0;
  const int shapes[][2] = {{1, 16}, {3, 320}, {77, 768}, {40, 1280}, {64, 3072}, {16, 4096}, {9, 12288}, {5, 15360}, {4, 20480}, {2, 40960}, {33, 512}, {8, 640}, {2, 65536 + 1024}};
  const FloatType fts[] = {FloatType::kBF16, FloatType::kFP16, FloatType::kFP32};
  for (auto& sh : shapes) for (FloatType ft : fts) for (int qi = 0; qi < 2; ++qi) for (int sm = 0; sm < 3; ++sm) {
    const int M = sh[0] * 8, K = sh[1];
    const QuantType qt = qi ? QuantType::kFP8E4M3 : QuantType::kInt8;
    Host h = make_input(M, K, ft, M * 131 + K + qi, true);
    std::vector<float> smv; FloatType sft = ft;
    if (sm) { std::mt19937 g(K); std::uniform_real_distribution<float> u(0.25f, 4.25f); smv.resize(K);
      sft = sm == 1 ? ft : FloatType::kFP32;
      for (auto& v : smv) { v = u(g); if (sft == FloatType::kBF16) v = bf2f(f2bf(v)); else if (sft == FloatType::kFP16) v = h2f(f2h(v)); } }
    std::vector<uint8_t> rq; std::vector<float> rs; reference(h, sm ? &smv : nullptr, qt, rq, rs);
    void *dx, *dq, *dsm = nullptr; float* dsc;
    const size_t es = ft == FloatType::kFP32 ? 4 : 2;
    CK(cudaMalloc(&dx, h.x.size() * es)); CK(cudaMalloc(&dq, h.x.size())); CK(cudaMalloc(&dsc, M * 4));
    upload(h, ft, dx);
    if (sm) { Host hs{smv, 1, K}; CK(cudaMalloc(&dsm, K * 4)); upload(hs, sft, dsm); }
    QuantizeActParams p{dx, K, ft, dsm, sft, dq, dsc, M, K, qt, sms};
    for (int cfg : {-2, -1, 0, 1, 2, 4, 8}) {
      CK(cudaMemset(dq, 0x5a, h.x.size())); CK(cudaMemset(dsc, 0x5a, M * 4));
      cudaError_t e = launch_any(p, cfg, st);
      if (e == cudaErrorNotSupported) continue;
      CK(e); CK(cudaStreamSynchronize(st));
      std::vector<uint8_t> q(h.x.size()); std::vector<float> s(M);
      CK(cudaMemcpy(q.data(), dq, q.size(), cudaMemcpyDeviceToHost)); CK(cudaMemcpy(s.data(), dsc, M * 4, cudaMemcpyDeviceToHost));
      long bad = 0; for (size_t i = 0; i < q.size(); ++i) bad += q[i] != rq[i];
      long bads = 0; for (int m = 0; m < M; ++m) bads += memcmp(&s[m], &rs[m], 4) != 0;
      checked += q.size();
      if (bad || bads) { printf("MISMATCH M=%d K=%d ft=%d q=%d smooth=%d cfg=%d: %ld q, %ld scales\n", M, K, int(ft), qi, sm, cfg, bad, bads);
        for (size_t i = 0, shown = 0; i < q.size() && shown < 4; ++i) if (q[i] != rq[i]) { printf("  [%zu] x=%a got %02x ref %02x scale %a\n", i, h.x[i], q[i], rq[i], rs[i / K]); ++shown; } }
      total_bad += bad + bads;
    }
    cudaFree(dx); cudaFree(dq); cudaFree(dsc); if (dsm) cudaFree(dsm);
  }
  printf("EXACTNESS: %ld values checked, %ld mismatches\n", checked, total_bad);

  // ---------------- timing (bf16, no smoothing), CUDA graph of 20 calls over rotating buffers
  const int bshapes[][2] = {{4096, 3072}, {4096, 12288}, {4608, 3072}, {4608, 15360}, {512, 3072}, {512, 12288},
                            {77, 768}, {64, 1280}, {256, 5120}, {1024, 640}, {4096, 320}, {4096, 1280}, {333, 1536}, {4096, 6144}, {4096, 2560}};
  cudaEvent_t e0, e1; CK(cudaEventCreate(&e0)); CK(cudaEventCreate(&e1));
  auto time_graph = [&](auto fn, int nsets) {
    cudaGraph_t g; cudaGraphExec_t ge; const int calls = 20;
    CK(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
    for (int i = 0; i < calls; ++i) fn(i % nsets);
    CK(cudaStreamEndCapture(st, &g)); CK(cudaGraphInstantiate(&ge, g, 0));
    for (int w = 0; w < 3; ++w) CK(cudaGraphLaunch(ge, st));
    std::vector<float> ts;
    for (int r = 0; r < 15; ++r) { CK(cudaEventRecord(e0, st)); CK(cudaGraphLaunch(ge, st)); CK(cudaEventRecord(e1, st)); CK(cudaEventSynchronize(e1));
      float ms; CK(cudaEventElapsedTime(&ms, e0, e1)); ts.push_back(ms * 1000 / calls); }
    std::sort(ts.begin(), ts.end()); cudaGraphExecDestroy(ge); cudaGraphDestroy(g); return ts[ts.size() / 2];
  };
  printf("\nshape | copy us (GB/s) | per config: us (%% of copy)   [cfg -2 = old kernel, -1 = auto, 0 = warp rows, n = n vecs/thread]\n");
  for (auto& sh : bshapes) {
    const int M = sh[0], K = sh[1];
    const size_t bytes = size_t(M) * K * 2;
    const int nsets = int(std::max<size_t>(2, std::min<size_t>(16, (200u << 20) / bytes + 1)));
    std::vector<void*> xs(nsets), qs(nsets), cs(nsets); std::vector<float*> ss(nsets);
    for (int i = 0; i < nsets; ++i) { CK(cudaMalloc(&xs[i], bytes)); CK(cudaMalloc(&cs[i], bytes)); CK(cudaMalloc(&qs[i], bytes / 2)); CK(cudaMalloc(&ss[i], M * 4)); }
    Host h = make_input(M, K, FloatType::kBF16, 1, false);
    for (int i = 0; i < nsets; ++i) upload(h, FloatType::kBF16, xs[i]);
    float tc = time_graph([&](int i) { CK(cudaMemcpyAsync(cs[i], xs[i], bytes, cudaMemcpyDeviceToDevice, st)); }, nsets);
    const double copy_bw = 2.0 * bytes / tc / 1e3;  // GB/s (read + write)
    printf("%5dx%-5d | %7.2f (%4.0f)", M, K, tc, copy_bw);
    for (int qi = 0; qi < 2; ++qi) {
      printf(" | %s:", qi ? "fp8" : "int8");
      for (int cfg : {-2, -1, 0, 1, 2, 4, 8}) {
        QuantizeActParams p{xs[0], K, FloatType::kBF16, nullptr, FloatType::kBF16, qs[0], ss[0], M, K, qi ? QuantType::kFP8E4M3 : QuantType::kInt8, sms};
        if (launch_any(p, cfg, st) == cudaErrorNotSupported) { cudaGetLastError(); continue; }
        CK(cudaStreamSynchronize(st));
        float t = time_graph([&](int i) { QuantizeActParams pi = p; pi.x = xs[i]; pi.q = qs[i]; pi.scale = ss[i]; CK(launch_any(pi, cfg, st)); }, nsets);
        const double bw = 1.5 * bytes / t / 1e3;
        printf(" %d:%.2f(%.0f%%)", cfg, t, 100 * bw / copy_bw);
      }
    }
    printf("\n"); fflush(stdout);
    for (int i = 0; i < nsets; ++i) { cudaFree(xs[i]); cudaFree(cs[i]); cudaFree(qs[i]); cudaFree(ss[i]); }
  }
  return total_bad != 0;
}
