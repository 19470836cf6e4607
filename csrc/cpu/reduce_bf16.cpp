// The reductions (reduce.h) for bf16 inputs.
#include "reduce.h"

namespace attnfused {
namespace cpu {
ATTNFUSED_REDUCE_KERNELS(c10::BFloat16, float)
}  // namespace cpu
}  // namespace attnfused
