// The reductions (reduce.h) for fp16 inputs.
#include "reduce.h"

namespace attnfused {
namespace cpu {
ATTNFUSED_REDUCE_KERNELS(Half, float)
}  // namespace cpu
}  // namespace attnfused
