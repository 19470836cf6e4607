#!/usr/bin/env bash
# All GPU evidence in one call: install, the whole test suite, the benchmark, one folder of logs.
#
#   bash benchmarks/gpu_all.sh [OUT_DIR]        (default: benchmarks/results/gpu-<UTC stamp>)
#
# For a GPU machine without network access that already has torch + triton (DESIGN.md §8), so the
# install uses --no-build-isolation --no-deps. On the lent H200 (15 minutes of device time per
# session, machine start included; 10 per command; at most 8 files come back from $OUT) run it as
# one command (README "GPU timings"):
#   STEPS="install tests bench summary" TEST_MINUTES=4 BENCH_MINUTES=2.5 PACK=$OUT/gpu_all.tgz \
#     bash benchmarks/gpu_all.sh /tmp/gpu_all
# Environment knobs:
#   STEPS        which steps, in order (default "install tests bench fc_gate summary").
#   PACK         a .tgz path: OUT_DIR is packed into it after every step, so that a command cut
#                short still hands back everything so far as one file.
#   PYTHON       the interpreter (default python3: the one holding torch on the lent H200).
#   TEST_MINUTES cap on the test step: pytest is interrupted (SIGINT, so it still reports what ran
#                and failed) after that many minutes; default none.
#   BENCH_ARGS   arguments for `python -m attnfused.bench` (default below: batch 32, bf16 then fp32,
#                channels_last then NCHW, compile's default mode, bf16 end to end; no row starts
#                after BENCH_MINUTES, default 6)
#   TEST_PATHS   what pytest runs (default tests: the whole suite)
#   TEST_ARGS    extra arguments for pytest
#   TEST_WORKERS pytest-xdist worker processes for the test step (default 8 where xdist is installed,
#                as on the lent H200 image: Triton's JIT compiles of the kernel variants dominate a
#                first run and spread over the CPU cores; 0 or 1: one process)
# fc_gate: the "fc" channel gate alone, csrc/cuda/fc_gate.cu against F.linear (cuBLAS) + aten's
# elementwise ops, forward and backward at batch 32 and 128 (benchmarks/fc_gate_bench.py, seconds).
# summary: OUT_DIR/summary.md, the README's tables from every bench JSON in OUT_DIR
# (python -m attnfused.bench.summary; no GPU needed, so it can also be rerun afterwards).
# Optional steps (not in the default list), the cuda provider's micro rows again with one of its
# kernels off, to time one against the other:
#   cuda_scalar    16-byte paths off (ATTNFUSED_CUDA_VECTORS=0), tag "cuda-scalar";
#   cuda_cudnn     gate convolutions on cuDNN (ATTNFUSED_CUDA_GATE_CONV=0), ECA and CBAM rows, tag
#                  "cuda-cudnn-conv" (csrc/cuda/gate_conv.cu replaces them by default);
#   cuda_cublas    the "fc" gate on F.linear (cuBLAS) and aten's elementwise ops
#                  (ATTNFUSED_CUDA_FC_GATE=0), SE and CBAM-FC rows, tag "cuda-cublas-fc"
#                  (csrc/cuda/fc_gate.cu replaces them by default);
#   triton_tiled   the Triton provider without its flat pointwise kernel (ATTNFUSED_TRITON_FLAT=0),
#                  tag "triton-tiled": NCHW 7x7 y / dx by the 2-D tiles, element by element.
# Every step runs even if an earlier one fails; each step's exit code is in OUT_DIR/<step>.rc.
set -u
cd "$(dirname "$0")/.."
OUT_DIR=${1:-benchmarks/results/gpu-$(date -u +%Y%m%dT%H%M%SZ)}
PY=${PYTHON:-python3}
mkdir -p "$OUT_DIR"
echo "attnfused gpu_all: writing to $OUT_DIR"

{
  date -u +%Y-%m-%dT%H:%M:%SZ
  git rev-parse HEAD 2>/dev/null || true
  nvidia-smi || true
  "$PY" -c "import sys, torch, triton; print('python', sys.version.split()[0]); print('torch', torch.__version__, 'cuda', torch.version.cuda); print('triton', triton.__version__); print('gpu', torch.cuda.get_device_name() if torch.cuda.is_available() else None)"
} > "$OUT_DIR/env.txt" 2>&1

step() {  # step NAME COMMAND...: run, log, record the exit code
  local name=$1; shift
  echo "== $name: $*"
  "$@" > "$OUT_DIR/$name.log" 2>&1
  local rc=$?
  echo "$rc" > "$OUT_DIR/$name.rc"
  echo "   rc=$rc, log $OUT_DIR/$name.log"
  tail -n 3 "$OUT_DIR/$name.log"
  pack
}

pack() {  # OUT_DIR as one file (PACK), rewritten after each step
  if [ -n "${PACK:-}" ]; then
    tar czf "$PACK.tmp" -C "$(dirname "$OUT_DIR")" "$(basename "$OUT_DIR")" && mv "$PACK.tmp" "$PACK"
  fi
}

# Default bench: bf16 channels_last first (the training configuration users run), then fp32 and NCHW,
# so that rows cut off by BENCH_MINUTES are the less used ones; no traffic report (interpreter
# counts, the same on any machine: the CPU runs have it); end to end only if time is left.
BENCH_ARGS=${BENCH_ARGS:---batch 32 --dtype bf16 fp32 --layout channels_last nchw --compile-modes default --no-traffic --e2e-precision bf16-autocast --e2e-impls eager attnfused compile}
for s in ${STEPS:-install tests bench fc_gate summary}; do
  case $s in
    install) step install env MAX_JOBS=16 "$PY" -m pip install --no-build-isolation --no-deps -v -e . ;;
    # shellcheck disable=SC2086
    tests)
      WORKERS=${TEST_WORKERS:-8}
      XDIST=""
      if [ "$WORKERS" -gt 1 ] && "$PY" -c "import xdist" 2>/dev/null; then XDIST="-n $WORKERS"; fi
      CAP=""
      if [ -n "${TEST_MINUTES:-}" ]; then CAP="timeout -s INT -k 30 ${TEST_MINUTES}m"; fi
      step tests $CAP "$PY" -m pytest ${TEST_PATHS:-tests} -q -rfEs --junitxml="$OUT_DIR/tests.xml" $XDIST ${TEST_ARGS:-} ;;
    # shellcheck disable=SC2086
    bench) step bench "$PY" -m attnfused.bench --out "$OUT_DIR" --max-minutes "${BENCH_MINUTES:-6}" $BENCH_ARGS ;;
    fc_gate) step fc_gate "$PY" benchmarks/fc_gate_bench.py --out "$OUT_DIR" ;;
    summary) step summary "$PY" -m attnfused.bench.summary "$OUT_DIR" --out "$OUT_DIR/summary.md" ;;
    cuda_scalar) step cuda_scalar env ATTNFUSED_CUDA_VECTORS=0 "$PY" -m attnfused.bench --out "$OUT_DIR" \
      --tag cuda-scalar --providers cuda --compile-modes --no-e2e --no-traffic --max-minutes "${BENCH_MINUTES:-3}" ;;
    cuda_cudnn) step cuda_cudnn env ATTNFUSED_CUDA_GATE_CONV=0 "$PY" -m attnfused.bench --out "$OUT_DIR" \
      --tag cuda-cudnn-conv --providers cuda --blocks eca cbam_fc cbam_conv --compile-modes --no-e2e --no-traffic \
      --max-minutes "${BENCH_MINUTES:-3}" ;;
    cuda_cublas) step cuda_cublas env ATTNFUSED_CUDA_FC_GATE=0 "$PY" -m attnfused.bench --out "$OUT_DIR" \
      --tag cuda-cublas-fc --providers cuda --blocks se_avg se_max cbam_fc --compile-modes --no-e2e --no-traffic \
      --max-minutes "${BENCH_MINUTES:-3}" ;;
    triton_tiled) step triton_tiled env ATTNFUSED_TRITON_FLAT=0 "$PY" -m attnfused.bench --out "$OUT_DIR" \
      --tag triton-tiled --providers triton --layout nchw --shape 2048,7,7 --compile-modes --no-e2e --no-traffic \
      --max-minutes "${BENCH_MINUTES:-3}" ;;
    *) echo "unknown step $s" ;;
  esac
done

# A digest for the end of the command's output (the device tool hands back its last 12,000
# characters): each step's exit code, the tests' outcome and failures, the bench summary's start.
echo "== digest"
for f in "$OUT_DIR"/*.rc; do [ -e "$f" ] && echo "$(basename "$f" .rc): rc=$(cat "$f")"; done
if [ -e "$OUT_DIR/tests.log" ]; then
  grep -E "^(FAILED|ERROR) " "$OUT_DIR/tests.log" | cut -c1-200 | head -n 40
  grep -E "(passed|failed|error|skipped|no tests ran).* in [0-9.]+s" "$OUT_DIR/tests.log" | tail -n 1
  grep -m 1 -E "^(!+ )?KeyboardInterrupt" "$OUT_DIR/tests.log" && echo "(tests cut short by TEST_MINUTES)"
fi
[ -e "$OUT_DIR/summary.md" ] && head -c 4000 "$OUT_DIR/summary.md"
pack
echo "attnfused gpu_all: done; results in $OUT_DIR${PACK:+, packed as $PACK}"
