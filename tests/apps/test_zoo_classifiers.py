"""Model zoo classifiers: build, one training step, .keras round trip, LCE conversion checked in
LCE's interpreter, and reference values (torchvision parameter counts, hand-computed
amplitudes and losses)."""

import inspect

import numpy as np
import pytest

import tfcompress
from tfcompress import models
from tfcompress._keras import keras, tf

TINY = dict(input_shape=(16, 16, 3), num_classes=5, classifier_activation=None)
TINY_ARGS = {
    "BinaryResNet": dict(depth=10, width=8), "BiRealNet": dict(depth=10, width=8),
    "XNORNet": dict(width=8), "DABNN": dict(depth=10, width=8, reduction=2),
    "ASDANet": dict(depth=10, width=8),
}
# binary convolutions LCE must turn into LceBconv2d (ResNet-10: 4 stages x 1 block)
EXPECTED_BCONV = {"BinaryResNet": 8, "BiRealNet": 8, "XNORNet": 6, "DABNN": 8, "ASDANet": 8}


@pytest.mark.parametrize("name", sorted(models.CLASSIFIERS))
def test_constructor_is_keyword_only(name):
    params = inspect.signature(models.CLASSIFIERS[name]).parameters.values()
    assert all(p.kind == p.KEYWORD_ONLY for p in params)
    with pytest.raises(TypeError):
        models.CLASSIFIERS[name]((32, 32, 3))


@pytest.mark.parametrize("name", sorted(models.CLASSIFIERS))
def test_trains_saves_and_converts_with_lce(name, tmp_path):
    model = models.CLASSIFIERS[name](**TINY, **TINY_ARGS[name])
    assert isinstance(model, keras.Model) and model.output_shape == (None, 5)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 16, 16, 3)).astype(np.float32)
    y = rng.integers(0, 5, 8)
    model.compile(keras.optimizers.Adam(1e-2),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = [w.numpy().copy() for w in model.trainable_weights]
    hist = model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert np.isfinite(hist.history["loss"][0])
    assert any(not np.array_equal(b, w.numpy()) for b, w in zip(before, model.trainable_weights))

    model.save(tmp_path / "m.keras")
    again = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(again.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)

    res = tfcompress.convert(model, target="lce")
    assert res.info.op_counts.get("LceBconv2d") == EXPECTED_BCONV[name], res.info.op_counts
    rep = res.verify(x, latency_runs=0)
    # Same binary arithmetic in both; the float parts differ only by summation order (~1e-5).
    assert rep.max_abs_diff <= 1e-3, rep


@pytest.mark.parametrize("ctor, depth, expected", [
    (models.BiRealNet, 18, 11_689_512), (models.BinaryResNet, 18, 11_689_512),
    (models.BiRealNet, 34, 21_797_672),
])
def test_imagenet_variant_matches_resnet_parameter_count(ctor, depth, expected):
    # torchvision resnet18 / resnet34 have 11,689,512 / 21,797,672 parameters; Bi-Real keeps
    # ResNet's layer shapes (its shortcut 1x1 conv moves behind an AvgPool, same size).
    model = ctor(imagenet=True, depth=depth)
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable == expected
    assert model.input_shape == (None, 224, 224, 3) and model.output_shape == (None, 1000)
    assert model.get_layer("stem_conv").kernel_size == (7, 7)
    assert model.get_layer("block1_add").output.shape[1:] == (56, 56, 64)


def test_xnornet_imagenet_is_alexnet_shaped():
    model = models.XNORNet(imagenet=True, width=12)      # 1/8 of AlexNet's channels
    assert model.get_layer("conv1").kernel_size == (11, 11)
    assert model.get_layer("fc1").kernel_size == (6, 6)  # binary FC over the whole 6x6 map
    assert model.get_layer("fc1").output.shape[1:] == (1, 1, 512)
    assert model.output_shape == (None, 1000)
    assert sum(isinstance(l, tfcompress.layers.XNORConv2D) for l in model.layers) == 6


def test_errors_name_the_cause():
    with pytest.raises(ValueError, match="depth must be one of"):
        models.BiRealNet(depth=20)
    with pytest.raises(ValueError, match="too small"):
        models.BinaryResNet(input_shape=(4, 4, 3))
    with pytest.raises(ValueError, match="width"):
        models.DABNN(width=0)
    with pytest.raises(ValueError, match="kernel_quantizer=None"):
        models.ASDAConv2D(4, 3, kernel_quantizer="ste_sign")


def test_daconv_amplitudes_match_numpy_reference():
    layer = models.DAConv2D(6, 3, padding="same", reduction=2)
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 5, 5, 4)).astype(np.float32)
    layer(x)
    for w in (layer.se_kernel1, layer.se_kernel2, layer.spatial_kernel):
        w.assign(rng.normal(size=w.shape).astype(np.float32))
    out = layer(x).numpy()
    # Reference: binary conv with numpy signs (sign(0) = +1, +1 padding) times the amplitudes.
    sx = np.pad(np.where(x >= 0, 1.0, -1.0), ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=1.0)
    sw = np.where(layer.kernel.numpy() >= 0, 1.0, -1.0)
    conv = np.einsum("nhwijc,ijco->nhwo", np.lib.stride_tricks.sliding_window_view(
        sx, (3, 3), axis=(1, 2)).transpose(0, 1, 2, 4, 5, 3), sw)
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    g = np.abs(x).mean(axis=(1, 2))
    alpha = sig(np.maximum(g @ layer.se_kernel1.numpy(), 0) @ layer.se_kernel2.numpy())
    m = np.pad(np.abs(x).mean(-1), ((0, 0), (1, 1), (1, 1)))
    k = layer.spatial_kernel.numpy()[:, :, 0, 0]
    windows = np.lib.stride_tricks.sliding_window_view(m, (3, 3), axis=(1, 2))
    beta = sig(np.einsum("nhwij,ij->nhw", windows, k))
    np.testing.assert_allclose(out, conv * alpha[:, None, None, :] * beta[..., None], rtol=1e-4, atol=1e-5)


def test_asda_kernel_loss_and_gradients_follow_the_card():
    layer = models.ASDAConv2D(3, 1, suppression=0.5, amplitude_decay=0.25)
    x = np.random.default_rng(0).normal(size=(1, 2, 2, 2)).astype(np.float32)
    layer(x)
    w = np.array([[0.5, -0.2, 0.1], [-0.4, 0.3, -2.0]], np.float32).reshape(1, 1, 2, 3)
    layer.kernel.assign(w)
    a = np.array([0.3, 0.2, 0.1], np.float32)
    layer.amplitude.assign(a)
    s = np.where(w >= 0, 1.0, -1.0)
    np.testing.assert_allclose(layer.binary_kernel().numpy(), a * s)
    expected = 0.5 * np.sum((w - a * s) ** 2) + 0.25 * np.sum(a ** 2)
    np.testing.assert_allclose(float(layer.losses[0]), expected, rtol=1e-6)
    with tf.GradientTape() as tape:
        loss = layer.suppression_loss()
    gw, ga = tape.gradient(loss, [layer.kernel, layer.amplitude])
    np.testing.assert_allclose(gw.numpy(), 2 * 0.5 * (w - a * s), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(ga.numpy(), (-2 * 0.5 * s * (w - a * s)).sum(axis=(0, 1, 2)) + 2 * 0.25 * a,
                               rtol=1e-5)
    # task-loss gradient: a * 1{|W| <= 1} for W (STE, the -2.0 weight is outside the clip)
    with tf.GradientTape() as tape:
        k = layer.binary_kernel()
    gk = tape.gradient(k, layer.kernel).numpy()
    np.testing.assert_allclose(gk, a * (np.abs(w) <= 1), rtol=1e-6)
