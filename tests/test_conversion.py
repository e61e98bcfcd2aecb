"""tfcompress.convert for every target, run in the real interpreters; pre-check errors."""

import larq as lq
import numpy as np
import pytest

import tfcompress
from tfcompress._keras import keras
from tfcompress.conversion.edgetpu import check_operator
from tfcompress.conversion.micro import parse_c_array
from tfcompress.errors import ConversionError

# Tolerances vs Keras per target, on outputs of a softmax (values in [0, 1]):
# float32 is exact up to float rounding; float16 weights lose ~3 decimal digits; int8/dynamic/
# int16x8 quantize activations or weights, so outputs move by a few quantization steps.
TOLERANCE = {"float32": 1e-5, "float16": 5e-3, "dynamic": 0.05, "int8": 0.08, "int16x8": 0.03,
             "micro": 0.08, "edgetpu": 0.08}


@pytest.fixture(scope="module")
def cnn_and_data(mnist_small):
    (x, y), (xt, yt) = mnist_small
    keras.utils.set_random_seed(7)
    m = keras.Sequential([
        keras.Input((28, 28, 1)), keras.layers.Conv2D(8, 3, activation="relu"),
        keras.layers.MaxPool2D(2), keras.layers.Conv2D(16, 3, activation="relu"),
        keras.layers.MaxPool2D(2), keras.layers.Flatten(), keras.layers.Dense(10),
        keras.layers.Softmax(),
    ])
    m.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
    m.fit(x[:2000], y[:2000], epochs=1, batch_size=64, verbose=0)
    return m, x[:300], xt[:200], yt[:200]


@pytest.mark.parametrize("target", ["float32", "float16", "dynamic", "int8", "int16x8", "micro",
                                    "edgetpu"])
def test_every_tflite_target_runs_in_its_interpreter(cnn_and_data, target):
    model, calib, xt, yt = cnn_and_data
    res = tfcompress.convert(model, target=target, representative_data=calib)
    rep = res.verify(xt, yt, latency_runs=3)
    assert rep.runtime == ("micro" if target == "micro" else "litert")
    assert rep.max_abs_diff <= TOLERANCE[target], rep
    assert rep.agreement >= 0.95, rep
    assert rep.size_bytes == res.size == len(res.flatbuffer)
    if target in ("int8", "micro", "edgetpu"):
        assert res.inputs[0]["dtype"] == "int8" and res.outputs[0]["dtype"] == "int8"
        assert res.inputs[0]["scale"] > 0
    if target == "float16":
        assert "DEQUANTIZE" in res.ops          # fp16 weights dequantized at load


def test_micro_c_array_and_arena(cnn_and_data, tmp_path):
    model, calib, xt, _ = cnn_and_data
    res = tfcompress.convert(model, target="micro", representative_data=calib)
    src = res.extras["files"]["model_data.cc"]
    header = res.extras["files"]["model_data.h"]
    assert parse_c_array(src) == res.flatbuffer
    assert f"g_model_len = {res.size};" in src and "alignas(16)" in src
    assert "resolver.AddConv2D();" in header and "resolver.AddFullyConnected();" in header
    arena = res.extras["arena_bytes"]
    assert 1024 <= arena <= 10 * res.size + 65536
    # The measured arena really suffices, and half of it does not.
    from tflite_micro.python.tflite_micro import runtime as micro
    it = micro.Interpreter.from_bytes(res.flatbuffer, arena_size=arena)
    it.set_input(np.zeros((1, 28, 28, 1), np.int8), 0)
    it.invoke()
    with pytest.raises(RuntimeError):
        small = micro.Interpreter.from_bytes(res.flatbuffer, arena_size=arena // 2)
        small.set_input(np.zeros((1, 28, 28, 1), np.int8), 0)
        small.invoke()
    path = res.save(tmp_path / "m.tflite")
    assert (tmp_path / "model_data.cc").read_text() == src and path.read_bytes() == res.flatbuffer


def test_edgetpu_report_maps_cnn_and_flags_float_ops(cnn_and_data):
    model, calib, _, _ = cnn_and_data
    res = tfcompress.convert(model, target="edgetpu", representative_data=calib)
    report = res.extras["edgetpu"]
    assert report["fully_mapped"], report["text"]
    assert report["mapped"] == report["total"] == len(res.ops)
    float_op = {"op": "CONV_2D", "fused_activation": "NONE",
                "inputs": [{"name": "x", "dtype": "float32", "shape": (1, 8, 8, 3), "constant": False}],
                "outputs": []}
    assert "8-bit" in check_operator(float_op)
    assert "not in the Edge TPU" in check_operator({"op": "EXP", "inputs": [], "outputs": []})
    rank5 = {"op": "ADD", "fused_activation": "NONE", "outputs": [], "inputs": [
        {"name": "t", "dtype": "int8", "shape": (1, 2, 3, 4, 5), "constant": False}]}
    assert "3 innermost" in check_operator(rank5)
    pool = {"op": "MAX_POOL_2D", "fused_activation": "RELU", "inputs": [], "outputs": []}
    assert "fused RELU" in check_operator(pool)


def test_lce_target_binary_model_matches_keras(rng):
    m = keras.Sequential([
        keras.Input((12, 12, 3)),
        lq.layers.QuantConv2D(32, 3, kernel_quantizer="ste_sign", use_bias=False),
        keras.layers.BatchNormalization(),
        lq.layers.QuantConv2D(64, 3, input_quantizer="ste_sign", kernel_quantizer="ste_sign",
                              kernel_constraint="weight_clip", use_bias=False, pad_values=1.0,
                              padding="same"),
        keras.layers.BatchNormalization(), keras.layers.GlobalAveragePooling2D(),
    ])
    x = rng.uniform(-1, 1, (20, 12, 12, 3)).astype(np.float32)
    res = tfcompress.convert(m, target="lce")
    assert "LceBconv2d" in res.custom_ops and "LceQuantize" in res.custom_ops
    rep = res.verify(x, latency_runs=2)
    assert rep.max_abs_diff <= 1e-4


def test_conversion_is_deterministic(cnn_and_data):
    model, calib, _, _ = cnn_and_data
    for target in ("float32", "int8"):
        a = tfcompress.convert(model, target=target, representative_data=calib).flatbuffer
        b = tfcompress.convert(model, target=target, representative_data=calib).flatbuffer
        assert a == b, target


# ------------------------------------------------------------------------- pre-check errors
def _binary_model():
    return keras.Sequential([keras.Input((8, 8, 16)), lq.layers.QuantConv2D(
        16, 3, input_quantizer="ste_sign", kernel_quantizer="ste_sign", name="bconv")])


@pytest.mark.parametrize("target", ["float32", "int8", "micro", "edgetpu"])
def test_binary_layers_refused_for_non_lce_targets(target):
    with pytest.raises(ConversionError, match=r"'bconv'.*target='lce'"):
        tfcompress.convert(_binary_model(), target=target, representative_data=np.zeros((2, 8, 8, 16)))


def test_low_bit_layers_refused_for_int8_unless_allowed(rng):
    m = keras.Sequential([keras.Input((8, 8, 3)), lq.layers.QuantConv2D(
        4, 3, kernel_quantizer=lq.quantizers.DoReFa(k_bit=4, mode="weights"), name="q4")])
    x = rng.uniform(-1, 1, (10, 8, 8, 3)).astype(np.float32)
    with pytest.raises(ConversionError, match=r"'q4' kernel=4 bits.*allow_low_bit=True"):
        tfcompress.convert(m, target="int8", representative_data=x)
    res = tfcompress.convert(m, target="int8", representative_data=x, allow_low_bit=True)
    assert res.size > 0


def test_mixed_float16_refused():
    policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="half")])
    finally:
        keras.mixed_precision.set_global_policy(policy)
    with pytest.raises(ConversionError, match=r"'half'.*mixed_float16"):
        tfcompress.convert(m, target="float32")


def test_option_errors(cnn_and_data):
    model = cnn_and_data[0]
    with pytest.raises(ConversionError, match="Unknown target 'tpu'.*edgetpu"):
        tfcompress.convert(model, target="tpu")
    with pytest.raises(ConversionError, match="needs representative_data"):
        tfcompress.convert(model, target="int8")
    with pytest.raises(ConversionError, match="io_type"):
        tfcompress.convert(model, target="float32", io_type="int8")
    with pytest.raises(ConversionError, match="shape"):
        tfcompress.convert(model, target="int8", representative_data=np.zeros((3, 5, 5, 1)))
    with pytest.raises(ConversionError, match="NaN"):
        tfcompress.convert(model, target="int8", representative_data=np.full((3, 28, 28, 1), np.nan))
    with pytest.raises(TypeError):
        tfcompress.convert(model, "float32")         # keyword-only
    with pytest.raises(ConversionError, match="tf_keras Model"):
        tfcompress.convert(object(), target="float32")
