// attnfused._C: the kernel passes as torch ops (namespace ``attnfused_C``), one schema each, with a
// CPU and (when built with CUDA) a CUDA implementation. The block-level custom op
// ``attnfused::attention`` (Python, attnfused/ops/attention.py) calls them through the "cpu" and
// "cuda" providers (attnfused/kernels/extension.py); this file only checks inputs, views tensors
// as [B, C, P], allocates outputs and hands plain structs to the kernels (entry.h).
//
// Built a second way by the test suite (tests/cuemu, ATTNFUSED_CUDA_EMU): the CUDA kernels compiled
// as host code against a CPU emulator, registered for CPU tensors in the namespace
// ``attnfused_cuemu``, the CPU kernels left out. The same glue then feeds the CUDA kernels, so the
// tests check both.
#include <Python.h>

#include <ATen/ATen.h>
#include <torch/library.h>

#ifdef ATTNFUSED_WITH_CUDA
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

#include "entry.h"

// The op namespace. The Python module is named by the build (TORCH_EXTENSION_NAME: _C, or the
// emulator's extension).
#ifdef ATTNFUSED_CUDA_EMU
#define ATTNFUSED_OPS attnfused_cuemu
#else
#define ATTNFUSED_OPS attnfused_C
#endif

namespace attnfused {
namespace {

using at::Tensor;
using OptTensor = std::optional<Tensor>;

DType dtype_of(const Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat: return DType::kF32;
    case at::kDouble: return DType::kF64;
    case at::kHalf: return DType::kF16;
    case at::kBFloat16: return DType::kBF16;
    default: TORCH_CHECK(false, "attnfused: unsupported dtype ", t.scalar_type(), " (float32/64, float16, bfloat16)");
  }
}

at::ScalarType acc_type(const Tensor& t) { return t.scalar_type() == at::kDouble ? at::kDouble : at::kFloat; }

#if defined(ATTNFUSED_WITH_CUDA)
// Around each CUDA kernel call: the tensor's device made current, its current stream, and the
// launch error check afterwards.
constexpr c10::DeviceType kCudaKernelDevice = c10::DeviceType::CUDA;
struct CudaLaunch {
  c10::cuda::CUDAGuard guard;
  void* stream;
  explicit CudaLaunch(const Tensor& a)
      : guard(a.device()), stream(c10::cuda::getCurrentCUDAStream(a.device().index()).stream()) {}
  static void check() { C10_CUDA_KERNEL_LAUNCH_CHECK(); }
};
#elif defined(ATTNFUSED_CUDA_EMU)
// The emulator runs the CUDA kernels on CPU tensors, on no stream; a bad launch throws at once.
constexpr c10::DeviceType kCudaKernelDevice = c10::DeviceType::CPU;
struct CudaLaunch {
  void* stream = nullptr;
  explicit CudaLaunch(const Tensor&) {}
  static void check() {}
};
#endif

// Whether H and W merge into one strided axis P (NCHW, channels_last, expanded, batch/channel
// slices); same rule as kernels/_layout.py.
bool hw_merges(const Tensor& t) {
  return t.size(3) == 1 || t.size(2) == 1 || t.stride(2) == t.size(3) * t.stride(3);
}

// [B, C, P] view without a copy where H and W merge; otherwise one contiguous copy, kept alive in
// ``keep``.
View view_of(const Tensor& t, Tensor& keep) {
  if (!hw_merges(t)) {
    keep = t.contiguous();
    return view_of(keep, keep);
  }
  return {t.data_ptr(), t.stride(0), t.stride(1), t.size(3) == 1 ? t.stride(2) : t.stride(3)};
}

void check_big(const Tensor& a, const char* name) {
  TORCH_CHECK(a.dim() == 4, "attnfused: ", name, " must be 4-D [B, C, H, W], got ", a.dim(), "-D");
  dtype_of(a);
  TORCH_CHECK(a.size(2) * a.size(3) <= INT32_MAX && a.size(1) <= INT32_MAX,
              "attnfused: C and H*W must fit in int32 (argmax indices)");
}

// A small term: contiguous, on a's device, ``numel`` entries of ``dtype``.
template <typename T>
const T* small(const OptTensor& t, const Tensor& a, at::ScalarType dtype, int64_t numel, const char* name) {
  if (!t.has_value()) return nullptr;
  const Tensor& s = *t;
  TORCH_CHECK(s.device() == a.device(), "attnfused: ", name, " is on ", s.device(), ", expected ", a.device());
  TORCH_CHECK(s.scalar_type() == dtype, "attnfused: ", name, " must be ", dtype, ", got ", s.scalar_type());
  TORCH_CHECK(s.is_contiguous() && s.numel() == numel, "attnfused: ", name, " must be contiguous with ", numel,
              " elements, got shape ", s.sizes());
  return s.data_ptr<T>();
}

// The arguments of a reduction over H*W (``over_c`` false) or C of ``a`` into the [B, n] buffers
// sum / mx / arg (mx and arg only with ``want_max``); ``keep_*`` hold any contiguous copies.
template <typename acc_t>
ReduceArgs<acc_t> reduce_args(bool over_c, const Tensor& a, const OptTensor& x, const OptTensor& ca,
                              const OptTensor& sa, const OptTensor& da, const OptTensor& dm, const OptTensor& amc,
                              bool want_max, double divisor, Tensor& sum, Tensor& mx, Tensor& arg, Tensor& keep_a,
                              Tensor& keep_x) {
  const int64_t B = a.size(0), C = a.size(1), P = a.size(2) * a.size(3);
  const auto acc = acc_type(a);
  ReduceArgs<acc_t> r{};
  r.B = B; r.C = C; r.P = P;
  r.a = view_of(a, keep_a);
  r.has_x = x.has_value();
  if (r.has_x) {
    check_big(*x, "x");
    TORCH_CHECK(x->sizes() == a.sizes() && x->scalar_type() == a.scalar_type() && x->device() == a.device(),
                "attnfused: x must match the gradient's shape, dtype and device");
    r.x = view_of(*x, keep_x);
  } else {
    r.x = r.a;
  }
  r.want_max = want_max;
  r.divisor = static_cast<acc_t>(divisor);
  r.t.ca = small<acc_t>(ca, a, acc, B * C, "ca");
  r.t.sa = small<acc_t>(sa, a, acc, B * P, "sa");
  r.t.da = small<acc_t>(da, a, acc, B * P, "da");
  r.t.dm = small<acc_t>(dm, a, acc, B * P, "dm");
  r.t.amc = small<int32_t>(amc, a, at::kInt, B * P, "amc");
  TORCH_CHECK(!r.t.dm == !r.t.amc, "attnfused: dm and amc come together");
  r.round_x1 = over_c && r.t.ca && !r.has_x && a.scalar_type() != acc;
  r.n_split = 1;
  r.split_len = over_c ? C : P;
  r.out_sum = sum.data_ptr<acc_t>();
  r.out_max = want_max ? mx.data_ptr<acc_t>() : nullptr;
  r.out_arg = want_max ? arg.data_ptr<int32_t>() : nullptr;
  return r;
}

// ``want_arg`` false: the max without its argmax (an empty arg), where the kernels can skip it (CPU;
// the CUDA kernels find it anyway and return it).
template <typename acc_t>
std::tuple<Tensor, Tensor, Tensor> reduce(bool over_c, const Tensor& a, const OptTensor& x, const OptTensor& ca,
                                          const OptTensor& sa, const OptTensor& da, const OptTensor& dm,
                                          const OptTensor& amc, bool want_max, double divisor, bool want_arg = true) {
  const int64_t B = a.size(0), C = a.size(1), P = a.size(2) * a.size(3);
  const int64_t n = over_c ? P : C;
  const auto acc = acc_type(a);
  auto fopts = a.options().dtype(acc);
#ifndef ATTNFUSED_CUDA_EMU
  const bool skip_arg = want_max && !want_arg && a.is_cpu();
#else
  const bool skip_arg = false;
#endif
  Tensor sum = at::empty({B, n}, fopts);
  Tensor mx = want_max ? at::empty({B, n}, fopts) : at::empty({0}, fopts);
  Tensor arg = want_max && !skip_arg ? at::empty({B, n}, fopts.dtype(at::kInt)) : at::empty({0}, fopts.dtype(at::kInt));
  if (a.numel() == 0) {
    // Empty reductions: zero sums (as torch.sum); a max over an empty axis has no value (as
    // torch.amax), so it is refused unless its output is empty too.
    TORCH_CHECK(!want_max || sum.numel() == 0, "attnfused: the max over an empty axis (", over_c ? "C" : "H*W",
                " = 0) has no value");
    sum.zero_();
    return {sum, mx, arg};
  }
  Tensor keep_a, keep_x;
  ReduceArgs<acc_t> r =
      reduce_args<acc_t>(over_c, a, x, ca, sa, da, dm, amc, want_max, divisor, sum, mx, arg, keep_a, keep_x);
  const DType dt = dtype_of(a);
#ifndef ATTNFUSED_CUDA_EMU
  if (a.is_cpu()) {
    if (skip_arg) r.out_arg = nullptr;
    over_c ? cpu::reduce_c(dt, r) : cpu::reduce_hw(dt, r);
    return {sum, mx, arg};
  }
#endif
#ifdef ATTNFUSED_CUDA_KERNELS
  TORCH_CHECK(a.device().type() == kCudaKernelDevice, "attnfused: unsupported device ", a.device());
  CudaLaunch launch(a);
  int64_t programs = 0, block = 1;
  cuda::reduce_shape(dt, r, over_c, &programs, &block);
  const int64_t len = over_c ? C : P;
  r.n_split = cuda::reduce_splits(programs, len, block);
  TORCH_CHECK(programs * r.n_split < (int64_t{1} << 31), "attnfused: too many (sample, tile) blocks for one launch (",
              programs, "); split the batch");
  Tensor parts_sum, parts_max, parts_arg;
  if (r.n_split > 1) {
    const int64_t per = (len + r.n_split - 1) / r.n_split;
    r.split_len = (per + block - 1) / block * block;
    r.n_split = (len + r.split_len - 1) / r.split_len;
    parts_sum = at::empty({B, r.n_split, n}, fopts);
    r.out_sum = parts_sum.data_ptr<acc_t>();
    if (want_max) {
      parts_max = at::empty({B, r.n_split, n}, fopts);
      parts_arg = at::empty({B, r.n_split, n}, fopts.dtype(at::kInt));
      r.out_max = parts_max.data_ptr<acc_t>();
      r.out_arg = parts_arg.data_ptr<int32_t>();
    }
    r.divisor = 1;
  }
  void* stream = launch.stream;
  acc_t* fmax = want_max ? mx.data_ptr<acc_t>() : nullptr;
  int32_t* farg = want_max ? arg.data_ptr<int32_t>() : nullptr;
  over_c ? cuda::reduce_c(dt, r, sum.data_ptr<acc_t>(), fmax, farg, static_cast<acc_t>(divisor), stream)
         : cuda::reduce_hw(dt, r, sum.data_ptr<acc_t>(), fmax, farg, static_cast<acc_t>(divisor), stream);
  CudaLaunch::check();
  return {sum, mx, arg};
#else
  TORCH_CHECK(false, "attnfused._C was built without CUDA kernels; got a tensor on ", a.device());
#endif
}

std::tuple<Tensor, Tensor, Tensor> reduce_hw_op(const Tensor& a, const OptTensor& x, const OptTensor& sa,
                                                const OptTensor& da, const OptTensor& dm, const OptTensor& amc,
                                                bool want_max, double divisor, bool want_arg) {
  check_big(a, "input");
  TORCH_CHECK(!(want_max && x.has_value()), "attnfused: reduce_hw takes the max of a pool, not of a dot");
  if (a.scalar_type() == at::kDouble)
    return reduce<double>(false, a, x, std::nullopt, sa, da, dm, amc, want_max, divisor, want_arg);
  return reduce<float>(false, a, x, std::nullopt, sa, da, dm, amc, want_max, divisor, want_arg);
}

std::tuple<Tensor, Tensor, Tensor> reduce_c_op(const Tensor& a, const OptTensor& x, const OptTensor& ca,
                                               bool want_max, double divisor) {
  check_big(a, "input");
  TORCH_CHECK(!(want_max && x.has_value()), "attnfused: reduce_c takes the max of a pool, not of a dot");
  if (a.scalar_type() == at::kDouble)
    return reduce<double>(true, a, x, ca, std::nullopt, std::nullopt, std::nullopt, std::nullopt, want_max, divisor);
  return reduce<float>(true, a, x, ca, std::nullopt, std::nullopt, std::nullopt, std::nullopt, want_max, divisor);
}

// Output in ``like``'s layout where it maps to [B, C, P], else NCHW (kernels/_layout.py empty_output).
Tensor empty_output(const Tensor& like) {
  if (hw_merges(like)) return at::empty_like(like, at::MemoryFormat::Preserve);
  return at::empty(like.sizes(), like.options());
}

// The arguments of scale / grad_input of ``a`` into ``out``; ``keep_*`` hold any contiguous copies.
template <typename acc_t>
PointwiseArgs<acc_t> pointwise_args(const Tensor& a, const Tensor& out, bool ca_first, const OptTensor& ca,
                                    const OptTensor& sa, const OptTensor& da, const OptTensor& dm,
                                    const OptTensor& amc, const OptTensor& davg, const OptTensor& dmax,
                                    const OptTensor& amp, Tensor& keep_a, Tensor& keep_o) {
  const int64_t B = a.size(0), C = a.size(1), P = a.size(2) * a.size(3);
  const auto acc = acc_type(a);
  PointwiseArgs<acc_t> w{};
  w.B = B; w.C = C; w.P = P;
  w.a = view_of(a, keep_a);
  const View vo = view_of(out, keep_o);
  w.out = out.data_ptr();
  w.ob = vo.sb; w.oc = vo.sc; w.op = vo.sp;
  w.ca_first = ca_first;
  w.t.ca = small<acc_t>(ca, a, acc, B * C, "ca");
  w.t.sa = small<acc_t>(sa, a, acc, B * P, "sa");
  w.t.da = small<acc_t>(da, a, acc, B * P, "da");
  w.t.dm = small<acc_t>(dm, a, acc, B * P, "dm");
  w.t.amc = small<int32_t>(amc, a, at::kInt, B * P, "amc");
  w.t.davg = small<acc_t>(davg, a, acc, B * C, "davg");
  w.t.dmax = small<acc_t>(dmax, a, acc, B * C, "dmax");
  w.t.amp = small<int32_t>(amp, a, at::kInt, B * C, "amp");
  TORCH_CHECK(!w.t.dm == !w.t.amc && !w.t.dmax == !w.t.amp, "attnfused: each max gradient comes with its argmax");
  w.round_x1 = ca_first && w.t.ca && w.t.sa && a.scalar_type() != acc;
  return w;
}

template <typename acc_t>
Tensor pointwise(const Tensor& a, const Tensor& like, bool ca_first, const OptTensor& ca, const OptTensor& sa,
                 const OptTensor& da, const OptTensor& dm, const OptTensor& amc, const OptTensor& davg,
                 const OptTensor& dmax, const OptTensor& amp) {
  Tensor out = empty_output(like);
  if (out.numel() == 0) return out;
  Tensor keep_a, keep_o;
  const PointwiseArgs<acc_t> w =
      pointwise_args<acc_t>(a, out, ca_first, ca, sa, da, dm, amc, davg, dmax, amp, keep_a, keep_o);
  const DType dt = dtype_of(a);
#ifndef ATTNFUSED_CUDA_EMU
  if (a.is_cpu()) {
    cpu::pointwise(dt, w);
    return out;
  }
#endif
#ifdef ATTNFUSED_CUDA_KERNELS
  TORCH_CHECK(a.device().type() == kCudaKernelDevice, "attnfused: unsupported device ", a.device());
  CudaLaunch launch(a);
  cuda::pointwise(dt, w, launch.stream);
  CudaLaunch::check();
  return out;
#else
  TORCH_CHECK(false, "attnfused._C was built without CUDA kernels; got a tensor on ", a.device());
#endif
}

Tensor pointwise_op(const Tensor& a, const Tensor& like, bool ca_first, const OptTensor& ca, const OptTensor& sa,
                    const OptTensor& da, const OptTensor& dm, const OptTensor& amc, const OptTensor& davg,
                    const OptTensor& dmax, const OptTensor& amp) {
  check_big(a, "input");
  TORCH_CHECK(like.sizes() == a.sizes() && like.scalar_type() == a.scalar_type() && like.device() == a.device(),
              "attnfused: like must match the input's shape, dtype and device");
  if (a.scalar_type() == at::kDouble) return pointwise<double>(a, like, ca_first, ca, sa, da, dm, amc, davg, dmax, amp);
  return pointwise<float>(a, like, ca_first, ca, sa, da, dm, amc, davg, dmax, amp);
}

// The gates' small convolution (csrc/cpu/gate_conv.cpp, csrc/cuda/gate_conv.cu). The maps and
// weights are already in the accumulation dtype (attnfused/ops/_gates.py). Checked before the dtype
// dispatch, so that other dtypes get this message.
void check_gate_conv_dtype(const Tensor& in, const Tensor& weight) {
  TORCH_CHECK(in.scalar_type() == weight.scalar_type() && (in.scalar_type() == at::kFloat || in.scalar_type() == at::kDouble),
              "attnfused: gate_conv takes float32 or float64 maps and weight of one dtype, got ", in.scalar_type(),
              " and ", weight.scalar_type());
}

template <typename acc_t>
GateConvArgs<acc_t> gate_conv_args(const Tensor& in, const Tensor& weight, const OptTensor& bias, int64_t ph,
                                   int64_t pw) {
  TORCH_CHECK(in.device() == weight.device(), "attnfused: gate_conv's maps are on ", in.device(), " but its weight on ",
              weight.device());
  TORCH_CHECK(in.dim() == 4 && weight.dim() == 4 && weight.size(0) == 1 && weight.size(1) == in.size(1),
              "attnfused: gate_conv takes maps [B, M, H, W] and a weight [1, M, kh, kw], got ", in.sizes(), " and ",
              weight.sizes());
  TORCH_CHECK(in.is_contiguous() && weight.is_contiguous(), "attnfused: gate_conv takes contiguous tensors");
  TORCH_CHECK(ph >= 0 && pw >= 0, "attnfused: gate_conv padding must be >= 0");
  GateConvArgs<acc_t> a{};
  a.B = in.size(0); a.M = in.size(1); a.H = in.size(2); a.W = in.size(3);
  a.kh = weight.size(2); a.kw = weight.size(3); a.ph = ph; a.pw = pw;
  a.Ho = a.H + 2 * ph - a.kh + 1;
  a.Wo = a.W + 2 * pw - a.kw + 1;
  TORCH_CHECK(a.Ho > 0 && a.Wo > 0, "attnfused: gate_conv kernel larger than the padded maps");
  a.in = in.data_ptr<acc_t>();
  a.weight = weight.data_ptr<acc_t>();
  a.bias = small<acc_t>(bias, in, in.scalar_type(), 1, "bias");
  return a;
}

Tensor gate_conv_op(const Tensor& in, const Tensor& weight, const OptTensor& bias, int64_t ph, int64_t pw) {
  check_gate_conv_dtype(in, weight);
  return AT_DISPATCH_FLOATING_TYPES(in.scalar_type(), "gate_conv", [&] {
    const auto a = gate_conv_args<scalar_t>(in, weight, bias, ph, pw);
    Tensor out = at::empty({a.B, 1, a.Ho, a.Wo}, in.options());
#ifndef ATTNFUSED_CUDA_EMU
    if (in.is_cpu()) {
      cpu::gate_conv(a, out.data_ptr<scalar_t>());
      return out;
    }
#endif
#ifdef ATTNFUSED_CUDA_KERNELS
    TORCH_CHECK(in.device().type() == kCudaKernelDevice, "attnfused: unsupported device ", in.device());
    CudaLaunch launch(in);
    cuda::gate_conv(a, out.data_ptr<scalar_t>(), launch.stream);
    CudaLaunch::check();
    return out;
#else
    TORCH_CHECK(false, "attnfused._C was built without CUDA kernels; got a tensor on ", in.device());
#endif
  });
}

std::tuple<Tensor, Tensor, Tensor> gate_conv_backward_op(const Tensor& dz, const Tensor& in, const Tensor& weight,
                                                         int64_t ph, int64_t pw, bool want_bias) {
  check_gate_conv_dtype(in, weight);
  return AT_DISPATCH_FLOATING_TYPES(in.scalar_type(), "gate_conv_backward", [&] {
    const auto a = gate_conv_args<scalar_t>(in, weight, std::nullopt, ph, pw);
    TORCH_CHECK(dz.device() == in.device() && dz.scalar_type() == in.scalar_type() && dz.is_contiguous() &&
                    dz.numel() == a.B * a.Ho * a.Wo,
                "attnfused: gate_conv_backward's dz must be contiguous [B, 1, Ho, Wo] in the maps' dtype and device");
    Tensor din = at::empty_like(in);
    Tensor dweight = at::empty_like(weight);
    Tensor dbias = at::empty({want_bias ? 1 : 0}, in.options());
    scalar_t* db = want_bias ? dbias.data_ptr<scalar_t>() : nullptr;
#ifndef ATTNFUSED_CUDA_EMU
    if (in.is_cpu()) {
      cpu::gate_conv_backward(a, dz.data_ptr<scalar_t>(), din.data_ptr<scalar_t>(), dweight.data_ptr<scalar_t>(), db);
      return std::make_tuple(din, dweight, dbias);
    }
#endif
#ifdef ATTNFUSED_CUDA_KERNELS
    TORCH_CHECK(in.device().type() == kCudaKernelDevice, "attnfused: unsupported device ", in.device());
    const int64_t taps = a.M * a.kh * a.kw, chunks = cuda::gate_conv_weight_chunks(a.B * a.Ho * a.Wo);
    TORCH_CHECK((taps + 1) * chunks < (int64_t{1} << 31), "attnfused: gate_conv_backward's kernel (", taps,
                " taps) and maps are too large for one launch");
    Tensor parts = at::empty({(taps + 1) * chunks}, in.options());
    CudaLaunch launch(in);
    cuda::gate_conv_backward(a, dz.data_ptr<scalar_t>(), din.data_ptr<scalar_t>(), dweight.data_ptr<scalar_t>(), db,
                             parts.data_ptr<scalar_t>(), launch.stream);
    CudaLaunch::check();
    return std::make_tuple(din, dweight, dbias);
#else
    TORCH_CHECK(false, "attnfused._C was built without CUDA kernels; got a tensor on ", in.device());
#endif
  });
}

// The "fc" channel gate: csrc/cuda/fc_gate.cu for CUDA tensors, csrc/cpu/fc_gate.cpp for CPU ones
// (the emulator's build: its CUDA kernels for CPU tensors). ``s`` [n B, C] and the weights in the
// accumulation dtype.
template <typename acc_t>
FcGateArgs<acc_t> fc_gate_args(const Tensor& s, const Tensor& w1, const OptTensor& b1, const Tensor& w2,
                               const OptTensor& b2, int64_t n, int64_t act, int64_t gate) {
  TORCH_CHECK(n == 1 || n == 2, "attnfused: fc_gate's n (stacked statistics) must be 1 or 2, got ", n);
  TORCH_CHECK(act == kActRelu || act == kActSilu, "attnfused: fc_gate's act must be 0 (relu) or 1 (silu), got ", act);
  TORCH_CHECK(gate == kGateSigmoid || gate == kGateHardSigmoid,
              "attnfused: fc_gate's gate must be 0 (sigmoid) or 1 (hard sigmoid), got ", gate);
  TORCH_CHECK(s.dim() == 2 && w1.dim() == 2 && w2.dim() == 2 && s.size(0) % n == 0 && w1.size(1) == s.size(1) &&
                  w2.size(0) == s.size(1) && w2.size(1) == w1.size(0) && w1.size(0) > 0 && s.size(1) > 0,
              "attnfused: fc_gate takes s [n B, C], w1 [R, C] and w2 [C, R] with C, R > 0, got ", s.sizes(), ", ",
              w1.sizes(), " and ", w2.sizes());
  for (const Tensor* t : {&w1, &w2})
    TORCH_CHECK(t->device() == s.device() && t->scalar_type() == s.scalar_type(),
                "attnfused: fc_gate's weights must be on s's device and in its dtype, got ", t->device(), " ",
                t->scalar_type());
  TORCH_CHECK(s.is_contiguous() && w1.is_contiguous() && w2.is_contiguous(), "attnfused: fc_gate takes contiguous tensors");
  FcGateArgs<acc_t> a{};
  a.n = n; a.B = s.size(0) / n; a.C = s.size(1); a.R = w1.size(0);
  // Each grid has at most (products of two of C, R, n B) / 32 blocks, which must fit gridDim.x (2^31 - 1).
  const int64_t J = a.n * a.B, kMax = int64_t{1} << 36;
  TORCH_CHECK(a.C * a.R < kMax && J * a.C < kMax && J * a.R < kMax,
              "attnfused: fc_gate's inputs are too large for one launch");
  a.s = s.data_ptr<acc_t>(); a.w1 = w1.data_ptr<acc_t>(); a.w2 = w2.data_ptr<acc_t>();
  a.b1 = small<acc_t>(b1, s, s.scalar_type(), a.R, "b1");
  a.b2 = small<acc_t>(b2, s, s.scalar_type(), a.C, "b2");
  a.act = static_cast<int>(act); a.gate = static_cast<int>(gate);
  return a;
}

// Whether a call runs the CPU kernels (else the CUDA ones, or the emulator's on CPU tensors).
bool fc_gate_on_cpu(const Tensor& s) {
#ifdef ATTNFUSED_CUDA_EMU
  (void)s;
  return false;
#else
  return s.is_cpu();
#endif
}

void check_fc_gate_device(const Tensor& s) {
  TORCH_CHECK(s.scalar_type() == at::kFloat || s.scalar_type() == at::kDouble,
              "attnfused: fc_gate takes float32 or float64 statistics, got ", s.scalar_type());
  if (fc_gate_on_cpu(s)) return;
#ifdef ATTNFUSED_CUDA_KERNELS
  TORCH_CHECK(s.device().type() == kCudaKernelDevice || s.is_cpu(),
              "attnfused: fc_gate runs on CPU and CUDA tensors, got a tensor on ", s.device());
#else
  TORCH_CHECK(false, "attnfused: fc_gate runs on CPU tensors, and attnfused._C was built without CUDA kernels; got a "
              "tensor on ", s.device());
#endif
}

#ifndef ATTNFUSED_CUDA_EMU
// sigmoid(h) for silu (aten's vectorised exp; fc_gate.cpp has the exp-free steps), else undefined.
Tensor fc_sigmoid_of_h(const Tensor& h, int act) { return act == kActSilu ? at::sigmoid(h) : Tensor(); }

template <typename acc_t>
const acc_t* ptr_or_null(const Tensor& t) {
  return t.defined() ? t.data_ptr<acc_t>() : nullptr;
}

// A tensor over ``len`` contiguous acc_t values the caller owns.
template <typename acc_t>
Tensor row_tensor(acc_t* p, int64_t len) {
  return at::from_blob(p, {len}, at::TensorOptions().dtype(c10::CppTypeToScalarType<acc_t>::value));
}

// The "fc" gate's forward on the CPU kernels (fc_gate.cpp) into contiguous buffers: h [n B, R],
// afold (scratch, [B, R]), z and ca [B, C]; the sigmoids are aten's.
template <typename acc_t>
void fc_gate_cpu(const FcGateArgs<acc_t>& a, acc_t* h, acc_t* afold, acc_t* z, acc_t* ca) {
  cpu::fc_hidden(a, h);
  const Tensor sig_h = fc_sigmoid_of_h(row_tensor(h, a.n * a.B * a.R), a.act);
  cpu::fc_logits(a, h, ptr_or_null<acc_t>(sig_h), afold, z, ca);
  if (a.gate == kGateSigmoid) {
    Tensor ca_t = row_tensor(ca, a.B * a.C);
    at::sigmoid_out(ca_t, row_tensor(z, a.B * a.C));
  }
}
#endif

// (ca [B, C], z [B, C], h [n B, R]).
std::tuple<Tensor, Tensor, Tensor> fc_gate_op(const Tensor& s, const Tensor& w1, const OptTensor& b1, const Tensor& w2,
                                              const OptTensor& b2, int64_t n, int64_t act, int64_t gate) {
  check_fc_gate_device(s);
  return AT_DISPATCH_FLOATING_TYPES(s.scalar_type(), "fc_gate", [&] {
    const auto a = fc_gate_args<scalar_t>(s, w1, b1, w2, b2, n, act, gate);
    Tensor h = at::empty({a.n * a.B, a.R}, s.options()), scratch = at::empty_like(h);
    Tensor z = at::empty({a.B, a.C}, s.options()), ca = at::empty_like(z);
#ifndef ATTNFUSED_CUDA_EMU
    if (fc_gate_on_cpu(s)) {  // scratch: the folded activations [B, R]
      fc_gate_cpu(a, h.data_ptr<scalar_t>(), scratch.data_ptr<scalar_t>(), z.data_ptr<scalar_t>(),
                  ca.data_ptr<scalar_t>());
      return std::make_tuple(ca, z, h);
    }
#endif
#ifdef ATTNFUSED_CUDA_KERNELS
    CudaLaunch launch(s);
    cuda::fc_gate(a, h.data_ptr<scalar_t>(), scratch.data_ptr<scalar_t>(), z.data_ptr<scalar_t>(),
                  ca.data_ptr<scalar_t>(), launch.stream);
    CudaLaunch::check();
#endif
    return std::make_tuple(ca, z, h);
  });
}

// (ds [n B, C], dw1, db1 (empty without want_b1), dw2, db2 (empty without want_b2)).
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> fc_gate_backward_op(
    const Tensor& dca, const Tensor& s, const Tensor& z, const Tensor& ca, const Tensor& h, const Tensor& w1,
    const Tensor& w2, int64_t n, bool want_b1, bool want_b2, int64_t act, int64_t gate) {
  check_fc_gate_device(s);
  return AT_DISPATCH_FLOATING_TYPES(s.scalar_type(), "fc_gate_backward", [&] {
    const auto a = fc_gate_args<scalar_t>(s, w1, std::nullopt, w2, std::nullopt, n, act, gate);
    const std::vector<int64_t> bc{a.B, a.C}, jr{a.n * a.B, a.R};
    for (const auto& [t, shape, name] : {std::make_tuple(&dca, bc, "dca"), std::make_tuple(&z, bc, "z"),
                                         std::make_tuple(&ca, bc, "ca"), std::make_tuple(&h, jr, "h")})
      TORCH_CHECK(t->device() == s.device() && t->scalar_type() == s.scalar_type() && t->is_contiguous() &&
                      t->sizes() == at::IntArrayRef(shape),
                  "attnfused: fc_gate_backward's ", name, " must be contiguous ", at::IntArrayRef(shape), " in s's dtype "
                  "and device, got ", t->sizes());
    auto opts = s.options();
    Tensor afold = at::empty({a.B, a.R}, opts), dh = at::empty({a.n * a.B, a.R}, opts), ds = at::empty_like(s);
    Tensor dz = at::empty({a.B, a.C}, opts), dw1 = at::empty_like(w1), dw2 = at::empty_like(w2);
    Tensor db1 = at::empty({want_b1 ? a.R : 0}, opts), db2 = at::empty({want_b2 ? a.C : 0}, opts);
    FcGateGrads<scalar_t> g{};
    g.dca = dca.data_ptr<scalar_t>(); g.z = z.data_ptr<scalar_t>(); g.ca = ca.data_ptr<scalar_t>();
    g.h = h.data_ptr<scalar_t>(); g.afold = afold.data_ptr<scalar_t>(); g.dh = dh.data_ptr<scalar_t>();
    g.dz = dz.data_ptr<scalar_t>(); g.ds = ds.data_ptr<scalar_t>();
    g.dw1 = dw1.data_ptr<scalar_t>(); g.dw2 = dw2.data_ptr<scalar_t>();
    g.db1 = want_b1 ? db1.data_ptr<scalar_t>() : nullptr;
    g.db2 = want_b2 ? db2.data_ptr<scalar_t>() : nullptr;
#ifndef ATTNFUSED_CUDA_EMU
    if (fc_gate_on_cpu(s)) {
      cpu::fc_gate_backward(a, g, ptr_or_null<scalar_t>(fc_sigmoid_of_h(h, a.act)));
      return std::make_tuple(ds, dw1, db1, dw2, db2);
    }
#endif
#ifdef ATTNFUSED_CUDA_KERNELS
    const int64_t chunks = cuda::fc_gate_chunks(a.C);
#else
    const int64_t chunks = 0;  // unreachable: check_fc_gate_device refused the call above
#endif
    TORCH_CHECK(chunks * a.B * a.R < (int64_t{1} << 36), "attnfused: fc_gate_backward's inputs are too large for one launch");
    Tensor dht = at::empty({a.R, a.n * a.B}, opts), parts = at::empty({chunks, a.B, a.R}, opts);
    g.dht = dht.data_ptr<scalar_t>(); g.parts = parts.data_ptr<scalar_t>();
#ifdef ATTNFUSED_CUDA_KERNELS
    CudaLaunch launch(s);
    cuda::fc_gate_backward(a, g, launch.stream);
    CudaLaunch::check();
#endif
    return std::make_tuple(ds, dw1, db1, dw2, db2);
  });
}

#ifndef ATTNFUSED_CUDA_EMU  // CPU only: not part of the emulator's build
// One sample's channel gate inside a stage (below): what _gates.channel_forward computes for row b,
// through the kernels of the "cpu" provider's whole-batch gate ops (fc_gate.cpp's products,
// gate_conv.cpp, aten's sigmoid), whose output rows each depend only on their own input rows. The
// same values, but for the last bit where aten's sigmoid splits a row differently between its
// vector and scalar loops, and where the whole-batch "fc" gate runs on MKL instead (Intel CPUs).
template <typename acc_t>
struct ChannelGateCtx {
  int64_t B, C, n;                   // n: stacked statistics (avg, then max)
  const acc_t* avg;                  // [B, C] pooled rows, or null where not stacked
  const acc_t* mx;
  bool conv;                         // the 1-D conv over channels (fc: the "fc" gate)
  FcGateArgs<acc_t> fc;              // s and B set per sample
  GateConvArgs<acc_t> conv_args;     // in and B (= n rows) set per sample
  int gate_fn;                       // kGateSigmoid / kGateHardSigmoid
  acc_t* z;                          // [B, C]
  acc_t* ca;                         // [B, C]
  acc_t* h;                          // [n B, R] (fc)
};

template <typename acc_t>
void channel_gate_one(void* ctx, int64_t b) {
  const auto& g = *static_cast<const ChannelGateCtx<acc_t>*>(ctx);
  const int64_t C = g.C, n = g.n;
  std::vector<acc_t> s(n * C);  // the sample's gate input rows, stacked as the batch's
  int64_t row = 0;
  for (const acc_t* stat : {g.avg, g.mx})
    if (stat) std::copy(stat + b * C, stat + (b + 1) * C, s.begin() + C * row++);
  acc_t* z = g.z + b * C;
  acc_t* ca = g.ca + b * C;
  if (!g.conv) {
    FcGateArgs<acc_t> a = g.fc;
    a.B = 1;
    a.s = s.data();
    const int64_t R = a.R;
    std::vector<acc_t> h(n * R), afold(R);
    fc_gate_cpu(a, h.data(), afold.data(), z, ca);
    for (int64_t i = 0; i < n; ++i) std::copy(h.begin() + i * R, h.begin() + (i + 1) * R, g.h + (i * g.B + b) * R);
    return;
  }
  GateConvArgs<acc_t> c = g.conv_args;
  c.B = n;
  c.in = s.data();
  std::vector<acc_t> zs(n * C);
  cpu::gate_conv(c, zs.data());
  for (int64_t k = 0; k < C; ++k) z[k] = n == 2 ? zs[k] + zs[C + k] : zs[k];  // avg's logits + max's
  Tensor ca_row = row_tensor(ca, C);
  if (g.gate_fn == kGateSigmoid) {
    at::sigmoid_out(ca_row, row_tensor(z, C));
  } else {
    at::hardsigmoid_out(ca_row, row_tensor(z, C));
  }
}

// A channel stage run sample by sample (csrc/cpu/stages.cpp): its outputs and its arguments, the
// ChannelPart pointing into this struct (so it is filled in place, never moved). ``pool``: 0 avg,
// 1 max, 2 both (avg rows then max rows into the gate); ``conv``: the gate is the 1-D conv over
// channels with zero padding (w1 [1, 1, k], k odd), else the "fc" gate (w1 [R, C], b1, w2 [C, R],
// b2, ``act``). avg is always filled, mx and amp only for pools 1 and 2 (amp empty without
// ``want_arg``), h [n B, R] only for fc.
template <typename acc_t>
struct ChannelStage {
  Tensor avg, mx, amp, ca, z, h;
  ChannelGateCtx<acc_t> g{};
  cpu::ChannelPart<acc_t> part{};

  // ``xv``: x as a [B, C, P] view (hw_merges).
  void setup(const Tensor& xv, int64_t pool, bool conv, const Tensor& w1, const OptTensor& b1, const OptTensor& w2,
             const OptTensor& b2, int64_t act, int64_t gate_fn, bool want_arg) {
    TORCH_CHECK(pool >= 0 && pool <= 2, "attnfused: the channel stage's pool must be 0, 1 or 2, got ", pool);
    TORCH_CHECK(gate_fn == kGateSigmoid || gate_fn == kGateHardSigmoid,
                "attnfused: the channel stage's gate must be 0 (sigmoid) or 1 (hard sigmoid), got ", gate_fn);
    const int64_t B = xv.size(0), C = xv.size(1), P = xv.size(2) * xv.size(3), n = pool == 2 ? 2 : 1;
    const bool want_max = pool != 0;
    const auto acc = acc_type(xv);
    auto fopts = xv.options().dtype(acc);
    TORCH_CHECK(w1.is_cpu() && w1.scalar_type() == acc && (!w2 || w2->scalar_type() == acc),
                "attnfused: the channel stage's weights must be CPU tensors in the accumulation dtype ", acc);
    g.B = B; g.C = C; g.n = n; g.conv = conv; g.gate_fn = static_cast<int>(gate_fn);
    if (conv) {
      TORCH_CHECK(w1.dim() == 3 && w1.size(0) == 1 && w1.size(1) == 1 && w1.size(2) % 2 == 1 && w1.is_contiguous(),
                  "attnfused: the channel stage's conv gate takes a contiguous weight [1, 1, k] with k odd, got ",
                  w1.sizes());
      const int64_t k = w1.size(2), pad = (k - 1) / 2;
      g.conv_args = GateConvArgs<acc_t>{n, 1, 1, C, 1, k, 0, pad, 1, C, nullptr, w1.data_ptr<acc_t>(), nullptr};
      h = at::empty({0}, fopts);
    } else {
      TORCH_CHECK(w2.has_value(), "attnfused: the channel stage's fc gate needs w2");
      g.fc = fc_gate_args<acc_t>(at::empty({n * B, C}, fopts), w1, b1, *w2, b2, n, act, gate_fn);  // checks
      h = at::empty({n * B, g.fc.R}, fopts);
      g.h = h.data_ptr<acc_t>();
    }
    avg = at::empty({B, C}, fopts);
    z = at::empty({B, C}, fopts);
    ca = at::empty({B, C}, fopts);
    mx = want_max ? at::empty({B, C}, fopts) : at::empty({0}, fopts);
    amp = want_max && want_arg ? at::empty({B, C}, fopts.dtype(at::kInt)) : at::empty({0}, fopts.dtype(at::kInt));
    if (xv.numel() == 0) {
      avg.zero_();
      return;
    }
    Tensor keep_unused;
    part.pool = reduce_args<acc_t>(false, xv, std::nullopt, std::nullopt, std::nullopt, std::nullopt, std::nullopt,
                                   std::nullopt, want_max, static_cast<double>(std::max<int64_t>(P, 1)), avg, mx, amp,
                                   keep_unused, keep_unused);
    if (!want_arg) part.pool.out_arg = nullptr;  // the max without its argmax (no backward follows)
    part.gate = &channel_gate_one<acc_t>;
    part.gate_ctx = &g;
    g.avg = pool == 1 ? nullptr : avg.data_ptr<acc_t>();
    g.mx = pool == 0 ? nullptr : mx.data_ptr<acc_t>();
    g.z = z.data_ptr<acc_t>();
    g.ca = ca.data_ptr<acc_t>();
  }
};

// The stages pool over C and H*W, and their gates need both: an empty batch is fine, an empty
// channel or spatial axis (whose max and gate have no value) is refused.
void check_stage_input(const Tensor& x, const char* op) {
  TORCH_CHECK(x.dim() == 4 && x.size(1) > 0 && x.size(2) * x.size(3) > 0, "attnfused: ", op,
              " takes x [B, C, H, W] with C >= 1 and H*W >= 1, got ", x.sizes());
}

// x as a [B, C, P] view, copied once where H and W do not merge (the stages' passes all read it).
Tensor merged_view(const Tensor& x) { return hw_merges(x) ? x : x.contiguous(); }

// SE's and ECA's forward on CPU in one call (csrc/cpu/stages.cpp): (y, avg, mx, amp, ca, z, h) as
// pool_hw + _gates.channel_forward + scale give them (ChannelStage above).
template <typename acc_t>
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> channel_stage(
    const Tensor& x, int64_t pool, bool conv, const Tensor& w1, const OptTensor& b1, const OptTensor& w2,
    const OptTensor& b2, int64_t act, int64_t gate_fn, bool want_arg, bool shared) {
  const Tensor xv = merged_view(x);
  ChannelStage<acc_t> st;
  st.setup(xv, pool, conv, w1, b1, w2, b2, act, gate_fn, want_arg);
  Tensor y = empty_output(x);
  if (x.numel() > 0) {
    Tensor keep_unused;
    PointwiseArgs<acc_t> w = pointwise_args<acc_t>(xv, y, true, st.ca, std::nullopt, std::nullopt, std::nullopt,
                                                   std::nullopt, std::nullopt, std::nullopt, std::nullopt, keep_unused,
                                                   keep_unused);
    w.stream = y.numel() * y.element_size() >= cpu::kStreamBytes;
    cpu::channel_stage(dtype_of(x), st.part, w, shared);
  }
  return {y, st.avg, st.mx, st.amp, st.ca, st.z, st.h};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> channel_stage_op(
    const Tensor& x, int64_t pool, bool conv, const Tensor& w1, const OptTensor& b1, const OptTensor& w2,
    const OptTensor& b2, int64_t act, int64_t gate_fn, bool want_arg, bool shared) {
  check_big(x, "x");
  TORCH_CHECK(x.is_cpu(), "attnfused: channel_stage runs on CPU tensors");
  check_stage_input(x, "channel_stage");
  if (x.scalar_type() == at::kDouble) return channel_stage<double>(x, pool, conv, w1, b1, w2, b2, act, gate_fn, want_arg, shared);
  return channel_stage<float>(x, pool, conv, w1, b1, w2, b2, act, gate_fn, want_arg, shared);
}

// CBAM's spatial stage forward on CPU in one call (csrc/cpu/stages.cpp): (y, maps, amc, sa, z) as
// pool_c + the maps + gate_conv + the gate + scale would give them, without a BatchNorm (the caller
// runs the separate passes for that). With ``pool`` >= 0 (and no ``ca``) CBAM's channel stage runs
// first, sample by sample too (ChannelStage: pool, conv, w1 ... want_arg), and its (avg, mx, amp, ca,
// zc, h) follow; otherwise those six are empty and ``ca`` (or none) is the channel gate.
template <typename acc_t>
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> spatial_stage(
    const Tensor& x, const OptTensor& ca, const Tensor& weight, const OptTensor& bias, int64_t maps_kind, bool hard,
    int64_t pool, bool conv, const OptTensor& w1, const OptTensor& b1, const OptTensor& w2, const OptTensor& b2,
    int64_t act, int64_t gate_fn, bool want_arg) {
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), P = H * W;
  const int64_t M = maps_kind == 2 ? 1 : 2;
  TORCH_CHECK(weight.dim() == 4 && weight.size(0) == 1 && weight.size(1) == M && weight.size(2) == weight.size(3) &&
                  weight.size(2) % 2 == 1,
              "attnfused: spatial_stage takes a weight [1, ", M, ", k, k] with k odd, got ", weight.sizes());
  const auto acc = acc_type(x);
  auto fopts = x.options().dtype(acc);
  const Tensor xv = merged_view(x);
  const bool with_channel = pool >= 0;
  ChannelStage<acc_t> st;
  OptTensor ca_used = ca;
  if (with_channel) {
    TORCH_CHECK(!ca.has_value() && w1.has_value(), "attnfused: spatial_stage takes ca or a channel gate (w1), not both");
    st.setup(xv, pool, conv, *w1, b1, w2, b2, act, gate_fn, want_arg);
    ca_used = st.ca;
  } else {
    const Tensor none = at::empty({0}, fopts);
    st.avg = st.mx = st.ca = st.z = st.h = none;
    st.amp = at::empty({0}, fopts.dtype(at::kInt));
  }
  Tensor mean = at::empty({B, P}, fopts), mx = at::empty({B, P}, fopts);
  Tensor amc = at::empty(want_arg ? at::IntArrayRef{B, P} : at::IntArrayRef{0}, fopts.dtype(at::kInt));
  Tensor maps = at::empty({B, M, H, W}, fopts), z = at::empty({B, 1, H, W}, fopts), sa = at::empty({B, P}, fopts);
  Tensor y = empty_output(x);
  if (x.numel() > 0) {
    // pool_c of x*ca, the conv over the maps (same padding), and the scale by ca and ``sa``: the
    // arguments the three separate ops would build, each kernel then run on one-sample slices.
    Tensor keep_unused, keep_w = weight.to(acc).contiguous();
    ReduceArgs<acc_t> r = reduce_args<acc_t>(true, xv, std::nullopt, ca_used, std::nullopt, std::nullopt,
                                             std::nullopt, std::nullopt, true, static_cast<double>(C), mean, mx, amc,
                                             keep_unused, keep_unused);
    if (!want_arg) r.out_arg = nullptr;  // no backward follows: the max without its argmax
    const int64_t pad = (weight.size(2) - 1) / 2;
    const GateConvArgs<acc_t> g = gate_conv_args<acc_t>(maps, keep_w, bias, pad, pad);
    PointwiseArgs<acc_t> w = pointwise_args<acc_t>(xv, y, true, ca_used, sa, std::nullopt, std::nullopt,
                                                   std::nullopt, std::nullopt, std::nullopt, std::nullopt, keep_unused,
                                                   keep_unused);
    w.stream = y.numel() * y.element_size() >= cpu::kStreamBytes;
    cpu::spatial_stage(dtype_of(x), r, g, w, cpu::SpatialStageSpec{static_cast<int>(maps_kind), hard},
                       maps.data_ptr<acc_t>(), z.data_ptr<acc_t>(), sa.data_ptr<acc_t>(),
                       with_channel ? &st.part : nullptr);
  }
  return {y, maps, amc, sa, z, st.avg, st.mx, st.amp, st.ca, st.z, st.h};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> spatial_stage_op(
    const Tensor& x, const OptTensor& ca, const Tensor& weight, const OptTensor& bias, int64_t maps_kind, bool hard,
    int64_t pool, bool conv, const OptTensor& w1, const OptTensor& b1, const OptTensor& w2, const OptTensor& b2,
    int64_t act, int64_t gate_fn, bool want_arg) {
  check_big(x, "x");
  TORCH_CHECK(x.is_cpu() && weight.is_cpu(), "attnfused: spatial_stage runs on CPU tensors");
  check_stage_input(x, "spatial_stage");
  TORCH_CHECK(at::isFloatingType(weight.scalar_type()), "attnfused: spatial_stage takes a floating-point weight, got ",
              weight.scalar_type());
  TORCH_CHECK(maps_kind >= 0 && maps_kind <= 2, "attnfused: spatial_stage maps must be 0, 1 or 2, got ", maps_kind);
  if (x.scalar_type() == at::kDouble)
    return spatial_stage<double>(x, ca, weight, bias, maps_kind, hard, pool, conv, w1, b1, w2, b2, act, gate_fn, want_arg);
  return spatial_stage<float>(x, ca, weight, bias, maps_kind, hard, pool, conv, w1, b1, w2, b2, act, gate_fn, want_arg);
}
#endif  // ATTNFUSED_CUDA_EMU

}  // namespace
}  // namespace attnfused

// ATTNFUSED_OPS is a macro: TORCH_LIBRARY stringizes the expanded name.
TORCH_LIBRARY(ATTNFUSED_OPS, m) {
  // want_arg=False: the max's argmax may come back empty (CPU: a forward no backward follows).
  m.def("reduce_hw(Tensor a, Tensor? x, Tensor? sa, Tensor? da, Tensor? dm, Tensor? amc, bool want_max, "
        "float divisor, bool want_arg=True) -> (Tensor, Tensor, Tensor)");
  m.def("reduce_c(Tensor a, Tensor? x, Tensor? ca, bool want_max, float divisor) -> (Tensor, Tensor, Tensor)");
  m.def("pointwise(Tensor a, Tensor like, bool ca_first, Tensor? ca, Tensor? sa, Tensor? da, Tensor? dm, "
        "Tensor? amc, Tensor? davg, Tensor? dmax, Tensor? amp) -> Tensor");
  // The gates' small convolution: one output channel, zero padding.
  m.def("gate_conv(Tensor maps, Tensor weight, Tensor? bias, int ph, int pw) -> Tensor");
  m.def("gate_conv_backward(Tensor dz, Tensor maps, Tensor weight, int ph, int pw, bool want_bias) "
        "-> (Tensor, Tensor, Tensor)");
  // The "fc" channel gate: act 0 relu, 1 silu; gate 0 sigmoid, 1 hard sigmoid.
  m.def("fc_gate(Tensor s, Tensor w1, Tensor? b1, Tensor w2, Tensor? b2, int n, int act, int gate) "
        "-> (Tensor, Tensor, Tensor)");
  m.def("fc_gate_backward(Tensor dca, Tensor s, Tensor z, Tensor ca, Tensor h, Tensor w1, Tensor w2, int n, "
        "bool want_b1, bool want_b2, int act, int gate) -> (Tensor, Tensor, Tensor, Tensor, Tensor)");
#ifndef ATTNFUSED_CUDA_EMU
  // SE's and ECA's forward, sample by sample (CPU only): pool 0 avg, 1 max, 2 avgmax; conv, else
  // the "fc" gate; shared: each sample split over the threads (csrc/cpu/stages.cpp).
  m.def("channel_stage(Tensor x, int pool, bool conv, Tensor w1, Tensor? b1, Tensor? w2, Tensor? b2, int act, "
        "int gate, bool want_arg, bool shared=False) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  // CBAM's spatial stage forward, sample by sample (CPU only): maps 0 [max, mean], 1 [mean, max], 2 half
  // sum; want_arg=False: the maxima without their argmax (amc, amp empty).
  m.def("spatial_stage(Tensor x, Tensor? ca, Tensor weight, Tensor? bias, int maps, bool hard, int pool=-1, "
        "bool conv=False, Tensor? w1=None, Tensor? b1=None, Tensor? w2=None, Tensor? b2=None, int act=0, int gate=0, "
        "bool want_arg=True) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
#endif
}

// CPU tensors: the CPU kernels; in the emulator's build, the CUDA kernels (emulated) for the passes
// and the gates.
TORCH_LIBRARY_IMPL(ATTNFUSED_OPS, CPU, m) {
  m.impl("reduce_hw", &attnfused::reduce_hw_op);
  m.impl("reduce_c", &attnfused::reduce_c_op);
  m.impl("pointwise", &attnfused::pointwise_op);
  m.impl("gate_conv", &attnfused::gate_conv_op);
  m.impl("gate_conv_backward", &attnfused::gate_conv_backward_op);
  m.impl("fc_gate", &attnfused::fc_gate_op);
  m.impl("fc_gate_backward", &attnfused::fc_gate_backward_op);
#ifndef ATTNFUSED_CUDA_EMU
  m.impl("channel_stage", &attnfused::channel_stage_op);
  m.impl("spatial_stage", &attnfused::spatial_stage_op);
#endif
}

#ifdef ATTNFUSED_WITH_CUDA
TORCH_LIBRARY_IMPL(attnfused_C, CUDA, m) {
  m.impl("reduce_hw", &attnfused::reduce_hw_op);
  m.impl("reduce_c", &attnfused::reduce_c_op);
  m.impl("pointwise", &attnfused::pointwise_op);
  m.impl("gate_conv", &attnfused::gate_conv_op);
  m.impl("gate_conv_backward", &attnfused::gate_conv_backward_op);
  m.impl("fc_gate", &attnfused::fc_gate_op);
  m.impl("fc_gate_backward", &attnfused::fc_gate_backward_op);
}
#define ATTNFUSED_HAS_CUDA 1
#else
#define ATTNFUSED_HAS_CUDA 0
#endif

// A plain Python module: importing attnfused._C registers the ops above; ``WITH_CUDA`` says
// whether the CUDA kernels were compiled in.
extern "C" PyObject* C10_CONCATENATE(PyInit_, TORCH_EXTENSION_NAME)(void) {
  static struct PyModuleDef def = {PyModuleDef_HEAD_INIT, C10_STRINGIZE(TORCH_EXTENSION_NAME),
                                   "attnfused compiled kernels (CPU, CUDA)", -1, nullptr};
  PyObject* mod = PyModule_Create(&def);
  if (mod) PyModule_AddIntConstant(mod, "WITH_CUDA", ATTNFUSED_HAS_CUDA);
  return mod;
}
