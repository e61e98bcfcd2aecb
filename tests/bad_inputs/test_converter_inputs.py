"""Bad input to the converter and the training entry points: every refusal names the layer
(or the object) and the way out (issue 15, part 4)."""

import numpy as np
import pytest

import tfcompress
from tfcompress import keras
from tfcompress.errors import ConversionError

tf = pytest.importorskip("tensorflow")


@pytest.fixture(scope="module")
def rnn_model():
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((8, 4)), keras.layers.LSTM(6, name="my_lstm"),
                             keras.layers.Dense(2, name="head")], name="rnn")


@pytest.fixture(scope="module")
def keras3_model():
    keras3 = pytest.importorskip("keras")
    if not keras3.__version__.startswith("3"):
        pytest.skip("Keras 3 is not installed")
    return keras3.Sequential([keras3.Input((4,)), keras3.layers.Dense(2)])


def _x(shape):
    return np.random.default_rng(0).random(shape).astype(np.float32)


@pytest.mark.parametrize("target", ["int8", "lce"])
def test_lstm_names_the_layer_and_the_fix(rnn_model, target):
    with pytest.raises(ConversionError) as err:
        tfcompress.convert(rnn_model, target=target, representative_data=_x((16, 8, 4)))
    msg = str(err.value)
    assert "layer 'my_lstm' (LSTM)" in msg
    assert "TensorListReserve" in msg
    assert "unroll=True" in msg and "batch_size=1" in msg


def test_the_advised_fix_really_converts():
    keras.utils.set_random_seed(0)
    fixed = keras.Sequential([keras.Input((8, 4)), keras.layers.LSTM(6, unroll=True),
                              keras.layers.Dense(2)])
    x = _x((3, 8, 4))
    for target in ("float32", "int8"):
        res = tfcompress.convert(fixed, target=target, representative_data=x, io_type="float32")
        rep = res.verify(x, latency_runs=0)
        # float32: the same maths op by op; int8: 8-bit activations through 8 LSTM steps
        assert rep.max_abs_diff < (1e-5 if target == "float32" else 0.02), (target, rep)


def test_python_inside_a_lambda_names_the_layer():
    inp = keras.Input((4,))
    h = keras.layers.Lambda(lambda v: tf.numpy_function(lambda a: a * 2, [v], tf.float32),
                            name="np_lambda")(inp)
    h.set_shape((None, 4))
    model = keras.Model(inp, keras.layers.Dense(2)(h))
    with pytest.raises(ConversionError) as err:
        tfcompress.convert(model, target="float32")
    msg = str(err.value)
    assert "layer 'np_lambda' (Lambda) -> op PyFunc" in msg
    assert "write the computation with TensorFlow ops" in msg


class PyLayer(keras.layers.Layer):
    """A custom layer whose call runs Python (tf.py_function): not exportable."""

    def call(self, x):
        y = tf.py_function(lambda a: a + 1.0, [x], tf.float32)
        y.set_shape(x.shape)
        return y


def test_custom_layer_is_named_and_float32_is_not_offered_when_it_fails_too():
    inp = keras.Input((4,))
    model = keras.Model(inp, keras.layers.Dense(2)(PyLayer(name="my_custom")(inp)))
    with pytest.raises(ConversionError) as err:
        tfcompress.convert(model, target="dynamic")
    msg = str(err.value)
    assert "layer 'my_custom' (PyLayer)" in msg and "EagerPyFunc" in msg
    assert "does convert this model" not in msg      # float32 fails too: nothing to offer


def test_failure_specific_to_a_target_says_which_target_works(monkeypatch):
    """When only the requested target fails, the message names a target that converts (found
    by converting, not guessed)."""
    from tfcompress.conversion import diagnose

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="d")])
    msg = diagnose.explain_failure(model, "int8", "error: 'tf.Foo' op is not supported")
    assert "op(s) Foo (not traced back to a layer)" in msg
    assert "Target 'float32' does convert this model" in msg


def test_mixed_precision_policy_names_the_layer():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="half")])
    finally:
        keras.mixed_precision.set_global_policy(None)     # back to the default (floatx)
    with pytest.raises(ConversionError, match="Layer 'half' uses the 'mixed_float16'"):
        tfcompress.convert(model, target="float32")


def test_keras3_model_refused_everywhere_with_the_way_out(keras3_model):
    from tfcompress import distill, lowrank, mixed_precision
    from tfcompress.layers import PCNNTrainer

    calls = [
        (lambda: tfcompress.convert(keras3_model, target="float32"), ConversionError,
         "tfcompress.convert"),
        (lambda: mixed_precision.ompq(keras3_model, _x((4, 4)), size_budget_kb=1), ValueError,
         "ompq"),
        (lambda: lowrank.decompose(keras3_model, rank_ratio=0.5), ValueError,
         "lowrank.decompose"),
        (lambda: distill.Distiller(keras3_model, keras3_model), TypeError, "Distiller"),
        (lambda: PCNNTrainer(keras3_model), TypeError, "PCNNTrainer"),
    ]
    for call, error, where in calls:
        with pytest.raises(error) as err:
            call()
        msg = str(err.value)
        assert msg.startswith(where) and "Keras 3 model" in msg, msg
        assert "from tfcompress import keras" in msg


def test_stateful_fused_lstm_starts_every_example_fresh():
    """TFLite's fused LSTM (a fixed batch size) keeps its state in variable tensors between
    invocations; without a reset, the second example would continue the first one's sequence
    (seen: 0.067 off Keras). The Interpreter resets them before every example."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8, 4), batch_size=1), keras.layers.LSTM(6),
                              keras.layers.Dense(2)])
    res = tfcompress.convert(model, target="float32")
    assert "UNIDIRECTIONAL_SEQUENCE_LSTM" in res.info.op_counts and res.info.variable_tensors
    x = _x((4, 8, 4))
    keras_out = np.concatenate([model(x[i:i + 1]).numpy() for i in range(len(x))])
    for runtime in ("litert", "micro"):
        got = tfcompress.Interpreter(res.flatbuffer, runtime=runtime).predict(x)
        np.testing.assert_allclose(got, keras_out, atol=1e-5, err_msg=runtime)
    with pytest.raises(tfcompress.InterpreterError, match="cannot reset them"):
        tfcompress.Interpreter(res.flatbuffer, runtime="lce")
