import numpy as np
import pytest

import tfcompress
from tfcompress._keras import keras
from tfcompress.errors import InterpreterError
from tfcompress.runtime import Interpreter, dequantize, inspect_flatbuffer, quantize


@pytest.fixture(scope="module")
def dense_model():
    keras.utils.set_random_seed(3)
    m = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="relu"),
                          keras.layers.Dense(4, activation="softmax")])
    return m


def test_quantize_roundtrip():
    x = np.array([-1.0, -0.5, 0.0, 0.26, 1.0])
    q = quantize(x, "int8", 1 / 127, 0)
    assert q.dtype == np.int8 and q.tolist() == [-127, -64, 0, 33, 127]
    np.testing.assert_allclose(dequantize(q, 1 / 127, 0), x, atol=0.5 / 127 + 1e-7)
    assert quantize(np.array([5.0]), "int8", 0.01, 3).tolist() == [127]   # saturates


def test_float_model_matches_keras_and_inspects(dense_model, rng):
    x = rng.normal(size=(20, 6)).astype(np.float32)
    res = tfcompress.convert(dense_model, target="float32")
    it = Interpreter(res.flatbuffer)
    np.testing.assert_allclose(it.predict(x), dense_model.predict(x, verbose=0), atol=1e-6)
    info = inspect_flatbuffer(res.flatbuffer)
    assert info.op_counts.get("FULLY_CONNECTED") == 2
    assert info.inputs[0]["shape"] == (1, 6) and info.inputs[0]["dtype"] == "float32"
    assert info.custom_ops == []


def test_verify_equals_hand_written_loop(dense_model, rng):
    from ai_edge_litert.interpreter import Interpreter as LiteRT

    x = rng.normal(size=(50, 6)).astype(np.float32)
    y = rng.integers(0, 4, size=50)
    res = tfcompress.convert(dense_model, target="int8", representative_data=x)
    rep = res.verify(x, y, latency_runs=5)
    it = LiteRT(model_content=res.flatbuffer)
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    s, z = inp["quantization"]
    preds = []
    for row in x:
        q = np.clip(np.round(row / s + z), -128, 127).astype(np.int8)[None]
        it.set_tensor(inp["index"], q)
        it.invoke()
        preds.append(it.get_tensor(out["index"])[0].argmax())
    assert rep.accuracy == pytest.approx(float(np.mean(np.array(preds) == y)))
    assert rep.runtime == "litert" and rep.latency["runs"] == 5
    assert 0 < rep.max_abs_diff < 0.1 and rep.agreement >= 0.9


def test_corrupt_and_truncated_files(dense_model, tmp_path):
    fb = tfcompress.convert(dense_model, target="float32").flatbuffer
    with pytest.raises(InterpreterError, match="TFL3"):
        Interpreter(b"not a model at all")
    with pytest.raises(InterpreterError, match="Corrupt or truncated|could not load"):
        Interpreter(fb[: len(fb) // 3])
    with pytest.raises(InterpreterError, match="does not exist"):
        Interpreter(tmp_path / "missing.tflite")


def test_wrong_input_shape_and_nan(dense_model):
    it = Interpreter(tfcompress.convert(dense_model, target="float32").flatbuffer)
    with pytest.raises(ValueError, match=r"has shape \(1, 6\); got an array of shape \(1, 5\)"):
        it.run(np.zeros((1, 5), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        it.predict(np.full((2, 6), np.nan, np.float32))
    with pytest.raises(ValueError, match="Unknown runtime"):
        Interpreter(it.model, runtime="gpu")


def test_lce_model_refused_by_litert():
    import larq as lq

    m = keras.Sequential([keras.Input((6, 6, 32)), lq.layers.QuantConv2D(
        32, 3, input_quantizer="ste_sign", kernel_quantizer="ste_sign", use_bias=False)])
    res = tfcompress.convert(m, target="lce")
    assert any(op.startswith("Lce") for op in res.custom_ops)
    with pytest.raises(InterpreterError, match="runtime='lce'"):
        Interpreter(res.flatbuffer, runtime="litert")
    x = np.random.default_rng(1).uniform(-1, 1, (3, 6, 6, 32)).astype(np.float32)
    rep = res.verify(x, latency_runs=3, runtime="lce")
    assert rep.runtime == "lce" and rep.kernel == "indirect_bgemm"
    assert rep.max_abs_diff < 1e-4
    # runtime="auto" (the default) runs LCE files in tfcompress's kernels when they are built.
    from tfcompress import _kernels

    auto = res.verify(x, latency_runs=3)
    assert auto.runtime == ("tfcompress" if _kernels.available() else "lce")
    assert auto.max_abs_diff < 1e-4
