// CPU reductions: the dtype dispatch. The kernels are in reduce.h, compiled once per input dtype by
// reduce_<dtype>.cpp.
#include "reduce.h"

namespace attnfused {
namespace cpu {

template <typename acc_t>
void reduce_hw(DType dt, const ReduceArgs<acc_t>& args) {
  dispatch<acc_t>(dt, [&](auto s) { reduce_hw_of(s, args); });
}

template <typename acc_t>
void reduce_c(DType dt, const ReduceArgs<acc_t>& args) {
  dispatch<acc_t>(dt, [&](auto s) { reduce_c_of(s, args); });
}

template void reduce_hw<float>(DType, const ReduceArgs<float>&);
template void reduce_hw<double>(DType, const ReduceArgs<double>&);
template void reduce_c<float>(DType, const ReduceArgs<float>&);
template void reduce_c<double>(DType, const ReduceArgs<double>&);

}  // namespace cpu
}  // namespace attnfused
