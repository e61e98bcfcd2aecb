"""tfcompress.layers against references: plain Keras layers fed np.sign, closed-form gradients,
and LCE's interpreter."""

import inspect

import larq as lq
import numpy as np
import pytest
import tensorflow_model_optimization as tfmot

import tfcompress
from tfcompress import layers as L
from tfcompress._keras import keras, tf

RNG = np.random.default_rng(0)


def _x(shape, seed=0):
    return np.random.default_rng(seed).normal(0, 1, shape).astype(np.float32)


@pytest.mark.parametrize("ours,theirs", [
    (L.QuantConv2D, lq.layers.QuantConv2D), (L.QuantDense, lq.layers.QuantDense),
    (L.QuantConv1D, lq.layers.QuantConv1D),
    (L.QuantDepthwiseConv2D, lq.layers.QuantDepthwiseConv2D),
    (L.QuantSeparableConv2D, lq.layers.QuantSeparableConv2D)])
def test_signature_equals_larq(ours, theirs):
    assert inspect.signature(ours) == inspect.signature(theirs)


@pytest.mark.parametrize("cls,base,changed,new", [
    (L.XNORConv2D, keras.layers.Conv2D, {"kernel_constraint"}, {"input_scaling"}),
    (L.XNORDense, keras.layers.Dense, {"kernel_constraint"}, {"input_scaling"}),
    (L.SAConv2D, keras.layers.Conv2D, {"use_bias", "kernel_constraint"}, {"tau_init", "tau_floor"}),
    (L.PCNNConv2D, keras.layers.Conv2D, {"use_bias", "kernel_constraint"},
     {"projections", "binarize_input", "mode", "projection_initializer"}),
    (L.RBConv2D, keras.layers.Conv2D, {"use_bias", "kernel_constraint"}, set()),
    (L.BONNConv2D, keras.layers.Conv2D, {"use_bias", "kernel_constraint"}, set()),
    (L.ASDAConv2D, keras.layers.Conv2D, {"use_bias", "kernel_constraint"},
     {"suppression", "amplitude_decay"}),
    (L.DAConv2D, keras.layers.Conv2D, {"use_bias", "kernel_constraint"}, {"reduction"}),
])
def test_method_layers_keep_keras_signature(cls, base, changed, new):
    ours = inspect.signature(cls).parameters
    keras_params = inspect.signature(base).parameters
    for name, p in keras_params.items():
        assert name in ours, name
        if name not in changed and p.default is not inspect.Parameter.empty:
            assert ours[name].default == p.default, name
    extra = set(ours) - set(keras_params)
    assert new <= extra
    assert extra - new <= {"input_quantizer", "kernel_quantizer", "pad_values"}


def test_ste_sign_layer_equals_plain_conv_on_signs():
    x = _x((3, 9, 9, 5))
    layer = L.QuantConv2D(7, 3, input_quantizer="ste_sign", kernel_quantizer="ste_sign",
                          kernel_constraint="weight_clip", use_bias=False)
    y = layer(x).numpy()
    plain = keras.layers.Conv2D(7, 3, use_bias=False)
    plain.build(x.shape)
    plain.set_weights([np.sign(layer.kernel.numpy())])
    np.testing.assert_allclose(y, plain(np.sign(x)).numpy(), atol=1e-5)
    dense = L.QuantDense(4, input_quantizer="ste_sign", kernel_quantizer="ste_sign", use_bias=False)
    xd = _x((5, 6), 1)
    yd = dense(xd).numpy()
    np.testing.assert_allclose(yd, np.sign(xd) @ np.sign(dense.kernel.numpy()), atol=1e-5)


def test_quantizer_aliases_resolve_to_objects_with_precision():
    layer = L.QuantConv2D(4, 3, input_quantizer="lsq", kernel_quantizer="ste_sign")
    assert layer.input_quantizer.precision == 4 and layer.kernel_quantizer.precision == 1
    with pytest.raises(ValueError, match="Valid aliases"):
        L.QuantConv2D(4, 3, kernel_quantizer="sine")


def test_prunable_protocol_vs_plain_larq():
    m = keras.Sequential([keras.Input((8, 8, 3)), L.QuantConv2D(4, 3, kernel_quantizer="ste_sign",
                                                                kernel_constraint="weight_clip")])
    pruned = tfmot.sparsity.keras.prune_low_magnitude(m)
    assert pruned.layers[0].layer.get_prunable_weights() == [pruned.layers[0].layer.kernel]
    plain = keras.Sequential([keras.Input((8, 8, 3)), lq.layers.QuantConv2D(4, 3)])
    with pytest.raises(ValueError, match="supported layer"):
        tfmot.sparsity.keras.prune_low_magnitude(plain)


def test_xnor_conv_equals_reference():
    x = _x((2, 8, 8, 6))
    layer = L.XNORConv2D(5, 3, padding="same", use_bias=False)
    y = layer(x).numpy()
    w = layer.kernel.numpy()
    alpha = np.abs(w).mean(axis=(0, 1, 2))
    ref = tf.nn.conv2d(np.sign(x), (alpha * np.sign(w)).astype(np.float32), 1, "SAME").numpy()
    a = np.abs(x).mean(-1, keepdims=True)
    k = tf.nn.conv2d(a, np.full((3, 3, 1, 1), 1 / 9, np.float32), 1, "SAME").numpy()
    np.testing.assert_allclose(y, ref * k, rtol=1e-4, atol=1e-5)


def test_sa_conv_forward_and_state_aware_gradient():
    x = _x((2, 7, 7, 4))
    layer = L.SAConv2D(6, 3, padding="valid")
    layer.build(x.shape)
    layer.tau_pos.assign(np.linspace(0.5, 2.0, 6).astype(np.float32))
    layer.tau_neg.assign(np.linspace(1.5, 0.2, 6).astype(np.float32))
    w_hat = layer.effective_kernel().numpy()
    ref = tf.nn.conv2d(np.sign(x) + (x == 0), w_hat, 1, "VALID").numpy()
    np.testing.assert_allclose(layer(x).numpy(), ref, rtol=1e-4, atol=1e-4)
    dy = _x(ref.shape, 2)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(x) * dy)
    g_w, g_pos, g_neg = tape.gradient(loss, [layer.kernel, layer.tau_pos, layer.tau_neg])
    wt = tf.constant(w_hat)
    with tf.GradientTape() as tape:
        tape.watch(wt)
        loss2 = tf.reduce_sum(tf.nn.conv2d(np.sign(x), wt, 1, "VALID") * dy)
    g_hat = tape.gradient(loss2, wt).numpy()
    w = layer.kernel.numpy()
    tau = np.where(w >= 0, layer.tau_pos.numpy(), layer.tau_neg.numpy())
    np.testing.assert_allclose(g_w.numpy(), g_hat * tau * (np.abs(w) <= 1), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(g_pos.numpy(), (g_hat * (w >= 0)).sum((0, 1, 2)), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(g_neg.numpy(), -(g_hat * (w < 0)).sum((0, 1, 2)), rtol=1e-4, atol=1e-4)


def test_rprelu_and_learnable_bias():
    layer = L.RPReLU()
    x = _x((4, 3))
    layer.build(x.shape)
    layer.gamma.assign([0.1, -0.2, 0.0])
    layer.zeta.assign([0.5, 0.0, -0.5])
    g, z = np.array([0.1, -0.2, 0.0]), np.array([0.5, 0.0, -0.5])
    ref = np.where(x - g > 0, x - g, 0.25 * (x - g)) + z
    np.testing.assert_allclose(layer(x).numpy(), ref, atol=1e-6)
    assert L.LearnableBias()(x).numpy().tolist() == x.tolist()


def test_pcnn_projection_and_progressive_mode():
    x = _x((2, 6, 6, 3))
    layer = L.PCNNConv2D(8, 3, projections=2, mode="ternary")
    y_t = layer(x)
    kernels = layer.projected_kernels()
    assert len(kernels) == 2 and kernels[0].shape == (3, 3, 3, 4)
    assert any(np.any(k.numpy() == 0) for k in kernels)                  # ternary has zeros
    layer.mode.assign(1)
    c = layer.kernel.numpy()
    a = np.abs(c).mean()
    layer.projection.assign(np.stack([np.full((3, 3, 1, 1), 1.0), np.full((3, 3, 1, 1), -0.5)]).astype(np.float32))
    k0, k1 = [k.numpy() for k in layer.projected_kernels()]
    np.testing.assert_allclose(k0, a * np.where(c >= 0, 1, -1), rtol=1e-6)
    np.testing.assert_allclose(k1, a * np.where(-0.5 * c >= 0, 1, -1), rtol=1e-6)
    ref = tf.nn.conv2d(np.where(x >= 0, 1.0, -1.0).astype(np.float32), np.concatenate([k0, k1], -1), 1, "VALID")
    np.testing.assert_allclose(layer(x).numpy(), ref.numpy(), rtol=1e-5, atol=1e-5)
    assert y_t.shape == ref.shape
    with pytest.raises(ValueError, match="multiple of projections"):
        L.PCNNConv2D(6, 3, projections=4)


def test_pcnn_projection_initializer():
    # Default ones: every projection gives a sign(C), so J groups are identical (the pitfall the
    # docstring names); a signed initializer gives groups that differ where W_j < 0.
    x = _x((2, 6, 6, 3))
    same = L.PCNNConv2D(8, 3, projections=2)
    same(x)
    k0, k1 = [k.numpy() for k in same.projected_kernels()]
    np.testing.assert_array_equal(k0, k1)
    signed = L.PCNNConv2D(8, 3, projections=2,
                          projection_initializer=keras.initializers.RandomUniform(-1, 1, seed=1))
    signed(x)
    k0, k1 = [k.numpy() for k in signed.projected_kernels()]
    w, c = signed.projection.numpy(), signed.kernel.numpy()
    assert (w < 0).any() and not np.array_equal(k0, k1)
    for j, k in enumerate((k0, k1)):
        np.testing.assert_allclose(k, np.abs(c).mean() * np.where(w[j] * c >= 0, 1, -1), rtol=1e-6)
    again = L.PCNNConv2D.from_config(signed.get_config())
    assert again.get_config() == signed.get_config()


def test_pcnn_takes_conv2d_signature():
    import inspect

    conv = list(inspect.signature(keras.layers.Conv2D.__init__).parameters)
    pcnn = list(inspect.signature(L.PCNNConv2D.__init__).parameters)
    assert pcnn[:len(conv) - 1] == conv[:-1]                 # every Conv2D argument, in order
    assert {"projections", "binarize_input", "mode"} <= set(pcnn)
    layer = L.PCNNConv2D(4, 3, use_bias=True, activation="relu", bias_initializer="ones",
                         kernel_regularizer=keras.regularizers.l2(0.1), projections=2)
    x = _x((2, 6, 6, 3))
    y = layer(x).numpy()
    # Reference: the same projected kernels applied by a plain conv, + bias, relu.
    kernel = tf.concat(layer.projected_kernels(), axis=-1)
    ref = tf.nn.relu(tf.nn.conv2d(np.sign(x) + (x == 0), kernel, 1, "VALID") + 1.0).numpy()
    np.testing.assert_allclose(y, ref, atol=1e-5)
    assert len(layer.losses) == 1 and float(layer.losses[0]) > 0
    again = L.PCNNConv2D.from_config(layer.get_config())
    assert again.get_config() == layer.get_config()
    for bad, match in (({"groups": 2}, "groups=1"), ({"data_format": "channels_first"}, "channels_last")):
        with pytest.raises(ValueError, match=match):
            L.PCNNConv2D(4, 3, **bad)


def test_pcnn_projection_loss_gradient_matches_book():
    layer = L.PCNNConv2D(4, 3, projections=2)
    inp = keras.Input((6, 6, 3))
    model = keras.Model(inp, keras.layers.GlobalAveragePooling2D()(layer(inp)))
    trainer = L.PCNNTrainer(model, lam=0.1, eta=0.5)
    layer.projection.assign(np.stack([np.full((3, 3, 1, 1), 1.2), np.full((3, 3, 1, 1), 0.7)]).astype(np.float32))
    kernels = layer.projected_kernels()
    grads = [tf.constant(_x(k.shape, i)) for i, k in enumerate(kernels)]
    with tf.GradientTape() as tape:
        lp = trainer.projection_loss(kernels, grads)
    g_c = tape.gradient(lp, layer.kernel).numpy()
    c = layer.kernel.numpy()
    ref = np.zeros_like(c)
    for j in range(2):
        wj = layer.projection.numpy()[j]
        ref += 0.1 * (wj * (c + 0.5 * grads[j].numpy()) - kernels[j].numpy()) * wj
    np.testing.assert_allclose(g_c, ref, rtol=1e-4, atol=1e-6)


def test_pcnn_trainer_fits_and_progressive_callback():
    (x, y) = (_x((64, 8, 8, 3)), RNG.integers(0, 3, 64))
    inp = keras.Input((8, 8, 3))
    h = L.PCNNConv2D(8, 3, projections=2, binarize_input=False, mode="ternary")(inp)
    h = keras.layers.BatchNormalization()(h)
    h = L.PCNNConv2D(8, 3, projections=2)(h)
    out = keras.layers.Dense(3, activation="softmax")(keras.layers.GlobalAveragePooling2D()(h))
    model = keras.Model(inp, out)
    trainer = L.PCNNTrainer(model, lam=1e-3)
    trainer.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
    hist = trainer.fit(x, y, epochs=2, batch_size=16, verbose=0,
                       callbacks=[L.ProgressiveBinarization(switch_epoch=1)])
    assert hist.history["projection_loss"][0] > 0
    assert all(int(layer.mode.numpy()) == 1 for layer in model.layers if isinstance(layer, L.PCNNConv2D))
    with pytest.raises(ValueError, match="no PCNNConv2D"):
        L.PCNNTrainer(keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]))


BINARY_LAYERS = {
    "QuantConv2D ste_sign": lambda: L.QuantConv2D(32, 3, padding="same", pad_values=1.0,
                                                  input_quantizer="ste_sign", kernel_quantizer="ste_sign",
                                                  kernel_constraint="weight_clip", use_bias=False),
    "Bi-Real conv": lambda: L.QuantConv2D(32, 3, input_quantizer="approx_sign",
                                          kernel_quantizer="magnitude_aware_sign",
                                          kernel_constraint="weight_clip", use_bias=False),
    "XNORConv2D": lambda: L.XNORConv2D(32, 3, use_bias=False),
    "SAConv2D": lambda: L.SAConv2D(32, 3, padding="same"),
    "PCNNConv2D": lambda: L.PCNNConv2D(32, 3, projections=2, padding="same"),
    "PCNNConv2D bias": lambda: L.PCNNConv2D(32, 3, projections=2, padding="same", use_bias=True,
                                            bias_initializer="random_normal"),
    "RBConv2D": lambda: L.RBConv2D(32, 3, padding="same"),
    "BONNConv2D": lambda: L.BONNConv2D(32, 3, padding="same"),
    "ASDAConv2D": lambda: L.ASDAConv2D(32, 3, padding="same"),
    "DAConv2D": lambda: L.DAConv2D(32, 3, padding="same", reduction=4),
    "RSign conv": lambda: L.QuantConv2D(32, 3, input_quantizer="rsign", kernel_quantizer="ste_sign",
                                        kernel_constraint="weight_clip", use_bias=False),
}


@pytest.mark.parametrize("name", sorted(BINARY_LAYERS))
def test_binary_layer_converts_with_lce_and_matches(name, tmp_path):
    inp = keras.Input((10, 10, 16))
    h = keras.layers.BatchNormalization()(inp)                # real first layer stand-in
    h = BINARY_LAYERS[name]()(h)
    out = keras.layers.BatchNormalization()(h)
    model = keras.Model(inp, out)
    rng = np.random.default_rng(1)
    for w in model.weights:                                   # non-trivial scales/thresholds
        if any(k in w.name for k in ("tau", "projection", "alpha", "scale", "amplitude", "/w:")):
            w.assign(rng.uniform(0.5, 1.5, w.shape).astype(np.float32) * (1 if "alpha" not in w.name else 0.2))
    x = rng.normal(size=(6, 10, 10, 16)).astype(np.float32)
    res = tfcompress.convert(model, target="lce")
    assert "LceBconv2d" in res.custom_ops, res.info.op_counts
    rep = res.verify(x, latency_runs=0)
    assert rep.max_abs_diff <= 1e-4, rep
    model.save(tmp_path / "m.keras")
    again = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(again.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


@pytest.mark.parametrize("make", [
    lambda: tfcompress.quantizers.LSQ(bits=8),
    lambda: tfcompress.quantizers.Uniform(bits=8, per_channel=True),
])
def test_8bit_models_convert_to_int8_and_run(make):
    keras.utils.set_random_seed(2)
    model = keras.Sequential([
        keras.Input((8, 8, 3)),
        L.QuantConv2D(8, 3, kernel_quantizer=make(), input_quantizer=None, activation="relu"),
        keras.layers.Flatten(), L.QuantDense(4, kernel_quantizer=make()),
    ])
    x = _x((40, 8, 8, 3))
    model(x[:2])                                   # eager call: LSQ's data-dependent step init
    assert np.abs(model.predict(x, verbose=0)).max() > 0
    res = tfcompress.convert(model, target="int8", representative_data=x)
    rep = res.verify(x, latency_runs=0)
    assert rep.runtime == "litert"
    assert rep.max_abs_diff < 0.1 * np.abs(model.predict(x, verbose=0)).max()
    assert rep.agreement >= 0.9


def test_bop_flips_binary_kernels_and_flip_ratio_metric():
    with tfcompress.optimizers.flip_ratio_scope():
        model = keras.Sequential([
            keras.Input((6,)), L.QuantDense(8, input_quantizer="ste_sign", kernel_quantizer="ste_sign",
                                            kernel_initializer="ones", use_bias=False),
            keras.layers.BatchNormalization(), keras.layers.Dense(2)])
    model.compile(tfcompress.optimizers.bop(gamma=0.5, threshold=1e-6),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = _x((64, 6))
    y = (x[:, 0] > 0).astype(int)
    hist = model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    k = model.layers[0].kernel.numpy()
    assert set(np.unique(k)) <= {-1.0, 1.0} and (k == -1).any()   # binary weights, some flipped
    assert any("flip_ratio" in key for key in hist.history)


# ---------------------------------------------------------------- centre loss (PCNN, issue 17)
def _center_reference(f, y, c, gamma, alpha):
    """numpy: Wen et al. 2016 centre loss (batch mean), its feature gradient and the update."""
    b = len(f)
    diff = f - c[y]
    loss = 0.5 * gamma * (diff ** 2).sum(1).mean()
    grad = gamma / b * diff
    new = c.copy()
    for j in range(len(c)):
        sel = y == j
        new[j] = c[j] - alpha * (sel.sum() * c[j] - f[sel].sum(0)) / (1.0 + sel.sum())
    return loss, grad, new


def test_center_loss_value_gradient_and_update_match_numpy():
    from tfcompress.losses import CenterLoss

    f, y = _x((7, 5), 1), np.array([0, 2, 2, 1, 0, 2, 0])
    layer = CenterLoss(4, weight=0.3, alpha=0.5)
    layer([f, y])
    c0 = _x((4, 5), 2)
    layer.centers.assign(c0)
    ft = tf.constant(f)
    with tf.GradientTape() as tape:
        tape.watch(ft)
        loss = layer([ft, y[:, None]])                  # (B, 1) labels work too
    loss_ref, grad_ref, new_ref = _center_reference(f, y, c0, 0.3, 0.5)
    np.testing.assert_allclose(float(loss), loss_ref, rtol=1e-5)
    np.testing.assert_allclose(tape.gradient(loss, ft).numpy(), grad_ref, rtol=1e-5, atol=1e-7)
    assert not layer.trainable_weights                 # centres move by the rule, not by SGD
    layer.update_centers(f, np.eye(4, dtype=np.float32)[y])    # one-hot labels
    np.testing.assert_allclose(layer.centers.numpy(), new_ref, rtol=1e-5, atol=1e-6)
    assert np.allclose(layer.centers.numpy()[3], c0[3])        # class 3 absent: unchanged
    for bad in ({"num_classes": 1}, {"num_classes": 3, "alpha": 1.5},
                {"num_classes": 3, "weight": -1.0}):
        with pytest.raises(ValueError):
            CenterLoss(**bad)


def test_pcnn_trainer_center_loss_gradient_and_centres():
    """One SGD step of PCNNTrainer(center_weight=g): the weights move by the gradient of
    L_S + L_P + L_C computed here by hand, and the centres by Wen et al.'s rule."""
    keras.utils.set_random_seed(3)
    inp = keras.Input((6, 6, 2))
    h = L.PCNNConv2D(4, 3, projections=2, binarize_input=False, name="pc")(inp)
    feats = keras.layers.GlobalAveragePooling2D(name="gap")(h)
    model = keras.Model(inp, keras.layers.Dense(3, activation="softmax", name="fc")(feats))
    x, y = _x((8, 6, 6, 2), 4), np.array([0, 1, 2, 0, 1, 2, 0, 1])
    gamma, lr = 0.7, 0.1
    trainer = L.PCNNTrainer(model, lam=1e-2, eta=0.1, center_weight=gamma, feature_layer="gap")
    trainer.compile(keras.optimizers.SGD(lr), "sparse_categorical_crossentropy")
    c0 = np.abs(_x((3, 4), 5))
    trainer.center_loss([np.zeros((1, 4), np.float32), np.zeros((1,))])
    trainer.center_loss.centers.assign(c0)
    before = [v.numpy() for v in model.trainable_variables]
    sub = keras.Model(inp, [model.output, feats])
    layer = model.get_layer("pc")
    with tf.GradientTape() as outer:
        with tf.GradientTape() as inner:
            p, f = sub(x, training=True)
            ls = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, p))
            ks = layer._last_kernels
        dk = inner.gradient(ls, ks)
        lp = sum(0.5 * 1e-2 * tf.reduce_sum(tf.square(tf.stop_gradient(k) - layer.projection[j]
                                                      * (layer.kernel + 0.1 * dk[j])))
                 for j, k in enumerate(ks))
        lc = 0.5 * gamma * tf.reduce_mean(tf.reduce_sum(tf.square(f - c0[y]), -1))
        total = ls + lp + lc
    grads = outer.gradient(total, model.trainable_variables)
    f_np = f.numpy()
    hist = trainer.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    for v, b0, g in zip(model.trainable_variables, before, grads):
        np.testing.assert_allclose(v.numpy(), np.clip(b0 - lr * g.numpy(), -1, 1)
                                   if v is layer.kernel else b0 - lr * g.numpy(),
                                   rtol=1e-4, atol=1e-5, err_msg=v.name)   # float32 sums
    np.testing.assert_allclose(hist.history["center_loss"][0], float(lc), rtol=1e-4)
    _, _, new_ref = _center_reference(f_np, y, c0, gamma, 0.5)
    np.testing.assert_allclose(trainer.center_loss.centers.numpy(), new_ref, rtol=1e-4, atol=1e-6)
    assert trainer.get_config()["center_weight"] == gamma
    with pytest.raises(ValueError, match="no layer 'nope'"):
        L.PCNNTrainer(model, center_weight=0.1, feature_layer="nope")
    with pytest.raises(ValueError, match="center_weight"):
        L.PCNNTrainer(model, center_weight=-1.0)
