// The reductions (reduce.h) for fp32 inputs.
#include "reduce.h"

namespace attnfused {
namespace cpu {
ATTNFUSED_REDUCE_KERNELS(float, float)
}  // namespace cpu
}  // namespace attnfused
