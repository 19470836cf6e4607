// cuemu's runtime: fibers for the threads of a block, the scheduler that interleaves them at
// barriers and warp collectives, the checks of cuemu.h's rules, the emulated devices, and the C
// entry points tests/cuemu/build.py reaches through ctypes (cuemu_configure, cuemu_stats, the
// half-type conversions).
#include "cuemu.h"

#include <cxxabi.h>
#include <dlfcn.h>
#include <elf.h>
#include <sys/mman.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#if !defined(__x86_64__)
#include <ucontext.h>
#endif
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

namespace cuemu {
namespace detail {
namespace {

// ---- Emulated devices: what cudaDeviceGetAttribute reports. Several SM counts, because the
// kernels' launch shapes (how a reduction splits) depend on it; tests pick one per run.
struct Device {
  int sms, cc_major, cc_minor, l2_bytes, smem_optin;
};
constexpr Device kDevices[] = {
    {2, 9, 0, 50 << 20, 232448},    // 0: a tiny GPU: few CTAs already fill it (few splits)
    {132, 9, 0, 50 << 20, 232448},  // 1: an H100 SXM: small grids split their reductions
    {1, 8, 0, 40 << 20, 166912},    // 2: one SM
    {7, 8, 6, 6 << 20, 101376},     // 3: an odd count
};
constexpr int kNumDevices = sizeof(kDevices) / sizeof(kDevices[0]);

// kWarpAhead: within a block, the last warp runs first and as far as it can (its own collectives
// completed at once) until every lane waits at a barrier or has returned, then the warp before it,
// and so on. The other orders advance all warps in lockstep between collectives, so none of them
// lets a warp get a whole turn of a loop ahead of the rest (a missing end-of-turn barrier).
enum class Order : int { kForward = 0, kReverse = 1, kRandom = 2, kWarpAhead = 3 };

struct Config {
  int device = 0;
  Order order = Order::kForward;
  uint64_t seed = 0;
} g_config;

struct Stats {
  long long launches = 0, blocks = 0, threads = 0, switches = 0, full_read_bytes = 0, full_write_bytes = 0;
} g_stats;

std::map<const void*, int> g_max_dynamic_smem;  // cudaFuncSetAttribute per kernel
std::map<const void*, long long> g_launches_of;  // launches per kernel, for cuemu_kernel_launches

// ---- Fibers. On x86-64 a hand-written switch (callee-saved registers, MXCSR and the x87 control
// word; no signal mask, unlike swapcontext, which costs a system call per switch); elsewhere
// ucontext.
constexpr size_t kStackBytes = 256 << 10;

struct Stack {
  char* base = nullptr;  // lowest address, a guard page
  size_t bytes = 0;
};

Stack new_stack() {
  const size_t page = 4096;
  void* p = mmap(nullptr, kStackBytes + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                 -1, 0);
  if (p == MAP_FAILED) throw std::runtime_error("cuemu: cannot map a fiber stack");
  mprotect(p, page, PROT_NONE);  // an overflowing kernel faults instead of corrupting a neighbour
  return {static_cast<char*>(p), kStackBytes + page};
}

void fiber_main();

#if defined(__x86_64__)
extern "C" void cuemu_switch(void** save_sp, void* load_sp);
asm(R"(
  .pushsection .text
  .globl cuemu_switch
  .hidden cuemu_switch
  .type cuemu_switch,@function
cuemu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size cuemu_switch,.-cuemu_switch
  .popsection
)");

struct Context {
  void* sp = nullptr;
  const void* stack_bottom = nullptr;  // for AddressSanitizer's fiber annotations
  size_t stack_bytes = 0;
};

void raw_init(Context& c, const Stack& s) {
  auto* top = reinterpret_cast<uint64_t*>((reinterpret_cast<uintptr_t>(s.base + s.bytes)) & ~uintptr_t{15});
  uint32_t mxcsr;
  uint16_t fpcw;
  asm volatile("stmxcsr %0" : "=m"(mxcsr));
  asm volatile("fnstcw %0" : "=m"(fpcw));
  // What cuemu_switch pops, bottom up: MXCSR/FPCW, r15..r12, rbx, rbp, then fiber_main as the
  // return address, and a zero "return address" above it so that fiber_main starts with the stack
  // alignment of a called function.
  top[-1] = 0;
  top[-2] = reinterpret_cast<uint64_t>(&fiber_main);
  for (int i = 3; i <= 8; ++i) top[-i] = 0;
  uint64_t fp = 0;
  std::memcpy(&fp, &mxcsr, 4);
  std::memcpy(reinterpret_cast<char*>(&fp) + 4, &fpcw, 2);
  top[-9] = fp;
  c.sp = &top[-9];
}

void raw_switch(Context& from, Context& to) { cuemu_switch(&from.sp, to.sp); }
#else
struct Context {
  ucontext_t uc;
  const void* stack_bottom = nullptr;
  size_t stack_bytes = 0;
};

void raw_init(Context& c, const Stack& s) {
  getcontext(&c.uc);
  c.uc.uc_stack.ss_sp = s.base;
  c.uc.uc_stack.ss_size = s.bytes;
  c.uc.uc_link = nullptr;
  makecontext(&c.uc, &fiber_main, 0);
}

void raw_switch(Context& from, Context& to) { swapcontext(&from.uc, &to.uc); }
#endif

void init_context(Context& c, const Stack& s) {
#if defined(__SANITIZE_ADDRESS__)
  // A reused stack may hold the redzones of frames a fiber abandoned (it never returns): clear them.
  __asan_unpoison_memory_region(s.base + 4096, s.bytes - 4096);
#endif
  c.stack_bottom = s.base + 4096;
  c.stack_bytes = s.bytes - 4096;
  raw_init(c, s);
}

// Under AddressSanitizer (the tests' ASan build of the emulator) every switch is announced, so that
// it knows which stack is live; ``for_good``: ``from`` is never resumed.
void switch_context(Context& from, Context& to, bool for_good = false) {
#if defined(__SANITIZE_ADDRESS__)
  void* fake = nullptr;
  __sanitizer_start_switch_fiber(for_good ? nullptr : &fake, to.stack_bottom, to.stack_bytes);
  raw_switch(from, to);
  __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#else
  (void)for_good;
  raw_switch(from, to);
#endif
}

// ---- Threads and the launch in progress.
enum class State : uint8_t { kRunnable, kBarrier, kWarp, kDone };

struct Thread {
  uint3 idx;
  int linear = 0;
  State state = State::kRunnable;
  Context ctx;
  // The collective it waits at.
  Op op = Op::kSyncWarp;
  unsigned mask = 0;
  uint64_t value = 0;
  int arg = 0, width = 32;
  int bar_kind = -1, bar_pred = 0;
  uint64_t result = 0;
};

struct Launch {
  const void* func;
  dim3 grid, block;
  size_t smem;
  KernelBody body;
  uint3 bidx;
  std::vector<Thread> threads;
  Thread* current = nullptr;
  Context scheduler;
  std::string error;
  std::vector<unsigned char> dynamic;
  std::mt19937_64 rng;
};

std::mutex g_mutex;                // one launch at a time (shared memory is process-global)
thread_local Launch* g_launch = nullptr;
std::vector<Stack> g_stacks;       // reused across launches

Launch& launch_state() {
  if (!g_launch) {
    std::fprintf(stderr, "cuemu: a device built-in was used outside a kernel launch\n");
    std::abort();
  }
  return *g_launch;
}

// The (mangled) name of the function at ``offset`` in an ELF file's full symbol table: the kernels
// live in anonymous namespaces, so dladdr (the dynamic symbols only) does not know them.
std::string elf_symbol(const std::string& path, uintptr_t offset) {
  static std::map<std::string, std::vector<std::pair<std::pair<uintptr_t, uintptr_t>, std::string>>> cache;
  auto it = cache.find(path);
  if (it == cache.end()) {
    std::vector<std::pair<std::pair<uintptr_t, uintptr_t>, std::string>> funcs;
    if (FILE* f = std::fopen(path.c_str(), "rb")) {
      std::vector<char> data;
      char chunk[1 << 16];
      for (size_t n; (n = std::fread(chunk, 1, sizeof chunk, f)) > 0;) data.insert(data.end(), chunk, chunk + n);
      std::fclose(f);
      const auto* eh = reinterpret_cast<const Elf64_Ehdr*>(data.data());
      if (data.size() >= sizeof(Elf64_Ehdr) && std::memcmp(eh->e_ident, ELFMAG, SELFMAG) == 0 &&
          eh->e_ident[EI_CLASS] == ELFCLASS64 && eh->e_shoff + eh->e_shnum * sizeof(Elf64_Shdr) <= data.size()) {
        const auto* sh = reinterpret_cast<const Elf64_Shdr*>(data.data() + eh->e_shoff);
        for (int i = 0; i < eh->e_shnum; ++i) {
          if (sh[i].sh_type != SHT_SYMTAB || sh[i].sh_link >= eh->e_shnum) continue;
          const auto* syms = reinterpret_cast<const Elf64_Sym*>(data.data() + sh[i].sh_offset);
          const char* names = data.data() + sh[sh[i].sh_link].sh_offset;
          for (size_t k = 0; k < sh[i].sh_size / sizeof(Elf64_Sym); ++k)
            if (ELF64_ST_TYPE(syms[k].st_info) == STT_FUNC && syms[k].st_size > 0)
              funcs.push_back({{syms[k].st_value, syms[k].st_value + syms[k].st_size}, names + syms[k].st_name});
        }
      }
    }
    it = cache.emplace(path, std::move(funcs)).first;
  }
  for (const auto& [range, name] : it->second)
    if (range.first <= offset && offset < range.second) return name;
  return "";
}

// The kernel's demangled name, for messages and cuemu_kernel_launches.
std::string kernel_name(const void* func) {
  static std::map<const void*, std::string> names;
  auto it = names.find(func);
  if (it != names.end()) return it->second;
  Dl_info info{};
  std::string mangled;
  if (dladdr(func, &info)) {
    mangled = info.dli_sname ? info.dli_sname
                             : elf_symbol(info.dli_fname, reinterpret_cast<uintptr_t>(func) -
                                                              reinterpret_cast<uintptr_t>(info.dli_fbase));
  }
  std::string name = mangled.empty() ? "kernel" : mangled;
  int status = 0;
  std::unique_ptr<char, void (*)(void*)> demangled(abi::__cxa_demangle(name.c_str(), nullptr, nullptr, &status),
                                                   std::free);
  if (status == 0 && demangled) name = demangled.get();
  return names[func] = name;
}

std::string where(const Launch& L, const Thread* t) {
  std::ostringstream os;
  os << "in " << kernel_name(L.func) << ", block (" << L.bidx.x << "," << L.bidx.y << "," << L.bidx.z << ")";
  if (t) os << ", thread (" << t->idx.x << "," << t->idx.y << "," << t->idx.z << ")";
  return os.str();
}

const char* op_name(Op op) {
  switch (op) {
    case Op::kSyncWarp: return "__syncwarp";
    case Op::kShflIdx: return "__shfl_sync";
    case Op::kShflUp: return "__shfl_up_sync";
    case Op::kShflDown: return "__shfl_down_sync";
    case Op::kShflXor: return "__shfl_xor_sync";
    case Op::kBallot: return "__ballot_sync";
    case Op::kAny: return "__any_sync";
    case Op::kAll: return "__all_sync";
  }
  return "?";
}

// Called on a fiber: record the first error and leave the block for good.
[[noreturn]] void fail_here(const std::string& why) {
  Launch& L = launch_state();
  Thread* t = L.current;
  if (L.error.empty()) L.error = why + " (" + where(L, t) + ")";
  t->state = State::kDone;
  switch_context(t->ctx, L.scheduler, true);
  std::abort();  // never resumed
}

void yield_to_scheduler() {
  Launch& L = launch_state();
  Thread* t = L.current;
  switch_context(t->ctx, L.scheduler);
}

void fiber_main() {
  Launch& L = launch_state();
#if defined(__SANITIZE_ADDRESS__)
  // First run of this fiber: learn the scheduler's stack (the thread's own) from the switch here.
  __sanitizer_finish_switch_fiber(nullptr, &L.scheduler.stack_bottom, &L.scheduler.stack_bytes);
#endif
  L.body.run(L.body.ctx);
  L.current->state = State::kDone;
  switch_context(L.current->ctx, L.scheduler, true);
  std::abort();  // a finished fiber is never resumed
}

void poison_dynamic_shared(Launch& L) { std::fill(L.dynamic.begin(), L.dynamic.end(), 0xff); }

// Every lane of the mask waits at the same collective: compute each one's result. Returns "" or
// the rule broken.
std::string complete_warp_op(Launch& L, int warp_first, int warp_lanes, Thread& lead) {
  const unsigned mask = lead.mask;
  const int lead_lane = lead.linear - warp_first;
  if (!(mask >> lead_lane & 1u))
    return std::string(op_name(lead.op)) + " with a mask that leaves out the calling lane " + std::to_string(lead_lane);
  if (warp_lanes < 32 && (mask >> warp_lanes) != 0)
    return std::string(op_name(lead.op)) + " mask names lanes beyond the block's last warp (" +
           std::to_string(warp_lanes) + " lanes)";
  const int width = lead.width;
  if (width < 1 || width > 32 || (width & (width - 1)) != 0)
    return std::string(op_name(lead.op)) + " width " + std::to_string(width) + " is not a power of two <= 32";
  for (int lane = 0; lane < warp_lanes; ++lane) {
    if (!(mask >> lane & 1u)) continue;
    Thread& t = L.threads[warp_first + lane];
    if (t.state == State::kDone)
      return std::string(op_name(lead.op)) + " mask names lane " + std::to_string(lane) + ", which has returned";
    if (t.state == State::kBarrier)
      return std::string(op_name(lead.op)) + " waits for lane " + std::to_string(lane) +
             ", which waits at __syncthreads(): deadlock";
    if (t.op != lead.op || t.mask != mask || t.width != width)
      return std::string("lanes ") + std::to_string(lead_lane) + " and " + std::to_string(lane) +
             " meet at different warp collectives (" + op_name(lead.op) + " / " + op_name(t.op) + ", masks " +
             std::to_string(mask) + " / " + std::to_string(t.mask) + ")";
  }
  unsigned votes = 0;
  for (int lane = 0; lane < warp_lanes; ++lane)
    if ((mask >> lane & 1u) && L.threads[warp_first + lane].value) votes |= 1u << lane;
  for (int lane = 0; lane < warp_lanes; ++lane) {
    if (!(mask >> lane & 1u)) continue;
    Thread& t = L.threads[warp_first + lane];
    // PTX's shfl.sync, as CUDA's intrinsics call it: the lane's segment of ``width`` lanes is
    // [first, last]; up/down/idx stay inside it, a butterfly may read below it (j <= last).
    const int first = lane & ~(width - 1), last = first + width - 1, b = t.arg & 31;
    int src = lane;
    switch (t.op) {
      case Op::kShflIdx: src = first | (b & (width - 1)); break;
      case Op::kShflUp: src = lane - b >= first ? lane - b : lane; break;
      case Op::kShflDown: src = lane + b <= last ? lane + b : lane; break;
      case Op::kShflXor: src = (lane ^ b) <= last ? (lane ^ b) : lane; break;
      default: break;
    }
    if (t.op == Op::kShflIdx || t.op == Op::kShflUp || t.op == Op::kShflDown || t.op == Op::kShflXor) {
      if (src < 0 || src >= warp_lanes || !(mask >> src & 1u))
        return std::string(op_name(t.op)) + ": lane " + std::to_string(lane) + " reads lane " + std::to_string(src) +
               ", which is not in the mask (undefined value)";
      t.result = L.threads[warp_first + src].value;
    } else if (t.op == Op::kBallot) {
      t.result = votes;
    } else if (t.op == Op::kAny) {
      t.result = votes != 0;
    } else if (t.op == Op::kAll) {
      t.result = votes == mask;
    } else {
      t.result = 0;
    }
  }
  for (int lane = 0; lane < warp_lanes; ++lane)
    if (mask >> lane & 1u) L.threads[warp_first + lane].state = State::kRunnable;
  return "";
}

// Completes the pending collectives of warps [w0, w1): 1 if any was, 0 if none was pending, -1 on
// an error (in L.error).
int complete_warps(Launch& L, int w0, int w1) {
  const int n = static_cast<int>(L.threads.size());
  int progress = 0;
  for (int w = w0; w < w1 && w * 32 < n; ++w) {
    const int first = w * 32, lanes = std::min(32, n - first);
    unsigned handled = 0;
    for (int lane = 0; lane < lanes; ++lane) {
      Thread& t = L.threads[first + lane];
      if (t.state != State::kWarp || (handled >> lane & 1u)) continue;
      const std::string why = complete_warp_op(L, first, lanes, t);
      if (!why.empty()) {
        L.error = why + " (" + where(L, &t) + ")";
        return -1;
      }
      handled |= t.mask;
      progress = 1;
    }
  }
  return progress;
}

// Every thread that has not returned waits at a barrier: check they agree, and release them.
bool release_barrier(Launch& L) {
  const int n = static_cast<int>(L.threads.size());
  int at_barrier = 0, done = 0, kind = -1;
  const Thread* exited = nullptr;
  for (const Thread& t : L.threads) {
    if (t.state == State::kBarrier) {
      ++at_barrier;
      if (kind >= 0 && t.bar_kind != kind) {
        L.error = "threads meet at different barriers (__syncthreads / __syncthreads_count/and/or) (" +
                  where(L, &t) + ")";
        return false;
      }
      kind = t.bar_kind;
    } else if (t.state == State::kDone) {
      ++done;
      exited = &t;
    }
  }
  if (at_barrier == 0) {
    L.error = "deadlock: no thread can go on (" + where(L, nullptr) + ")";
    return false;
  }
  if (done > 0) {
    L.error = "__syncthreads() reached after some threads of the block returned (" + where(L, exited) +
              " returned): undefined on the GPU";
    return false;
  }
  int count = 0;
  for (const Thread& t : L.threads) count += t.bar_pred != 0;
  const int result = kind == 0 ? count : kind == 1 ? count == n : kind == 2 ? count > 0 : 0;
  for (Thread& t : L.threads) {
    t.state = State::kRunnable;
    t.result = static_cast<uint64_t>(result);
  }
  return true;
}

// Completes whatever warp collectives can complete or, when none can, releases the barrier every
// thread waits at; false on an error (L.error set: a rule broken, or the block deadlocked).
bool complete_collectives(Launch& L) {
  const int progress = complete_warps(L, 0, INT32_MAX);
  if (progress < 0) return false;
  if (progress > 0) return true;
  return release_barrier(L);
}

// Runs thread ``t`` of the block to its next barrier, collective or return if it is runnable;
// false when it failed a check (the reason in L.error).
bool step_thread(Launch& L, Thread& t) {
  if (t.state != State::kRunnable) return true;
  L.current = &t;
  ++g_stats.switches;
  switch_context(L.scheduler, t.ctx);
  L.current = nullptr;
  return L.error.empty();
}

// Order::kWarpAhead (see there): each warp, last first, runs to a barrier or its end before the
// next one starts; its collectives complete as soon as its lanes reach them.
void run_block_warp_ahead(Launch& L) {
  const int n = static_cast<int>(L.threads.size()), warps = (n + 31) / 32;
  while (true) {
    for (int w = warps - 1; w >= 0; --w) {
      while (true) {
        for (int i = w * 32; i < std::min(n, w * 32 + 32); ++i)
          if (!step_thread(L, L.threads[i])) return;
        const int progress = complete_warps(L, w, w + 1);
        if (progress < 0) return;
        if (progress == 0) break;
      }
    }
    if (std::all_of(L.threads.begin(), L.threads.end(), [](const Thread& t) { return t.state == State::kDone; })) return;
    if (!release_barrier(L)) return;
  }
}

void run_block(Launch& L) {
  const int n = static_cast<int>(L.threads.size());
  const unsigned bx = L.block.x, by = L.block.y;
  for (int i = 0; i < n; ++i) {
    Thread& t = L.threads[i];
    t = Thread{};
    t.linear = i;
    t.idx = {i % bx, (i / bx) % by, i / (bx * by)};
    init_context(t.ctx, g_stacks[i]);
  }
  poison_dynamic_shared(L);
  if (g_config.order == Order::kWarpAhead) {
    run_block_warp_ahead(L);
    return;
  }
  std::vector<int> order(n);
  for (int i = 0; i < n; ++i) order[i] = g_config.order == Order::kReverse ? n - 1 - i : i;
  int done = 0;
  while (true) {
    if (g_config.order == Order::kRandom) std::shuffle(order.begin(), order.end(), L.rng);
    for (int i : order) {
      Thread& t = L.threads[i];
      const bool ran = t.state == State::kRunnable;
      if (!step_thread(L, t)) return;
      if (ran && t.state == State::kDone) ++done;
    }
    if (done == n) return;
    if (!complete_collectives(L)) return;
  }
}

std::string check_config(const Launch& L) {
  const dim3 g = L.grid, b = L.block;
  const unsigned long long threads = 1ull * b.x * b.y * b.z;
  if (threads == 0 || threads > 1024 || b.x > 1024 || b.y > 1024 || b.z > 64)
    return "invalid block (" + std::to_string(b.x) + "," + std::to_string(b.y) + "," + std::to_string(b.z) +
           "): 1..1024 threads, z <= 64";
  if (g.x == 0 || g.y == 0 || g.z == 0 || g.x > 0x7fffffffu || g.y > 65535 || g.z > 65535)
    return "invalid grid (" + std::to_string(g.x) + "," + std::to_string(g.y) + "," + std::to_string(g.z) +
           "): x in 1..2^31-1, y and z in 1..65535";
  size_t limit = 48 << 10;
  const auto it = g_max_dynamic_smem.find(L.func);
  if (it != g_max_dynamic_smem.end()) limit = static_cast<size_t>(it->second);
  if (L.smem > limit)
    return "dynamic shared memory of " + std::to_string(L.smem) + " bytes over the kernel's limit of " +
           std::to_string(limit) + " (raise it with cudaFuncSetAttribute)";
  return "";
}

}  // namespace

const uint3& thread_idx() { return launch_state().current->idx; }
const uint3& block_idx() { return launch_state().bidx; }
const dim3& block_dim() { return launch_state().block; }
const dim3& grid_dim() { return launch_state().grid; }
void* dynamic_shared() { return launch_state().dynamic.data(); }

void count_full(size_t bytes, bool write) {
  launch_state();  // only inside a launch
  (write ? g_stats.full_write_bytes : g_stats.full_read_bytes) += static_cast<long long>(bytes);
}

void sync_threads() { sync_threads_reduce(-1, 0); }

int sync_threads_reduce(int kind, int pred) {
  Launch& L = launch_state();
  Thread* t = L.current;
  t->state = State::kBarrier;
  t->bar_kind = kind;
  t->bar_pred = pred;
  yield_to_scheduler();
  return static_cast<int>(t->result);
}

uint64_t warp_collective(Op op, unsigned mask, uint64_t value, int arg, int width) {
  Launch& L = launch_state();
  Thread* t = L.current;
  t->state = State::kWarp;
  t->op = op;
  t->mask = mask;
  t->value = value;
  t->arg = arg;
  t->width = width;
  yield_to_scheduler();
  return t->result;
}

unsigned active_mask() {
  // Lanes of this warp that have not returned (the emulator has no divergence to report).
  Launch& L = launch_state();
  const int first = L.current->linear / 32 * 32;
  const int lanes = std::min<int>(32, static_cast<int>(L.threads.size()) - first);
  unsigned m = 0;
  for (int i = 0; i < lanes; ++i)
    if (L.threads[first + i].state != State::kDone) m |= 1u << i;
  return m;
}

void trap(const char* why) { fail_here(why); }

void set_func_attribute(const void* func, int attr, int value) {
  if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize) return;
  const int optin = kDevices[g_config.device].smem_optin;
  if (value < 0 || value > optin)
    throw std::runtime_error("cuemu: cudaFuncSetAttribute: " + std::to_string(value) +
                             " bytes of dynamic shared memory, over the device's " + std::to_string(optin));
  std::lock_guard<std::mutex> lock(g_mutex);
  g_max_dynamic_smem[func] = value;
}

void launch(const void* func, dim3 grid, dim3 block, size_t smem, KernelBody body) {
  if (g_launch) throw std::runtime_error("cuemu: kernel launched from inside a kernel");
  std::lock_guard<std::mutex> lock(g_mutex);
  Launch L;
  L.func = func;
  L.grid = grid;
  L.block = block;
  L.smem = smem;
  L.body = body;
  L.rng.seed(g_config.seed ^ (0x9e3779b97f4a7c15ull * static_cast<uint64_t>(g_stats.launches + 1)));
  const std::string bad = check_config(L);
  if (!bad.empty()) throw std::runtime_error("cuemu: " + kernel_name(func) + ": " + bad);
  const int n = static_cast<int>(block.x * block.y * block.z);
  while (static_cast<int>(g_stacks.size()) < n) g_stacks.push_back(new_stack());
  L.threads.resize(n);
  L.dynamic.assign(std::max<size_t>(smem, 16), 0xff);
  const uint64_t blocks = 1ull * grid.x * grid.y * grid.z;
  std::vector<uint64_t> order;
  if (g_config.order != Order::kForward) {
    order.resize(blocks);
    for (uint64_t i = 0; i < blocks; ++i) order[i] = g_config.order == Order::kReverse ? blocks - 1 - i : i;
    if (g_config.order == Order::kRandom) std::shuffle(order.begin(), order.end(), L.rng);
  }
  ++g_stats.launches;
  ++g_launches_of[func];
  g_launch = &L;
  for (uint64_t k = 0; k < blocks; ++k) {
    const uint64_t i = order.empty() ? k : order[k];
    L.bidx = {static_cast<unsigned>(i % grid.x), static_cast<unsigned>(i / grid.x % grid.y),
              static_cast<unsigned>(i / (1ull * grid.x * grid.y))};
    run_block(L);
    ++g_stats.blocks;
    g_stats.threads += n;
    if (!L.error.empty()) break;
  }
  g_launch = nullptr;
  if (!L.error.empty()) throw std::runtime_error("cuemu: " + L.error);
}

}  // namespace detail

// ---- Half types, bit exact (round to nearest even), as the CUDA intrinsics convert.
float half_bits_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0) {
    bits = __float_as_uint(static_cast<float>(mant) * 5.9604644775390625e-8f) | sign;  // mant * 2^-24, exact
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else {
    bits = sign | ((exp + 112) << 23) | (mant << 13);
  }
  return __uint_as_float(bits);
}

uint16_t float_to_half_bits(float f) {
  const uint32_t x = __float_as_uint(f);
  const uint32_t sign = (x >> 16) & 0x8000u, ax = x & 0x7fffffffu;
  if (ax > 0x7f800000u) return static_cast<uint16_t>(0x7fffu);  // NaN: CUDA's canonical one
  if (ax >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // >= 65520 rounds to inf
  if (ax < 0x38800000u) {  // below 2^-14: a half subnormal (or zero)
    if (ax < 0x33000000u) return static_cast<uint16_t>(sign);  // <= 2^-25 rounds to zero
    const uint32_t e = ax >> 23, m = (ax & 0x7fffffu) | 0x800000u;
    const uint32_t s = 126 - e;  // 14..24
    uint32_t h = m >> s;
    const uint32_t rem = m & ((1u << s) - 1), half = 1u << (s - 1);
    if (rem > half || (rem == half && (h & 1u))) ++h;
    return static_cast<uint16_t>(sign | h);
  }
  uint32_t h = (((ax >> 23) - 112) << 10) | ((ax & 0x7fffffu) >> 13);
  const uint32_t rem = ax & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;
  return static_cast<uint16_t>(sign | h);
}

float bf16_bits_to_float(uint16_t h) { return __uint_as_float(static_cast<uint32_t>(h) << 16); }

uint16_t float_to_bf16_bits(float f) {
  const uint32_t x = __float_as_uint(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>(0x7fffu);
  return static_cast<uint16_t>((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

}  // namespace cuemu

// ---- The runtime API (cuemu.h).
cudaError_t cudaGetDevice(int* device) {
  *device = cuemu::detail::g_config.device;
  return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device) {
  using cuemu::detail::kDevices;
  if (device < 0 || device >= cuemu::detail::kNumDevices) return cudaErrorInvalidValue;
  const auto& d = kDevices[device];
  switch (attr) {
    case cudaDevAttrMaxThreadsPerBlock: *value = 1024; break;
    case cudaDevAttrMaxSharedMemoryPerBlock: *value = 48 << 10; break;
    case cudaDevAttrWarpSize: *value = 32; break;
    case cudaDevAttrMultiProcessorCount: *value = d.sms; break;
    case cudaDevAttrComputeCapabilityMajor: *value = d.cc_major; break;
    case cudaDevAttrComputeCapabilityMinor: *value = d.cc_minor; break;
    case cudaDevAttrL2CacheSize: *value = d.l2_bytes; break;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = d.smem_optin; break;
    default: return cudaErrorInvalidValue;
  }
  return cudaSuccess;
}

cudaError_t cudaGetLastError() { return cudaSuccess; }
cudaError_t cudaPeekAtLastError() { return cudaSuccess; }
const char* cudaGetErrorString(cudaError_t error) { return error == cudaSuccess ? "no error" : "cuemu error"; }

// ---- C entry points for the tests (ctypes).
extern "C" {
// device: which emulated GPU cudaGetDevice reports (its SM count shapes the launches); order: 0
// forward, 1 reverse, 2 random (seeded) order of blocks and of threads between sync points, 3
// warp-ahead (blocks forward; in a block, Order::kWarpAhead).
int cuemu_configure(int device, int order, unsigned long long seed) {
  if (device < 0 || device >= cuemu::detail::kNumDevices || order < 0 || order > 3) return -1;
  std::lock_guard<std::mutex> lock(cuemu::detail::g_mutex);
  cuemu::detail::g_config = {device, static_cast<cuemu::detail::Order>(order), seed};
  return 0;
}
int cuemu_num_devices() { return cuemu::detail::kNumDevices; }
int cuemu_device_sms(int device) { return cuemu::detail::kDevices[device].sms; }
// launches, blocks, threads, fiber switches, and the bytes the kernels read from and wrote to
// full-size tensors (load_full / store_full), since the library was loaded.
void cuemu_stats(long long* out) {
  const auto& s = cuemu::detail::g_stats;
  out[0] = s.launches;
  out[1] = s.blocks;
  out[2] = s.threads;
  out[3] = s.switches;
  out[4] = s.full_read_bytes;
  out[5] = s.full_write_bytes;
}
// "name<TAB>launches" lines, one per kernel launched since the library was loaded (demangled
// names), into ``buf``; returns the length needed (call again with a larger buffer if it is larger).
int cuemu_kernel_launches(char* buf, int len) {
  std::string text;
  {
    std::lock_guard<std::mutex> lock(cuemu::detail::g_mutex);
    for (const auto& [func, n] : cuemu::detail::g_launches_of)
      text += cuemu::detail::kernel_name(func) + "\t" + std::to_string(n) + "\n";
  }
  if (len > 0) std::snprintf(buf, static_cast<size_t>(len), "%s", text.c_str());
  return static_cast<int>(text.size()) + 1;
}
// The half-type conversions of cuemu.h on n values (bf16: ``bf16`` != 0), to compare with torch's.
void cuemu_floats_to_half_bits(const float* in, unsigned short* out, long long n, int bf16) {
  for (long long i = 0; i < n; ++i) out[i] = bf16 ? cuemu::float_to_bf16_bits(in[i]) : cuemu::float_to_half_bits(in[i]);
}
void cuemu_half_bits_to_floats(const unsigned short* in, float* out, long long n, int bf16) {
  for (long long i = 0; i < n; ++i) out[i] = bf16 ? cuemu::bf16_bits_to_float(in[i]) : cuemu::half_bits_to_float(in[i]);
}
}
