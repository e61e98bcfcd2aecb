"""Binary-input layers with ternary / k-bit kernels convert for LCE as sums of binary
convolutions (one LceBconv2d per bit plane) and equal the Keras layer in both runtimes."""

import numpy as np
import pytest

import tfcompress
from tfcompress import layers as QL
from tfcompress import quantizers as Q
from tfcompress._keras import keras
from tfcompress.conversion.bitplanes import decompose, find_candidates


@pytest.mark.parametrize("levels,planes,const", [
    ((-1, 0, 1), 2, False), ((-3, -1, 1, 3), 2, False), ((-7, -1, 5), 3, False),
    ((-2, -1, 0, 1), 2, True), ((-4, 0, 3), 3, True), ((0, 1, 2, 3), 2, True), ((5,), 3, False),
])
def test_decompose_reconstructs(levels, planes, const, rng):
    q = rng.choice(levels, size=(3, 3, 4, 5))
    c0, w, p = decompose(q)
    assert len(p) == planes and bool(c0) == const
    np.testing.assert_array_equal(c0 + sum(wi * pi for wi, pi in zip(w, p)), q)
    assert all(set(np.unique(pi)) <= {-1, 1} for pi in p)


def _block(kernel_quantizer, pad_values=0.0):
    inp = keras.Input((12, 12, 8))
    h = keras.layers.BatchNormalization()(inp)
    h = QL.QuantConv2D(16, 3, padding="same", pad_values=pad_values, input_quantizer="ste_sign",
                       kernel_quantizer=kernel_quantizer, use_bias=False, name="tern")(h)
    h = keras.layers.BatchNormalization(name="after")(h)
    return keras.Model(inp, h)


@pytest.mark.parametrize("name,quantizer,pad", [
    ("trq", lambda: Q.TRQ(residuals=1, per_channel=True), 0.0),
    ("trq_pad1", lambda: Q.TRQ(residuals=1, per_channel=True), 1.0),
    ("trq2", lambda: Q.TRQ(residuals=2), 0.0),
    ("ste_tern", Q.ste_tern, 0.0),
    ("lsq2", lambda: Q.LSQ(bits=2, per_channel=True), 0.0),
])
def test_layer_as_sum_of_bconvs_matches_keras(name, quantizer, pad, mnist_lowbit, rng):
    (x, _), _ = mnist_lowbit
    # real inputs: 12x12 crops of MNIST digits, 8 channels from a fixed random projection
    proj = rng.normal(size=(1, 8)).astype(np.float32)
    xs = (x[:64, 8:20, 8:20, :] @ proj + rng.normal(0, 0.3, (64, 12, 12, 8))).astype(np.float32)
    model = _block(quantizer(), pad)
    model(xs[:64], training=True)
    for bn in (model.layers[1], model.get_layer("after")):
        bn.set_weights([rng.uniform(0.5, 1.5, w.shape).astype(np.float32) if i != 2 else
                        rng.normal(0, 0.2, w.shape).astype(np.float32) for i, w in enumerate(bn.get_weights())])
    if name == "lsq2":   # make every level of the 2-bit grid occur (-2 needs a constant plane)
        step = model.get_layer("tern").kernel_quantizer.step
        step.assign(np.full(step.shape, 0.3 * np.abs(model.get_layer("tern").kernel.numpy()).max() / 2,
                            np.float32))
    assert find_candidates(model) == ["tern"]
    res = tfcompress.convert(model, target="lce")
    info = res.extras["bitplanes"][0]
    assert info["layer"] == "tern" and info["folded_batchnorm"] == "after"
    assert res.info.op_counts["LceBconv2d"] == info["planes"] >= 2
    if name == "lsq2":
        assert info["constant_plane"] and info["planes"] == 3
    assert "CONV_2D" not in res.info.op_counts
    ref = model.predict(xs, verbose=0)
    for runtime in ("lce", "tfcompress"):
        out = tfcompress.runtime.Interpreter(res.flatbuffer, runtime=runtime).predict(xs)
        # float32 sums of up to 72 +-1 products per plane: agreement to ~1e-6 of the scale
        assert np.abs(out - ref).max() <= 1e-4, (runtime, np.abs(out - ref).max())


@pytest.mark.slow
def test_trq_binary_activation_model_on_mnist(mnist_lowbit):
    """A real-data model: float stem, two TRQ-ternary / binary-input layers, float head."""
    (x, y), (xt, yt) = mnist_lowbit
    keras.utils.set_random_seed(0)
    inp = keras.Input((28, 28, 1))
    h = keras.layers.Conv2D(16, 3, padding="same", use_bias=False)(inp)
    h = keras.layers.BatchNormalization(momentum=0.9)(h)
    for i in range(2):
        h = QL.QuantConv2D(32, 3, padding="same", use_bias=False, input_quantizer="ste_sign",
                           kernel_quantizer=Q.TRQ(residuals=1, per_channel=True), name=f"trq{i}")(h)
        h = keras.layers.BatchNormalization(momentum=0.9)(h)
        h = keras.layers.MaxPool2D(2)(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    model = keras.Model(inp, keras.layers.Dense(10, activation="softmax")(h))
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy", ["accuracy"])
    model.fit(x[:4000], y[:4000], batch_size=64, epochs=1, verbose=0)
    res = tfcompress.convert(model, target="lce")
    assert res.info.op_counts["LceBconv2d"] == 4
    for runtime in ("lce", "tfcompress"):
        rep = res.verify(xt, yt, runtime=runtime, latency_runs=0)
        assert rep.agreement >= 0.995 and abs(rep.accuracy - rep.keras_accuracy) <= 0.003, rep
