"""Benchmarks: ``python -m attnfused.bench`` (see ``--help``).

- ``cases``: the blocks and shapes, and the minimal byte count each row is measured against.
- ``timing``: ``triton.testing.do_bench`` on a GPU, a repeated median timer on CPU.
- ``micro``: per-block rows (eager, torch.compile, each attnfused provider).
- ``traffic_report``: bytes each block moves, counted in the Triton interpreter, vs eager.
- ``report``: terminal table, JSON/CSV with device and versions, PNG plots.
"""
