// Plain enums shared by the torch-free launchers and the bindings.
#pragma once

#include <cstdint>

namespace qengine {

// Element type of a 16/32-bit floating-point tensor the launchers read or write.
enum class FloatType : int { kBF16 = 0, kFP16 = 1, kFP32 = 2 };

// Element type of an 8-bit quantized operand.
enum class QuantType : int { kInt8 = 0, kFP8E4M3 = 1 };

}  // namespace qengine
