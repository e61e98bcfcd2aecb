"""LceQuantize, LceDequantize, LceBMaxPool2d and int8 I/O against LCE's interpreter."""

import numpy as np
import pytest

from kernel_models import BINARY, L, build, convert, inputs, kernels_or_skip, keras, lq, run_both


def _isas():
    return kernels_or_skip().supported_isas()


@pytest.mark.parametrize("channels", [1, 31, 32, 33, 64, 100])
def test_quantize_dequantize_roundtrip_matches_lce(channels):
    isas = _isas()
    model = keras.Sequential([keras.Input((5, 3, channels)), L.Activation(lq.quantizers.SteSign())])
    fb = convert(model)
    x = inputs((5, 3, channels), 2, np.random.default_rng(channels))
    flat = x.reshape(-1)
    flat[:6] = [-0.0, 0.0, np.nan, -np.nan, -np.inf, np.inf][: flat.size]
    from tfcompress.runtime import Interpreter

    ref = Interpreter(fb, runtime="lce", lce_kernel="reference")
    for isa in isas:
        ours = Interpreter(fb, runtime="tfcompress", isa=isa)
        for example in x:   # invoke(): the unchecked path (run/predict refuse NaN/inf inputs)
            np.testing.assert_array_equal(ours.invoke([example[None]])[0],
                                          ref.invoke([example[None]])[0], err_msg=isa)


POOLS = [
    dict(h=10, w=10, cin=40, cout=48, k=3, stride=1, dilation=1, padding="same", pad_values=1,
         pool=2, pool_stride=2, pool_padding="valid"),
    dict(h=11, w=9, cin=20, cout=70, k=3, stride=1, dilation=1, padding="valid", pad_values=0,
         pool=3, pool_stride=2, pool_padding="same"),
    dict(h=8, w=12, cin=64, cout=33, k=1, stride=1, dilation=1, padding="same", pad_values=1,
         pool=(2, 3), pool_stride=1, pool_padding="same"),
]


@pytest.mark.parametrize("cfg", POOLS,
                         ids=lambda c: f"pool{c['pool']}s{c['pool_stride']}-{c['pool_padding']}")
def test_bmaxpool_is_bit_exact(cfg):
    isas = _isas()
    fb, _ = build(cfg, output="pool")
    from tfcompress.runtime import inspect_flatbuffer

    assert "LceBMaxPool2d" in inspect_flatbuffer(fb).ops
    x = inputs((cfg["h"], cfg["w"], cfg["cin"]), 3, np.random.default_rng(4))
    for isa in isas:
        ours, ref = run_both(fb, x, isa=isa)
        np.testing.assert_array_equal(ours, ref, err_msg=isa)


INT8 = [
    dict(h=8, w=8, cin=40, cout=20, k=3, stride=1, dilation=1, padding="same", pad_values=0),
    dict(h=9, w=7, cin=64, cout=37, k=3, stride=2, dilation=1, padding="valid", pad_values=0),
]


@pytest.mark.parametrize("cfg", INT8, ids=lambda c: f"{c['padding']}-s{c['stride']}")
def test_int8_io_matches_lce(cfg):
    # int8 input (LceQuantize compares with the zero point) and int8 conv output (rounded half
    # away from zero from a float): the float products may differ in the last ulp from LCE's
    # pre-scaled ones, so a value exactly at a rounding tie may land one step away.
    isas = _isas()
    fb, _ = build(cfg, output="float", int8=True)
    from tfcompress.runtime import inspect_flatbuffer

    info = inspect_flatbuffer(fb)
    assert info.inputs[0]["dtype"] == "int8" and info.outputs[0]["dtype"] == "int8"
    step = info.outputs[0]["scale"]
    x = inputs((cfg["h"], cfg["w"], cfg["cin"]), 3, np.random.default_rng(5), scale=1.0)
    for isa in isas:
        ours, ref = run_both(fb, x, isa=isa)
        diff = np.abs(ours - ref) / step
        assert diff.max() <= 1.0 + 1e-3 and (diff > 0.5).mean() < 0.01, (isa, diff.max())


def test_int8_sign_output_is_exact():
    isas = _isas()
    cfg = dict(h=6, w=6, cin=40, cout=40, k=3, stride=1, dilation=1, padding="same", pad_values=1)
    fb, _ = build(cfg, output="sign", int8=True)
    x = inputs((6, 6, 40), 2, np.random.default_rng(6), scale=1.0)
    for isa in isas:
        ours, ref = run_both(fb, x, isa=isa)
        np.testing.assert_array_equal(ours, ref, err_msg=isa)


def test_multi_layer_binary_net_matches_lce():
    # Float conv -> quantize -> bitpacked conv -> bmaxpool -> conv -> float head, as in a real
    # BNN, at 1 and 2 threads.
    kernels_or_skip()
    from tfcompress.runtime import Interpreter

    keras.utils.set_random_seed(7)
    b = dict(BINARY, padding="same", pad_values=1.0)
    model = keras.Sequential([
        keras.Input((16, 16, 3)),
        lq.layers.QuantConv2D(32, 3, padding="same", kernel_quantizer="ste_sign", use_bias=False),
        L.BatchNormalization(), lq.layers.QuantConv2D(64, 3, **b), L.BatchNormalization(),
        L.MaxPool2D(2), lq.layers.QuantConv2D(64, 3, **b), L.BatchNormalization(),
        L.GlobalAveragePooling2D(), L.Dense(10),
    ])
    fb = convert(model)
    x = inputs((16, 16, 3), 4, np.random.default_rng(8))
    ref = Interpreter(fb, runtime="lce", lce_kernel="reference").predict(x)
    for threads in (1, 2):
        ours = Interpreter(fb, runtime="tfcompress", num_threads=threads).predict(x)
        assert np.abs(ours - ref).max() <= 1e-5 * np.abs(ref).max()


def test_dense_on_a_sequence_keeps_its_dims():
    # A Dense on a (time, features) input converts to FULLY_CONNECTED with keep_num_dims: the
    # output is [1, T, units], not [T, units] (the 1-bit WaveNet's head). Regression: the
    # kernels refused it and runtime="auto" fell back to LCE's interpreter.
    kernels_or_skip()
    from tfcompress.runtime import Interpreter

    keras.utils.set_random_seed(3)
    model = keras.Sequential([
        keras.Input((14, 8, 4)),
        lq.layers.QuantConv2D(16, 3, padding="same", **BINARY), L.BatchNormalization(),
        L.Reshape((14, 8 * 16)), L.Dense(40, activation="relu"),
    ])
    fb = convert(model)
    x = inputs((14, 8, 4), 3, np.random.default_rng(4))
    ref = Interpreter(fb, runtime="lce", lce_kernel="reference").predict(x)
    ours = Interpreter(fb, runtime="tfcompress").predict(x)
    assert ours.shape == ref.shape == (3, 14, 40)
    assert np.abs(ours - ref).max() <= 1e-5 * np.abs(ref).max()
