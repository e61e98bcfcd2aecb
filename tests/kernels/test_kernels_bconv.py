"""LceBconv2d (with LceQuantize before it) against LCE's interpreter, every ISA level.

Float outputs: LCE folds the back-transformation into its multiplier and bias
(``float(2*count) * -mul + (bias + K*mul)``) while these kernels compute
``float(K - 2*count) * mul + bias``; both are single float32 roundings of the same integer, so
they agree to a few ulp of the largest output: the tolerance is 1e-5 of max |output|.
Bitpacked outputs (a sign after the conv) are compared exactly (they are +-1 after
LceDequantize).
"""

import numpy as np
import pytest

from kernel_models import build, inputs, kernels_or_skip, run_both


def _configs(n, seed):
    """Randomized conv attributes: odd/even channel counts (partial 32-bit words), kernel
    sizes 1-5, strides, dilations, SAME/VALID and both pad values."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        k = int(rng.choice([1, 2, 3, 5]))
        stride = int(rng.choice([1, 2]))
        dilation = int(rng.choice([1, 2])) if stride == 1 and k > 1 else 1
        out.append(dict(
            h=int(rng.integers(5, 12)), w=int(rng.integers(5, 12)),
            cin=int(rng.choice([3, 20, 32, 40, 64, 70, 100])),
            cout=int(rng.choice([8, 13, 32, 40, 72])),
            k=k, stride=stride, dilation=dilation,
            padding=str(rng.choice(["same", "valid"])), pad_values=int(rng.choice([0, 1])),
        ))
    # Fixed corners: 1x1, stride 2 with zero padding, large channel count (several u64 words).
    out += [
        dict(h=6, w=7, cin=33, cout=9, k=1, stride=1, dilation=1, padding="valid", pad_values=0),
        dict(h=9, w=8, cin=64, cout=64, k=3, stride=2, dilation=1, padding="same", pad_values=0),
        dict(h=6, w=6, cin=256, cout=40, k=3, stride=1, dilation=1, padding="same", pad_values=1),
    ]
    return out


FLOAT_CONFIGS = _configs(8, seed=11)
SIGN_CONFIGS = [dict(c, pad_values=1) for c in _configs(5, seed=12)]
RELU_CONFIGS = [dict(c, pad_values=1, activation="relu") for c in _configs(3, seed=13)]


def _isas():
    return kernels_or_skip().supported_isas()


def _cid(cfg):
    return "{h}x{w}x{cin}-{cout}-k{k}s{stride}d{dilation}-{padding}-p{pad_values}".format(**cfg)


@pytest.mark.parametrize("cfg", FLOAT_CONFIGS + RELU_CONFIGS, ids=_cid)
def test_bconv_float_output_matches_lce(cfg):
    isas = _isas()
    fb, _ = build(cfg, output="float")
    x = inputs((cfg["h"], cfg["w"], cfg["cin"]), 3, np.random.default_rng(0))
    for isa in isas:
        ours, ref = run_both(fb, x, isa=isa)
        assert ours.shape == ref.shape
        tol = 1e-5 * max(1.0, float(np.abs(ref).max()))
        assert np.abs(ours - ref).max() <= tol, (isa, np.abs(ours - ref).max())


@pytest.mark.parametrize("cfg", SIGN_CONFIGS, ids=_cid)
def test_bconv_bitpacked_output_is_bit_exact(cfg):
    isas = _isas()
    fb, _ = build(cfg, output="sign")
    from tfcompress.runtime import inspect_flatbuffer

    ops = inspect_flatbuffer(fb).ops
    assert ops == ["LceQuantize", "LceBconv2d", "LceDequantize"], ops   # bitpacked conv output
    x = inputs((cfg["h"], cfg["w"], cfg["cin"]), 3, np.random.default_rng(1))
    for isa in isas:
        ours, ref = run_both(fb, x, isa=isa)
        np.testing.assert_array_equal(ours, ref, err_msg=isa)


@pytest.mark.parametrize("threads", [2, 3])
def test_bconv_threads_give_identical_results(threads):
    kernels_or_skip()
    from tfcompress.runtime import Interpreter

    cfg = dict(h=20, w=20, cin=64, cout=96, k=3, stride=1, dilation=1, padding="same",
               pad_values=0)
    fb, _ = build(cfg, output="float")
    x = inputs((20, 20, 64), 2, np.random.default_rng(2))
    one = Interpreter(fb, runtime="tfcompress", num_threads=1).predict(x)
    many = Interpreter(fb, runtime="tfcompress", num_threads=threads).predict(x)
    np.testing.assert_array_equal(one, many)


def test_grouped_bconv_matches_keras():
    # LCE 0.16's own interpreter refuses grouped binary convolutions, so the reference here is
    # the Keras model itself (float32 conv of +-1 values, then BatchNorm): tolerance 1e-4 of
    # max |output| for the different summation order and BN folding.
    kernels_or_skip()
    from tfcompress.runtime import Interpreter

    cfg = dict(h=9, w=9, cin=128, cout=48, k=3, stride=1, dilation=1, padding="same",
               pad_values=1, groups=2)
    fb, model = build(cfg, output="float")
    x = inputs((9, 9, 128), 2, np.random.default_rng(3))
    ref = model.predict(x, verbose=0)
    for isa in _isas():
        ours = Interpreter(fb, runtime="tfcompress", isa=isa).predict(x)
        assert np.abs(ours - ref).max() <= 1e-4 * np.abs(ref).max(), isa


# Shapes for the AVX-512 direct bit GEMM (no im2col copy: whole 64-bit words per tap, one
# group, no horizontal dilation): wide rows so that the 32-pixel chunks straddle image rows
# and mix border pixels (im2col) with interior runs (direct), vertical dilation, VALID and
# 1x1 filters.
DIRECT_CONFIGS = [
    dict(h=13, w=37, cin=64, cout=40, k=3, stride=1, dilation=1, padding="same", pad_values=0),
    dict(h=11, w=19, cin=128, cout=72, k=3, stride=2, dilation=1, padding="same", pad_values=1),
    dict(h=9, w=23, cin=192, cout=16, k=5, stride=1, dilation=(2, 1), padding="same",
         pad_values=0),
    dict(h=7, w=45, cin=64, cout=24, k=3, stride=1, dilation=1, padding="valid", pad_values=0),
    dict(h=6, w=33, cin=128, cout=8, k=1, stride=1, dilation=1, padding="valid", pad_values=0),
]


@pytest.mark.parametrize("cfg", DIRECT_CONFIGS, ids=_cid)
def test_direct_bgemm_equals_im2col_and_lce(cfg):
    isas = _isas()
    if "avx512" not in isas or "avx2" not in isas:
        pytest.skip("the direct bit GEMM is AVX-512 only; this CPU cannot compare it with AVX2")
    fb, _ = build(cfg, output="float")
    x = inputs((cfg["h"], cfg["w"], cfg["cin"]), 2, np.random.default_rng(4))
    direct, ref = run_both(fb, x, isa="avx512")
    im2col, _ = run_both(fb, x, isa="avx2")
    # same counts, same float operations: bit-identical to the im2col path
    np.testing.assert_array_equal(direct, im2col)
    tol = 1e-5 * max(1.0, float(np.abs(ref).max()))
    assert np.abs(direct - ref).max() <= tol
