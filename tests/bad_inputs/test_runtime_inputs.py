"""The runtime refuses inputs it would otherwise run to a confident wrong answer (issue 15,
part 1), is safe to share between threads, and ``runtime="auto"`` picks tfcompress's kernels
for LCE files (issue 18, part 1).

References: hand-written LiteRT loops (``ai_edge_litert`` directly) and single-threaded runs.
"""

import threading
import warnings

import numpy as np
import pytest

import tfcompress
from tfcompress import _kernels
from tfcompress._keras import keras
from tfcompress.errors import InterpreterError
from tfcompress.runtime import Interpreter, auto_runtime, quantize
from tfcompress.runtime.verify import verify

L = keras.layers


@pytest.fixture(scope="module")
def conv():
    """A small NHWC conv classifier on 8x8x2 inputs: float32 and full-int8 files."""
    keras.utils.set_random_seed(5)
    m = keras.Sequential([keras.Input((8, 8, 2)), L.Conv2D(4, 3, activation="relu"),
                          L.Flatten(), L.Dense(5)])
    x = np.random.default_rng(5).uniform(-1, 1, (64, 8, 8, 2)).astype(np.float32)
    return {"model": m, "x": x,
            "float32": tfcompress.convert(m, target="float32").flatbuffer,
            "int8": tfcompress.convert(m, target="int8", representative_data=x).flatbuffer}


@pytest.fixture(scope="module")
def binary():
    import larq as lq

    keras.utils.set_random_seed(6)
    m = keras.Sequential([
        keras.Input((6, 6, 32)),
        lq.layers.QuantConv2D(32, 3, input_quantizer="ste_sign", kernel_quantizer="ste_sign",
                              kernel_constraint="weight_clip", use_bias=False, padding="same"),
        L.BatchNormalization(), L.GlobalAveragePooling2D(), L.Dense(3)])
    return tfcompress.convert(m, target="lce")


def _litert_reference(fb, x):
    """The raw LiteRT loop: set_tensor / invoke / get_tensor, quantizing by hand."""
    from ai_edge_litert.interpreter import Interpreter as LiteRT

    it = LiteRT(model_content=fb)
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    outs = []
    for row in x:
        row = row[None]
        if inp["dtype"] == np.int8:
            s, z = inp["quantization"]
            row = np.clip(np.round(row / s + z), -128, 127).astype(np.int8)
        it.set_tensor(inp["index"], row)
        it.invoke()
        o = it.get_tensor(out["index"])[0]
        if out["dtype"] == np.int8:
            s, z = out["quantization"]
            o = (o.astype(np.float64) - z) * s
        outs.append(o)
    return np.asarray(outs, np.float32)


# ------------------------------------------------------------------------------- shapes
def test_nchw_input_is_refused_naming_both_shapes(conv):
    it = Interpreter(conv["float32"])
    nchw = conv["x"][:1].transpose(0, 3, 1, 2)                  # (1, 2, 8, 8)
    with pytest.raises(ValueError) as err:
        it.run(nchw)
    msg = str(err.value)
    assert "(1, 8, 8, 2)" in msg and "(1, 2, 8, 8)" in msg and "transpose" in msg
    with pytest.raises(ValueError, match=r"\(1, 8, 8, 2\).*\(4, 2, 8, 8\).*transpose"):
        it.predict(conv["x"][:4].transpose(0, 3, 1, 2))
    with pytest.raises(ValueError, match=r"\(1, 2, 8, 8\)"):
        it.latency(nchw, runs=1, warmup=0)


@pytest.mark.parametrize("shape", [(128,), (8, 16), (1, 8, 8, 2, 1), (2, 8, 8, 2), (8, 8)])
def test_other_shapes_are_never_reshaped(conv, shape):
    it = Interpreter(conv["float32"])
    x = np.zeros(shape, np.float32)
    with pytest.raises(ValueError, match=r"has shape \(1, 8, 8, 2\).*nothing is reshaped"):
        it.run(x)


def test_missing_batch_axis_is_added(conv):
    it = Interpreter(conv["float32"])
    x = conv["x"][3]
    np.testing.assert_array_equal(it.run(x), it.run(x[None]))
    ref = _litert_reference(conv["float32"], conv["x"][:8])
    np.testing.assert_array_equal(it.predict(conv["x"][:8]), ref)


def test_predict_refuses_examples_of_the_wrong_shape(conv):
    it = Interpreter(conv["float32"])
    with pytest.raises(ValueError, match=r"x of shape \(4, 8, 8\)"):
        it.predict(np.zeros((4, 8, 8), np.float32))          # e.g. a channel axis missing


# ------------------------------------------------------------------------------- dtypes
def test_uint8_pixels_to_an_int8_model_are_refused_not_wrapped(conv):
    it = Interpreter(conv["int8"])
    assert it.inputs[0]["dtype"] == "int8"
    pixels = np.full((1, 8, 8, 2), 200, np.uint8)               # astype(int8) would be -56
    with pytest.raises(ValueError) as err:
        it.run(pixels)
    msg = str(err.value)
    assert "int8" in msg and "uint8" in msg and "quantized" in msg
    with pytest.raises(ValueError, match="uint8"):
        it.predict(np.full((3, 8, 8, 2), 200, np.uint8))
    with pytest.raises(ValueError, match="int16"):
        it.run(np.zeros((1, 8, 8, 2), np.int16))


def test_int8_model_takes_floats_quantized_or_int8_values_as_they_are(conv):
    it = Interpreter(conv["int8"])
    spec = it.inputs[0]
    x = conv["x"][:10]
    ref = _litert_reference(conv["int8"], x)
    np.testing.assert_allclose(it.predict(x), ref, rtol=0, atol=1e-6)
    q = quantize(x, "int8", spec["scale"], spec["zero_point"])
    np.testing.assert_allclose(it.predict(q), ref, rtol=0, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.int64, np.bool_])
def test_integers_to_a_float_model_are_refused(conv, dtype):
    it = Interpreter(conv["float32"])
    with pytest.raises(ValueError, match=r"float32.*(integer array|got).*scale them"):
        it.run(np.ones((1, 8, 8, 2), dtype))


def test_float64_is_cast_to_a_float32_model(conv):
    it = Interpreter(conv["float32"])
    x = conv["x"][:1]
    np.testing.assert_array_equal(it.run(x.astype(np.float64)), it.run(x))


def test_non_numeric_input_is_refused(conv):
    it = Interpreter(conv["float32"])
    with pytest.raises(ValueError, match="numeric"):
        it.run(np.full((1, 8, 8, 2), "a"))


@pytest.fixture(scope="module")
def ids_model():
    keras.utils.set_random_seed(7)
    m = keras.Sequential([keras.Input((4,), dtype="int32"), L.Embedding(10, 3), L.Flatten()])
    return m, tfcompress.convert(m, target="float32").flatbuffer


def test_plain_integer_inputs_must_fit_their_type(ids_model):
    m, fb = ids_model
    it = Interpreter(fb)
    assert it.inputs[0]["dtype"] == "int32" and it.inputs[0]["scale"] is None
    ids = np.array([[1, 2, 3, 9]])
    np.testing.assert_allclose(it.run(ids.astype(np.int64)), m.predict(ids, verbose=0), atol=1e-6)
    with pytest.raises(ValueError, match=r"int32 \(range .*2199023255552"):
        it.run(np.array([[1, 2, 3, 2**41]], np.int64))
    with pytest.raises(ValueError, match="holds integers"):
        it.run(ids.astype(np.float32))


# ------------------------------------------------------------------------ NaN, Inf, empty
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_and_inf_refused_in_run_predict_latency(conv, bad):
    for fb in (conv["float32"], conv["int8"]):
        it = Interpreter(fb)
        x = conv["x"][:5].copy()
        x[3, 2, 1, 0] = bad
        with pytest.raises(ValueError, match="NaN or infinite"):
            it.run(x[3])
        with pytest.raises(ValueError, match=r"NaN or infinite.*example 3"):
            it.predict(x)
        with pytest.raises(ValueError, match="NaN or infinite"):
            it.latency(x[3:4], runs=1)
        with pytest.raises(ValueError, match="NaN or infinite"):
            verify(fb, x, latency_runs=0)


def test_empty_inputs_give_clear_errors(conv):
    it = Interpreter(conv["float32"])
    with pytest.raises(ValueError, match=r"empty \(shape \(0, 8, 8, 2\)\)"):
        it.run(np.zeros((0, 8, 8, 2), np.float32))
    with pytest.raises(ValueError, match="no examples"):
        it.predict(np.zeros((0, 8, 8, 2), np.float32))
    with pytest.raises(ValueError, match="at least one example"):
        verify(conv["float32"], np.zeros((0, 8, 8, 2), np.float32))
    with pytest.raises(ValueError, match=r"1 input\(s\); got 0"):
        it.run([])
    with pytest.raises(ValueError, match=r"1 input\(s\); got 2"):
        it.run([conv["x"][0], conv["x"][0]])
    with pytest.raises(ValueError, match="10 examples but y has 3"):
        verify(conv["float32"], conv["x"][:10], np.zeros(3), latency_runs=0)


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_threads=0), "num_threads"), (dict(num_threads=True), "num_threads"),
    (dict(runtime="gpu"), "Unknown runtime"), (dict(lce_kernel="fast"), "Unknown lce_kernel"),
    (dict(isa="avx2"), "only applies to runtime='tfcompress'"),
])
def test_bad_options(conv, kwargs, message):
    with pytest.raises(ValueError, match=message):
        Interpreter(conv["float32"], **kwargs)


def test_bad_latency_options(conv):
    it = Interpreter(conv["float32"])
    for kwargs in (dict(runs=0), dict(runs=2.5), dict(warmup=-1)):
        with pytest.raises(ValueError, match="runs|warmup"):
            it.latency(conv["x"][:1], **kwargs)


# ------------------------------------------------------------------------------ threads
def _hammer(it, xs, threads=4, per_thread=200):
    """``threads`` threads, each running its own ``per_thread`` examples on ``it`` at once."""
    results = [None] * threads
    errors = []
    start = threading.Barrier(threads)

    def work(t):
        try:
            start.wait()
            results[t] = [it.run(xs[t * per_thread + i])[0] for i in range(per_thread)]
        except Exception as err:  # surfaced below with the thread's number
            errors.append((t, err))

    pool = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for th in pool:
        th.start()
    for th in pool:
        th.join(timeout=300)
    assert not errors, errors
    return np.concatenate([np.stack(r) for r in results])


@pytest.mark.parametrize("kind", ["float32", "int8"])
def test_four_threads_share_one_litert_interpreter(conv, kind):
    xs = np.random.default_rng(11).uniform(-1, 1, (800, 8, 8, 2)).astype(np.float32)
    it = Interpreter(conv[kind], num_threads=2)
    single = Interpreter(conv[kind], num_threads=2).predict(xs)
    got = _hammer(it, xs)
    np.testing.assert_array_equal(got, single)     # every output, bit for bit


@pytest.mark.parametrize("runtime", ["tfcompress", "lce"])
def test_four_threads_share_one_binary_interpreter(binary, runtime):
    if runtime == "tfcompress" and not _kernels.available():
        pytest.skip(f"tfcompress kernels unavailable: {_kernels.unavailable_reason()}")
    xs = np.random.default_rng(12).uniform(-1, 1, (800, 6, 6, 32)).astype(np.float32)
    # Two kernel threads: the delegate's thread pool is shared by the four callers.
    it = Interpreter(binary.flatbuffer, runtime=runtime, num_threads=2)
    single = Interpreter(binary.flatbuffer, runtime=runtime, num_threads=2).predict(xs)
    np.testing.assert_array_equal(_hammer(it, xs), single)


# --------------------------------------------------------------------- runtime="auto"
def test_auto_picks_tfcompress_kernels_for_lce_files(binary, conv):
    x = np.random.default_rng(13).uniform(-1, 1, (20, 6, 6, 32)).astype(np.float32)
    want = "tfcompress" if _kernels.available() else "lce"
    it = Interpreter(binary.flatbuffer)
    assert it.runtime == want == auto_runtime(binary.flatbuffer) == binary.runtime
    assert it.fallback is None
    rep = binary.verify(x, latency_runs=2)
    assert rep.runtime == want and rep.max_abs_diff < 1e-4
    assert verify(binary.flatbuffer, x, latency_runs=0).runtime == want
    # Both runtimes reproduce Keras up to float rounding (outputs of size ~1-10; LCE's
    # kernels measured 2.4e-5 off here, tfcompress's 1.4e-6).
    keras_out = binary.model.predict(x, verbose=0)
    np.testing.assert_allclose(it.predict(x), keras_out, rtol=0, atol=1e-4)
    lce = Interpreter(binary.flatbuffer, runtime="lce").predict(x)
    np.testing.assert_allclose(lce, keras_out, rtol=0, atol=1e-4)
    assert auto_runtime(conv["float32"]) == "litert" == Interpreter(conv["float32"]).runtime


def test_auto_uses_lce_when_the_kernels_are_not_built(binary, monkeypatch):
    monkeypatch.setattr(_kernels, "available", lambda: False)
    monkeypatch.setattr(_kernels, "unavailable_reason", lambda: "not built (test)")
    assert Interpreter(binary.flatbuffer).runtime == "lce"
    with pytest.raises(InterpreterError, match=r"unavailable: not built \(test\)"):
        Interpreter(binary.flatbuffer, runtime="tfcompress")
    with pytest.raises(ValueError, match="runs in 'lce', as runtime='auto' picked"):
        Interpreter(binary.flatbuffer, isa="avx2")


def test_auto_falls_back_to_lce_with_a_warning_when_the_kernels_refuse(binary, monkeypatch):
    if not _kernels.available():
        pytest.skip("the fallback starts from built kernels")

    def refuse(**_):
        raise RuntimeError("ai-edge-litert 9.9 is not the tested version (test)")

    monkeypatch.setattr(_kernels, "delegate", refuse)
    with pytest.warns(RuntimeWarning, match="uses LCE's interpreter.*9.9"):
        it = Interpreter(binary.flatbuffer)
    assert it.runtime == "lce" and "9.9" in it.fallback and it.kernel == "indirect_bgemm"
    with pytest.raises(InterpreterError, match="9.9"):
        Interpreter(binary.flatbuffer, runtime="tfcompress")     # explicit: no fallback
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Interpreter(binary.flatbuffer, runtime="lce")               # nothing to warn about
