"""Public API: constructor and input validation, backend selection, checkpoint keys."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import attnfused
from attnfused import functional as AF
from attnfused.spec import ChannelSpec
from helpers import DEVICE, FUSED, TOL

# -- constructor arguments ---------------------------------------------------------------------

BAD_CONSTRUCTORS = [
    (lambda: attnfused.SEBlock("mean", 8, 2), "mode"),
    (lambda: attnfused.SEBlock("avg", 0, 2), "channels"),
    (lambda: attnfused.SEBlock("avg", 8, 0), "ratio"),
    (lambda: attnfused.SEBlock("avg", 4, 8), "ratio"),
    (lambda: attnfused.ECABlock(0), "channels"),
    (lambda: attnfused.ECABlock(8, gamma=0), "gamma"),
    (lambda: attnfused.SpatialAttention(4), "kernel_size"),
    (lambda: attnfused.SpatialAttention(9), "kernel_size"),
    (lambda: attnfused.Spatial_Attention_Module(1), "kernel_size"),
    (lambda: attnfused.SpatialAttention(7.0), "kernel_size"),
    (lambda: attnfused.CBAMBlock("FC", 7.0, 8, 2), "kernel_size"),
    (lambda: attnfused.CBAMBlock("MLP", 7, 8, 2), "channel_attention_mode"),
    (lambda: attnfused.CBAMBlock("FC", 7, 8), "ratio"),
    (lambda: attnfused.CBAMBlock("FC", 7, None, 2), "channels"),
    (lambda: attnfused.CBAMBlock("Conv", 7, 8, gamma=2), "b"),
    (lambda: attnfused.CBAMBlock("Conv", 6, 8, gamma=2, b=1), "kernel_size"),
]


@pytest.mark.parametrize("build,arg", BAD_CONSTRUCTORS, ids=[a for _, a in BAD_CONSTRUCTORS])
def test_bad_constructor_arguments_raise_value_error(build, arg):
    with pytest.raises(ValueError, match=arg):
        build()


def test_numpy_numbers_are_taken_as_the_source_takes_them():
    np = pytest.importorskip("numpy")
    for gamma, b in ((np.float32(2), np.int64(1)), (np.float64(2.0), np.float32(1))):
        assert attnfused.ECABlock(64, gamma=gamma, b=b).conv.weight.shape == attnfused.ECABlock(64).conv.weight.shape
    assert attnfused.SEBlock("avg", np.int64(8), np.int32(2)).fc_layers[0].weight.shape == (4, 8)
    with pytest.raises(ValueError, match="gamma"):
        attnfused.ECABlock(8, gamma=np.float32("nan"))


def test_state_dict_keys_match_the_source_layout():
    assert list(attnfused.SEBlock("avg", 8, 2).state_dict()) == ["fc_layers.0.weight", "fc_layers.2.weight"]
    assert list(attnfused.ECABlock(8).state_dict()) == ["conv.weight"]
    assert list(attnfused.CBAMBlock("FC", 7, 8, 2).state_dict()) == [
        "channel_attention_block.fc_layers.0.weight",
        "channel_attention_block.fc_layers.2.weight",
        "spatial_attention_block.conv.weight",
    ]
    assert list(attnfused.CBAMBlock("Conv", 3, 8, gamma=2, b=1).state_dict()) == [
        "channel_attention_block.conv.weight",
        "spatial_attention_block.conv.weight",
    ]
    assert attnfused.CBAMBlock("Conv", 5, 64, gamma=2, b=1).channel_attention_block.conv.weight.shape == (1, 1, 3)
    assert attnfused.SpatialAttention(5).conv.weight.shape == (1, 2, 5, 5)


# -- inputs ------------------------------------------------------------------------------------


def _se_weights(c=8, dtype=torch.float32, device=DEVICE):
    return torch.randn(4, c, dtype=dtype, device=device), torch.randn(c, 4, dtype=dtype, device=device)


@pytest.mark.parametrize("backend", ["reference", *FUSED])
def test_bad_inputs(backend):
    w1, w2 = _se_weights()
    x = torch.randn(2, 8, 4, 4, device=DEVICE)
    sw = torch.randn(1, 2, 3, 3, device=DEVICE)
    with attnfused.use_backend(backend):
        with pytest.raises(ValueError, match="4-D"):
            AF.se(x[0], w1, w2)
        with pytest.raises(TypeError, match="float"):
            AF.se(x.to(torch.int32), w1, w2)
        with pytest.raises(TypeError, match="Tensor"):
            AF.se(x.tolist(), w1, w2)
        with pytest.raises(ValueError, match="w1"):
            AF.se(torch.randn(2, 6, 4, 4, device=DEVICE), w1, w2)
        with pytest.raises(ValueError, match="w2"):
            AF.se(x, w1, w2[:, :3])
        with pytest.raises(ValueError, match="w1 must have at least one row"):
            AF.se(x, w1[:0], w2[:, :0])
        with pytest.raises(ValueError, match="w1 must have at least one row"):
            AF.attention(x, ChannelSpec(), w1[:0], None, w2[:, :0])
        with pytest.raises(TypeError, match="w1"):
            AF.se(x, w1.to(torch.int64), w2)
        with pytest.raises(ValueError, match="pool"):
            AF.se(x, w1, w2, pool="avgmax")
        with pytest.raises(ValueError, match="gate"):
            AF.channel_gate(x, w1, w2, gate="mlp")
        with pytest.raises(ValueError, match="odd"):
            AF.eca(x, torch.randn(1, 1, 4, device=DEVICE))
        with pytest.raises(ValueError, match="circular 1-D conv of kernel 7 pads 3 channels"):
            AF.attention(x[:, :2], ChannelSpec(gate="conv", conv_padding="circular"), torch.randn(1, 1, 7, device=DEVICE))
        with pytest.raises(ValueError, match="w2 must be None"):
            AF.channel_attention(x, torch.randn(1, 1, 3, device=DEVICE), w2, "conv")
        with pytest.raises(ValueError, match="spatial_weight"):
            AF.spatial_attention(x, torch.randn(1, 3, 3, 3, device=DEVICE))
        with pytest.raises(ValueError, match="square"):
            AF.spatial_attention(x, torch.randn(1, 2, 3, 5, device=DEVICE))
        with pytest.raises(ValueError, match="H\\*W"):
            AF.spatial_attention(torch.randn(2, 8, 0, 4, device=DEVICE), sw)
        with pytest.raises(ValueError, match="channels|w1"):
            attnfused.SEBlock("avg", 8, 2).to(DEVICE)(torch.randn(2, 6, 4, 4, device=DEVICE))


def test_weights_on_another_device_are_refused():
    # Without a GPU the "other device" is meta; the check runs before any kernel either way.
    x = torch.randn(2, 8, 4, 4, device="cuda" if DEVICE.type == "cuda" else "meta")
    w1, w2 = _se_weights(device="cpu")
    with pytest.raises(ValueError, match="device"):
        AF.se(x, w1, w2)


# -- backends ----------------------------------------------------------------------------------


def test_backend_names_and_context_manager():
    assert attnfused.get_backend() == "auto"
    with attnfused.use_backend("reference"):
        assert attnfused.get_backend() == "reference"
        with attnfused.use_backend("triton"):
            assert attnfused.get_backend() == "triton"
        assert attnfused.get_backend() == "reference"
    assert attnfused.get_backend() == "auto"
    with pytest.raises(ValueError, match="unknown attnfused backend"):
        attnfused.set_backend("tpu")
    assert set(attnfused.BACKENDS) >= {"auto", "reference", "triton", "cuda", "cpu"}


def test_registered_provider_becomes_a_backend(monkeypatch):
    """attnfused.kernels.register_provider: the name works everywhere a backend name does and its
    provider runs the passes; built-in and invalid names are refused."""
    from attnfused import kernels
    from attnfused._backend import backend_names
    from attnfused.kernels.extension import CPU

    # The registry as it was, back after the test.
    monkeypatch.setattr(kernels, "_registered", list(kernels._registered))
    monkeypatch.setattr(kernels, "_loaded", dict(kernels._loaded))

    calls = []

    class Counting:
        name = "counting"

        def check_device(self, device):
            CPU.check_device(device)

        def __getattr__(self, attr):  # every pass: count it, run the cpu provider's
            value = getattr(CPU, attr)  # AttributeError for a hook the cpu provider lacks
            if not callable(value):  # None for a switched-off hook, or a setting
                return value

            def call(*args, **kwargs):
                calls.append(attr)
                return getattr(CPU, attr)(*args, **kwargs)

            return call

    if not kernels.provider_available("cpu", torch.device("cpu")):
        pytest.skip("needs the cpu provider (attnfused._C)")
    kernels.register_provider("counting", Counting())
    assert "counting" in backend_names() and "counting" not in attnfused.BACKENDS
    w1, w2 = _se_weights(device="cpu")
    x = torch.randn(2, 8, 4, 4)
    with attnfused.use_backend("counting"):
        y = AF.se(x, w1, w2)
    with attnfused.use_backend("reference"):
        torch.testing.assert_close(y, AF.se(x, w1, w2))
    # the cpu provider's SE forward: one sample-by-sample stage, or (where its rule declines) the passes
    assert calls == ["channel_stage"] or (calls[:2] == ["channel_stage", "pool_hw"] and "scale" in calls), calls
    for bad in ("cpu", "auto", "reference", "not a name", 3):
        with pytest.raises(ValueError, match="cannot register"):
            kernels.register_provider(bad, Counting())


def test_provider_for_another_device_is_refused():
    w1, w2 = _se_weights()
    x = torch.randn(2, 8, 4, 4, device=DEVICE)
    other = "cpu" if DEVICE.type == "cuda" else "cuda"
    with attnfused.use_backend(other), pytest.raises(RuntimeError, match=f"runs on {other} tensors|not available"):
        AF.se(x, w1, w2)


@pytest.mark.skipif(DEVICE.type != "cpu", reason="CPU-only behaviour")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64], ids=str)
def test_auto_on_cpu_runs_the_cpu_provider(dtype):
    """Every dtype, fp16 included: its rows go through F16C's conversions (csrc/cpu/half.cpp), and
    the provider is faster than eager there too (benchmarks/results/README.md, "fp16 on CPU")."""
    w1, w2 = _se_weights(dtype=dtype, device="cpu")
    x = torch.randn(2, 8, 4, 4, dtype=dtype, requires_grad=True)
    y = AF.se(x, w1, w2)
    assert "attnfused" in type(y.grad_fn).__name__.lower()  # the fused op, not eager autograd
    # fp32: torch's default tolerances; fp16 / bf16: eager computes the gate in them, the provider
    # in fp32.
    tol = {} if dtype == torch.float32 else dict(zip(("rtol", "atol"), TOL[dtype]))
    torch.testing.assert_close(y, attnfused.reference.se(x, w1, w2), **tol)


def test_without_the_extension_auto_falls_back_and_cpu_says_how_to_build():
    """A process where attnfused._C cannot be imported: "auto" on CPU runs the reference (one log
    line), and asking for "cpu"/"cuda" raises an error saying how to build the extension."""
    code = (
        "import sys, logging; sys.modules['attnfused._C'] = None  # import fails\n"
        "logging.basicConfig(level=logging.INFO, format='LOG %(message)s')\n"
        "import torch, attnfused; from attnfused import functional as AF\n"
        "x = torch.randn(2, 8, 4, 4, requires_grad=True); w1 = torch.randn(4, 8); w2 = torch.randn(8, 4)\n"
        "y = AF.se(x, w1, w2); AF.se(x, w1, w2)\n"
        "print('EAGER', 'attnfused' not in type(y.grad_fn).__name__.lower())\n"
        "for name in ('cpu', 'cuda'):\n"
        "    try:\n        attnfused.set_backend(name); AF.se(x, w1, w2)\n"
        "    except RuntimeError as e:\n        print('REFUSED', name, 'not available' in str(e) and 'pip install' in str(e))\n"
    )
    env = dict(__import__("os").environ, CUDA_VISIBLE_DEVICES="")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    text = out.stdout + out.stderr
    assert "EAGER True" in text and "REFUSED cpu True" in text and "REFUSED cuda True" in text, text
    assert text.count("backend 'auto' runs the eager reference") == 1, text


def test_triton_on_cpu_without_interpreter_is_refused():
    """In a fresh process without TRITON_INTERPRET, backend 'triton' on CPU tensors raises."""
    code = (
        "import os, torch, attnfused; os.environ.pop('TRITON_INTERPRET', None)\n"
        "from attnfused import functional as AF\n"
        "x = torch.randn(2, 8, 4, 4); w1 = torch.randn(4, 8); w2 = torch.randn(8, 4)\n"
        "attnfused.set_backend('triton')\n"
        "try:\n    AF.se(x, w1, w2)\nexcept RuntimeError as e:\n    print('REFUSED', 'TRITON_INTERPRET' in str(e))\n"
    )
    env = {k: v for k, v in __import__("os").environ.items() if k != "TRITON_INTERPRET"}
    env["CUDA_VISIBLE_DEVICES"] = ""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert "REFUSED True" in out.stdout, out.stdout + out.stderr


def test_env_var_selects_the_backend():
    code = "import attnfused; print(attnfused.get_backend())"
    env = dict(__import__("os").environ, ATTNFUSED_BACKEND="reference")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.stdout.strip() == "reference", out.stderr
    env["ATTNFUSED_BACKEND"] = "nope"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode != 0 and "unknown attnfused backend" in out.stderr


def test_bad_family_inputs():
    from attnfused import ChannelSpec, SpatialSpec

    x = torch.randn(2, 8, 4, 4, device=DEVICE)
    w1, w2 = _se_weights()
    one = torch.ones(1, device=DEVICE)
    with pytest.raises(ValueError, match="channel spec, a spatial spec"):
        AF.attention(x)
    with pytest.raises(ValueError, match="pool"):
        ChannelSpec(pool="mean")
    with pytest.raises(ValueError, match="maps"):
        SpatialSpec(maps="max")
    with pytest.raises(ValueError, match="linear"):
        AF.attention(x, ChannelSpec(gate="linear"), w1)  # [4, 8] is not [C, C]
    with pytest.raises(ValueError, match="b1 must be None"):
        AF.attention(x, ChannelSpec(gate="conv"), torch.randn(1, 1, 3, device=DEVICE), b1=one)
    with pytest.raises(ValueError, match="w1 must be a Linear's"):
        AF.attention(x, ChannelSpec(), torch.randn(4, 8, 3, 3, device=DEVICE), w2=w2)
    # shapes that only hold the right number of elements are refused, not reshaped
    for bad1, bad2, name in [((2, 2, 8), (8, 4), "w1"), ((4, 1, 8), (8, 4), "w1"), ((4, 8), (8, 2, 2), "w2"),
                             ((1, 8), (8,), "w2"), ((4, 8, 1), (8, 4), "w1")]:
        with pytest.raises(ValueError, match=f"{name} must be a Linear's"):
            AF.attention(x, ChannelSpec(), torch.randn(bad1, device=DEVICE), w2=torch.randn(bad2, device=DEVICE))
    conv1, conv2 = w1[:, :, None, None], w2[:, :, None, None]  # 1x1 conv weights are taken
    torch.testing.assert_close(AF.attention(x, ChannelSpec(), conv1, w2=conv2), AF.attention(x, ChannelSpec(), w1, w2=w2))
    # a weight without its stage's spec would be ignored: refused
    with pytest.raises(ValueError, match="without a channel spec"):
        AF.attention(x, None, w1, None, w2, None, SpatialSpec(), torch.randn(1, 2, 3, 3, device=DEVICE))
    with pytest.raises(ValueError, match="without a spatial spec"):
        AF.attention(x, ChannelSpec(), w1, None, w2, None, None, torch.randn(1, 2, 3, 3, device=DEVICE))
    with pytest.raises(ValueError, match="without a spatial spec"):
        AF.attention(x, ChannelSpec(), w1, None, w2, None, None, None, None, one, one)
    bn = dict(bn_weight=one, bn_bias=one, bn_mean=one.clone(), bn_var=one.clone(), bn_train=True)
    with pytest.raises(TypeError, match="bn_momentum must be a number .*num_batches_tracked"):
        AF.attention(x, spatial=SpatialSpec(norm=True), sw=torch.randn(1, 2, 3, 3, device=DEVICE), bn_momentum=None, **bn)
    with pytest.raises(TypeError, match="bn_eps must be a number"):
        AF.attention(x, spatial=SpatialSpec(norm=True), sw=torch.randn(1, 2, 3, 3, device=DEVICE), bn_eps="1e-5", **bn)
    assert bn["bn_mean"].item() == 1 and bn["bn_var"].item() == 1  # refused before running
    with pytest.raises(ValueError, match="b2"):
        AF.attention(x, ChannelSpec(), w1, w2=w2, b2=torch.ones(4, device=DEVICE))
    sw2, sw1 = torch.randn(1, 2, 3, 3, device=DEVICE), torch.randn(1, 1, 3, 3, device=DEVICE)
    with pytest.raises(ValueError, match="spatial_weight"):
        AF.attention(x, spatial=SpatialSpec(maps="half_sum"), sw=sw2)  # one map needs [1, 1, k, k]
    with pytest.raises(ValueError, match="norm=False"):
        AF.attention(x, spatial=SpatialSpec(), sw=sw2, bn_weight=one)
    with pytest.raises(ValueError, match="together"):
        AF.attention(x, spatial=SpatialSpec(norm=True), sw=sw2, bn_mean=one)
    with pytest.raises(ValueError, match="does not name"):
        attnfused.FusedAttention(torch.nn.Linear(2, 2), attnfused.ChannelSpec(), {"w1": "nope.weight"})
    assert AF.attention(x, spatial=SpatialSpec(maps="half_sum"), sw=sw1).shape == x.shape
