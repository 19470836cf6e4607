"""Every pass of the CUDA kernels, the "fc" gate's kernels, and forward + backward of the blocks, on the AddressSanitizer build
of the emulator: any out-of-bounds access to a tensor (a full-size one or a small term) aborts with
ASan's report. Run by tests/test_cuemu.py in a subprocess started with libasan (and libstdc++, so
that ASan finds the C++ runtime it intercepts) preloaded; prints ``ASAN-OK`` at the end.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/

import torch  # noqa: E402

import cuemu  # noqa: E402

cuemu.load(asan=True)

from helpers import make_block, make_input, run_fwd_bwd  # noqa: E402
from test_cuemu import SCHEDULE_SHAPES, _all_passes, _input, _terms  # noqa: E402
from test_extension import FC_GATE_CASES, check_fc_gate  # noqa: E402

for shape in SCHEDULE_SHAPES:
    b, c, h, w = shape
    for layout in ("nchw", "channels_last", "offset"):
        for dtype in (torch.float32, torch.bfloat16, torch.float64):
            for device in (1, 2):  # many splits, none
                cuemu.configure(device)
                _all_passes(cuemu.PROVIDER, _input(shape, dtype, layout), make_input(shape, dtype, "nchw", 2),
                            _terms(b, c, h * w, dtype))
cuemu.configure(1)
for case in FC_GATE_CASES:
    check_fc_gate(cuemu.PROVIDER, torch.float32, case)
for block in ("se_max", "eca", "cbam_fc", "spatial7"):
    for shape in ((2, 5, 3, 7), (1, 33, 9, 1)):
        for layout in ("nchw", "channels_last"):
            m = make_block(block, shape[1], torch.float16)
            run_fwd_bwd(m, make_input(shape, torch.float16, layout), "cuemu", make_input(shape, torch.float16, layout, 2))
print("ASAN-OK", cuemu.stats()["launches"], "launches")
