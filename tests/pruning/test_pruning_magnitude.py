"""Magnitude pruning on TF-MOT: masks vs the quantile rule, 2:4, larq + LCE, sparse TFLite."""

import larq as lq
import numpy as np
import pytest

import tfcompress
import tensorflow_model_optimization as tfmot
from tfcompress._keras import keras
from tfcompress.errors import ConversionError, PruningError
from tfcompress.pruning import unstructured as mag
from tfcompress.pruning.prunable import PrunableQuantConv2D, PrunableQuantDense, make_prunable
from tfcompress.pruning.schedules import ConstantSparsity, PolynomialDecay


def small_cnn():
    return keras.Sequential([
        keras.Input((28, 28, 1)), keras.layers.Conv2D(8, 3, activation="relu"),
        keras.layers.MaxPool2D(2), keras.layers.Conv2D(16, 3, activation="relu"),
        keras.layers.MaxPool2D(2), keras.layers.Flatten(),
        keras.layers.Dense(32, activation="relu"), keras.layers.Dense(10),
    ])


def compile_(m):
    m.compile(keras.optimizers.Adam(1e-3),
              keras.losses.SparseCategoricalCrossentropy(from_logits=True), ["accuracy"])
    return m


def test_magnitude_masks_follow_the_quantile_rule_and_schedule(mnist_small):
    (x, y), _ = mnist_small
    model = small_cnn()
    before = {layer.name: [w.copy() for w in layer.get_weights()] for layer in model.layers}
    sched = PolynomialDecay(0.0, 0.75, begin_step=0, end_step=20, frequency=10)
    pruned = compile_(mag.magnitude(model, 0.75, schedule=sched, exclude=["conv2d"]))
    hist = []

    class Probe(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            wrapper = self.model.get_layer("prune_low_magnitude_dense")
            hist.append(1.0 - float(wrapper.pruning_vars[0][1].numpy().mean()))

    pruned.fit(x[:64 * 25], y[:64 * 25], batch_size=64, epochs=1, verbose=0,
               callbacks=[mag.UpdatePruningStep(), Probe()])
    # TF-MOT's first batch is step 1: masks change at steps 10 and 20 only.
    expected = [0.0] * 9 + [sched(10)[1]] * 10 + [0.75] * 6
    np.testing.assert_allclose(hist, expected, atol=1.5 / 2048)
    final = mag.strip(pruned)
    sp = mag.kernel_sparsity(final)
    assert sp["conv2d"] == 0.0                          # excluded layer stays dense
    for name in ("conv2d_1", "dense", "dense_1"):
        assert sp[name] == pytest.approx(0.75, abs=0.01)
    # The user's model is untouched.
    for layer in model.layers:
        for a, b in zip(before[layer.name], layer.get_weights()):
            np.testing.assert_array_equal(a, b)


def test_mask_is_the_top_magnitude_quantile():
    """One pruning update on fixed weights equals the numpy quantile rule exactly."""
    model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(32, use_bias=False)])
    w = np.random.default_rng(0).normal(size=(16, 32)).astype("float32")
    model.set_weights([w])
    pruned = mag.magnitude(model, 0.6, schedule=ConstantSparsity(0.6, 0, frequency=1))
    pruned.compile("sgd", "mse")
    x = np.zeros((4, 16), "float32")                    # zero input: zero gradient, w unchanged
    pruned.fit(x, np.zeros((4, 32), "float32"), batch_size=4, epochs=1, verbose=0,
               callbacks=[mag.UpdatePruningStep()])
    got = mag.strip(pruned).get_weights()[0]
    keep = int(round(w.size * (1 - 0.6)))              # TF-MOT keeps round(n (1 - s)) weights
    threshold = np.sort(np.abs(w).ravel())[::-1][keep - 1]
    np.testing.assert_array_equal(got, np.where(np.abs(w) >= threshold, w, 0))
    assert (got == 0).mean() == pytest.approx(0.6, abs=1 / w.size)


def test_two_four_sparsity(mnist_small):
    (x, y), _ = mnist_small
    pruned = compile_(mag.magnitude(small_cnn(), m_by_n=(2, 4), exclude=["conv2d"]))
    pruned.fit(x[:256], y[:256], batch_size=64, epochs=1, verbose=0,
               callbacks=[mag.UpdatePruningStep()])
    final = mag.strip(pruned)
    for name in ("conv2d_1", "dense", "dense_1"):
        w = final.get_layer(name).kernel.numpy()
        # TF-MOT groups 4 consecutive weights along the input-channel axis.
        groups = np.moveaxis(w, -2, -1).reshape(-1, 4)
        assert ((groups != 0).sum(-1) <= 2).all(), name
    with pytest.raises(PruningError, match="contradicts"):
        mag.magnitude(small_cnn(), 0.7, m_by_n=(2, 4))
    with pytest.raises(PruningError, match="m_by_n"):
        mag.magnitude(small_cnn(), m_by_n=(4, 2))


def test_forgetting_update_pruning_step_names_the_callback(mnist_small):
    (x, y), _ = mnist_small
    pruned = compile_(mag.magnitude(small_cnn(), 0.5))
    with pytest.raises(Exception, match="UpdatePruningStep") as info:
        pruned.fit(x[:64], y[:64], batch_size=64, epochs=1, verbose=0)
    assert "callback" in str(info.value)


def test_bad_options_are_clear_errors():
    with pytest.raises(PruningError, match=r"\[0, 1\)"):
        mag.magnitude(small_cnn(), 1.0)
    with pytest.raises(PruningError, match="ends at sparsity"):
        mag.magnitude(small_cnn(), 0.5, schedule=ConstantSparsity(0.8))
    with pytest.raises(PruningError, match="unknown layer"):
        mag.magnitude(small_cnn(), 0.5, exclude=["nope"])
    with pytest.raises(PruningError, match="no pruning wrappers"):
        mag.strip(small_cnn())
    with pytest.raises(PruningError, match="multiple of frequency"):
        mag.magnitude(small_cnn(), 0.5, schedule=PolynomialDecay(0, 0.5, 0, 25))


def test_plain_larq_layer_is_refused_by_tfmot_but_prunable_subclass_works():
    layer = lq.layers.QuantConv2D(4, 3, kernel_quantizer="ste_sign")
    with pytest.raises(ValueError, match="supported layer"):
        tfmot.sparsity.keras.prune_low_magnitude(layer)
    wrapped = tfmot.sparsity.keras.prune_low_magnitude(
        PrunableQuantConv2D(4, 3, kernel_quantizer="ste_sign"))
    assert wrapped.layer.__class__ is PrunableQuantConv2D


def binary_model():
    binary = dict(input_quantizer="ste_sign", kernel_quantizer="ste_sign",
                  kernel_constraint="weight_clip", use_bias=False)
    return keras.Sequential([
        keras.Input((28, 28, 1)),
        lq.layers.QuantConv2D(16, 3, use_bias=False),   # float first layer
        keras.layers.MaxPool2D(2), keras.layers.BatchNormalization(scale=False),
        lq.layers.QuantConv2D(32, 3, **binary), keras.layers.MaxPool2D(2),
        keras.layers.BatchNormalization(scale=False), keras.layers.Flatten(),
        lq.layers.QuantDense(10, **binary), keras.layers.BatchNormalization(scale=False),
        keras.layers.Activation("softmax"),
    ])


def test_pruned_larq_model_converts_with_lce(mnist_small, tmp_path):
    (x, y), (xt, yt) = mnist_small
    model = binary_model()
    copy = make_prunable(model)
    assert [type(layer) for layer in copy.layers if "quant" in layer.name] == [
        PrunableQuantConv2D, PrunableQuantConv2D, PrunableQuantDense]
    for a, b in zip(model.get_weights(), copy.get_weights()):
        np.testing.assert_array_equal(a, b)
    pruned = mag.magnitude(model, 0.5)
    pruned.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
    pruned.fit(x[:640], y[:640], batch_size=64, epochs=1, verbose=0,
               callbacks=[mag.UpdatePruningStep()])
    final = mag.strip(pruned)
    sp = mag.kernel_sparsity(final)
    assert all(v == pytest.approx(0.5, abs=0.02) for v in sp.values()), sp
    # Save/load round trip of the stripped model with the prunable larq subclasses.
    final.save(tmp_path / "m.keras")
    again = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(again.predict(xt[:32], verbose=0),
                               final.predict(xt[:32], verbose=0), atol=1e-6)
    res = tfcompress.convert(final, target="lce")
    assert any(op.startswith("Lce") for op in res.custom_ops), res.ops
    rep = res.verify(xt[:200], yt[:200], latency_runs=2)
    # LCE's float first layer and binary convs reproduce Keras up to float rounding
    # (softmax outputs in [0, 1]).
    # runtime="auto": tfcompress's kernels when built, else LCE's interpreter.
    assert rep.runtime in ("tfcompress", "lce") and rep.max_abs_diff < 1e-3, rep
    assert rep.agreement >= 0.99, rep


@pytest.fixture(scope="module")
def pruned_90(mnist_small):
    (x, y), _ = mnist_small
    keras.utils.set_random_seed(3)
    pruned = compile_(mag.magnitude(small_cnn(), 0.9, schedule=PolynomialDecay(
        0.0, 0.9, begin_step=0, end_step=40, frequency=10)))
    pruned.fit(x[:64 * 50], y[:64 * 50], batch_size=64, epochs=1, verbose=0,
               callbacks=[mag.UpdatePruningStep()])
    return mag.strip(pruned)


def test_sparse_float_tflite_is_smaller_and_exact(pruned_90, mnist_small):
    (x, _), (xt, yt) = mnist_small
    sparse = tfcompress.convert_sparse(pruned_90)
    dense = tfcompress.convert(pruned_90, target="float32")
    assert "DENSIFY" in sparse.ops and "DENSIFY" not in dense.ops
    assert sparse.size < 0.4 * dense.size, (sparse.size, dense.size)
    rep = sparse.verify(xt[:200], yt[:200], latency_runs=2)
    # Sparse encoding is lossless: densified float weights equal the Keras weights.
    assert rep.max_abs_diff < 1e-4 and rep.agreement == 1.0, rep


def test_sparse_int8_tflite_matches_dense_int8(pruned_90, mnist_small):
    """The integer sparse file runs in ai-edge-litert's builtin kernels (XNNPACK refuses
    DENSIFY'd integer weights) and gives the same outputs as the dense int8 file."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    (x, _), (xt, _) = mnist_small
    sparse = tfcompress.convert_sparse(pruned_90, target="int8", representative_data=x[:200])
    dense = tfcompress.convert(pruned_90, target="int8", representative_data=x[:200])
    assert "DENSIFY" in sparse.ops and sparse.size < dense.size
    dense_out = dense.interpreter().predict(xt[:50])
    it = Interpreter(model_content=sparse.flatbuffer, num_threads=1,
                     experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    s_in, z_in = inp["quantization"]
    s_out, z_out = out["quantization"]
    got = []
    for e in xt[:50]:
        q = np.clip(np.round(e[None] / s_in + z_in), -128, 127).astype(np.int8)
        it.set_tensor(inp["index"], q)
        it.invoke()
        got.append((it.get_tensor(out["index"]).astype(np.float32) - z_out) * s_out)
    # Same weights, same calibration: outputs agree to within one output quantization step.
    assert np.abs(np.concatenate(got) - dense_out).max() <= s_out * 1.01
    with pytest.raises(ConversionError, match="representative_data"):
        tfcompress.convert_sparse(pruned_90, target="int8")
