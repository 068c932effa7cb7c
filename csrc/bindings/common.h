// Shared helpers of the torch bindings: argument checks with clear messages, dtype mapping,
// and which GPU archs this build holds code for.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <string>
#include <type_traits>
#include <vector>

#include "qengine/types.h"

namespace qengine::bindings {

// Error messages are built as one std::string without iostreams: torch formats a single string
// argument without a stream, and on the GPU machines a stream inserting an integer inside this
// extension crashed (two libstdc++ builds' locale facets meeting; seen with /opt/gcc's g++).
inline void append(std::string& s, const char* v) { s += v; }
inline void append(std::string& s, const std::string& v) { s += v; }
inline void append(std::string& s, at::ScalarType v) { s += c10::toString(v); }
inline void append(std::string& s, const at::Device& v) { s += v.str(); }
inline void append(std::string& s, c10::IntArrayRef v) {
  s += '[';
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
  s += ']';
}
template <typename T, typename = std::enable_if_t<std::is_arithmetic_v<T>>>
inline void append(std::string& s, T v) { s += std::to_string(v); }

template <typename... Args>
std::string cat(const Args&... args) {
  std::string s;
  (append(s, args), ...);
  return s;
}

// Argument errors surface in Python as ValueError, like the reference ops' OpInputError.
#define QENGINE_CHECK(op, cond, ...) TORCH_CHECK_VALUE(cond, ::qengine::bindings::cat("qengine::", op, ": ", __VA_ARGS__))

std::string shape_str(const at::Tensor& t);

// t is a contiguous CUDA tensor on `device` with one of `dtypes` and the given rank; sizes of
// -1 match anything.
void check_tensor(const char* op, const char* name, const at::Tensor& t, const at::Device& device,
                  std::initializer_list<at::ScalarType> dtypes, std::initializer_list<int64_t> shape);

FloatType float_type(const char* op, const char* name, at::ScalarType t);

// Archs compiled into this build ("80", "86", "89", "90a"), from the QENGINE_CUDA_ARCHS define.
const std::vector<std::string>& compiled_archs();

struct DeviceArch {
  int major, minor, sm_count;
};
DeviceArch device_arch(const at::Device& device);

// Whether this build holds machine code that runs on `device` for kernels that need at least
// compute capability `min_cc` (e.g. 80, 89) and were built for the compiled archs >= min_cc.
bool has_code_for(const at::Device& device, int min_cc);

// "sm_90 (NVIDIA H100 80GB HBM3)" for error messages.
std::string device_arch_str(const at::Device& device);

std::string compiled_archs_str();

}  // namespace qengine::bindings
