// The reductions (reduce.h) for fp64 inputs.
#include "reduce.h"

namespace attnfused {
namespace cpu {
ATTNFUSED_REDUCE_KERNELS(double, double)
}  // namespace cpu
}  // namespace attnfused
