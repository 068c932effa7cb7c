#include "common.h"

#include <cuda_runtime_api.h>


#ifndef QENGINE_CUDA_ARCHS
#error "QENGINE_CUDA_ARCHS must be defined by the build: the compiled archs joined by '_', e.g. 80_86_89_90a"
#endif
#define QENGINE_STR2(x) #x
#define QENGINE_STR(x) QENGINE_STR2(x)

namespace qengine::bindings {

std::string shape_str(const at::Tensor& t) { return cat(t.sizes()); }

void check_tensor(const char* op, const char* name, const at::Tensor& t, const at::Device& device,
                  std::initializer_list<at::ScalarType> dtypes, std::initializer_list<int64_t> shape) {
  QENGINE_CHECK(op, t.is_cuda(), name, " must be a CUDA tensor, got one on ", t.device());
  QENGINE_CHECK(op, t.device() == device, name, " is on ", t.device(), " but the other operands are on ", device);
  bool dtype_ok = false;
  std::string want;
  for (auto d : dtypes) {
    dtype_ok |= t.scalar_type() == d;
    want += (want.empty() ? "" : " or ") + std::string(c10::toString(d));
  }
  QENGINE_CHECK(op, dtype_ok, name, " must have dtype ", want, ", got ", t.scalar_type());
  bool shape_ok = t.dim() == static_cast<int64_t>(shape.size());
  std::string want_shape = "[";
  int i = 0;
  for (auto s : shape) {
    if (shape_ok && s >= 0 && t.size(i) != s) shape_ok = false;
    want_shape += (i ? ", " : "") + (s < 0 ? std::string("*") : std::to_string(s));
    ++i;
  }
  want_shape += "]";
  QENGINE_CHECK(op, shape_ok, name, " must have shape ", want_shape, ", got ", shape_str(t));
  QENGINE_CHECK(op, t.is_contiguous(), name, " must be contiguous (strides ", t.strides(), " for shape ",
                shape_str(t), ")");
}

FloatType float_type(const char* op, const char* name, at::ScalarType t) {
  switch (t) {
    case at::kBFloat16: return FloatType::kBF16;
    case at::kHalf: return FloatType::kFP16;
    case at::kFloat: return FloatType::kFP32;
    default: QENGINE_CHECK(op, false, name, " must be bfloat16, float16 or float32, got ", t);
  }
  return FloatType::kFP32;
}

const std::vector<std::string>& compiled_archs() {
  static const std::vector<std::string> archs = [] {
    std::vector<std::string> out;
    const std::string s = QENGINE_STR(QENGINE_CUDA_ARCHS);
    size_t start = 0;
    while (start <= s.size()) {
      size_t end = s.find('_', start);
      if (end == std::string::npos) end = s.size();
      if (end > start) out.push_back(s.substr(start, end - start));
      start = end + 1;
    }
    return out;
  }();
  return archs;
}

DeviceArch device_arch(const at::Device& device) {
  int major = 0, minor = 0, sms = 0;
  const int idx = device.index() < 0 ? 0 : device.index();
  cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, idx);
  cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, idx);
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, idx);
  return {major, minor, sms};
}

bool has_code_for(const at::Device& device, int min_cc) {
  const DeviceArch d = device_arch(device);
  const DeviceArch* prop = &d;
  for (const auto& a : compiled_archs()) {
    const bool arch_specific = !a.empty() && a.back() == 'a';
    const int cc = std::stoi(arch_specific ? a.substr(0, a.size() - 1) : a);
    if (cc < min_cc) continue;
    const int major = cc / 10, minor = cc % 10;
    // sm_XYa code runs only on X.Y; plain sm_XY code on the same major with minor >= Y.
    if (arch_specific ? (prop->major == major && prop->minor == minor)
                      : (prop->major == major && prop->minor >= minor))
      return true;
  }
  return false;
}

std::string device_arch_str(const at::Device& device) {
  cudaDeviceProp prop{};
  cudaGetDeviceProperties(&prop, device.index() < 0 ? 0 : device.index());
  return cat("sm_", prop.major, prop.minor, " (", static_cast<const char*>(prop.name), ")");
}

std::string compiled_archs_str() {
  std::string out;
  for (const auto& a : compiled_archs()) out += (out.empty() ? "sm_" : ", sm_") + a;
  return out.empty() ? "none" : out;
}

}  // namespace qengine::bindings
