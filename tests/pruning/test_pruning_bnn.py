"""RBCN and BONN (cards 5.7 / 5.8): losses against their closed forms, the training steps,
the behaviour the papers claim, and pruned binary models that shrink exactly and run in LCE."""

import numpy as np
import pytest

import tfcompress
from tfcompress._keras import keras, tf
from tfcompress.errors import PruningError
from tfcompress.pruning import (
    BayesianFeatureLoss, BayesianFilterPruning, BONNConv2D, BONNSign, BONNTrainer,
    ConstantSparsity, RBCNPruning, RBCNSign, RBCNTrainer, RBConv2D, add_filter_masks,
    bonn_kernel_loss, discriminator_loss, filter_masks, generator_loss, kmeans,
    rbcn_kernel_loss, shrink,
)

L = keras.layers


def sign(x):
    return np.where(x >= 0, 1.0, -1.0)


def log_sigmoid(z):
    return -np.logaddexp(0.0, -z)


# ----------------------------------------------------------------------------- RBCN
def test_rbcn_kernel_loss_and_its_gradients_are_the_cards():
    rng = np.random.default_rng(0)
    w = rng.uniform(-1.3, 1.3, (3, 3, 2, 4)).astype("float32")
    c = rng.uniform(0.2, 0.8, 4).astype("float32")
    lam = 0.3
    wv, cv = tf.Variable(w), tf.Variable(c)
    with tf.GradientTape() as tape:
        loss = rbcn_kernel_loss(wv, cv, lam)
    gw, gc = tape.gradient(loss, [wv, cv])
    r = w - c * sign(w)
    np.testing.assert_allclose(float(loss), 0.5 * lam * (r ** 2).sum(), rtol=1e-5)
    # dL/dC = -lam sum_i (W_i - C W_hat_i) W_hat_i
    np.testing.assert_allclose(gc, -lam * (r * sign(w)).sum((0, 1, 2)), rtol=1e-5, atol=1e-6)
    # dL/dW = lam r + dL/dW_hat dW_hat/dW, dL/dW_hat = -lam r C, dW_hat/dW = 2 - 2|W| on |W|<1
    surrogate = np.where(np.abs(w) < 1, 2 - 2 * np.abs(w), 0.0)
    np.testing.assert_allclose(gw, lam * r - lam * r * c * surrogate, rtol=1e-5, atol=1e-6)
    # The quantizer: C sign(W) forward, C initialized to mean |W_c| (argmin_C of the loss).
    q = RBCNSign()
    out = q(tf.constant(w)).numpy()
    np.testing.assert_allclose(q.scale.numpy(), np.abs(w).mean((0, 1, 2)), rtol=1e-6)
    np.testing.assert_allclose(out, sign(w) * np.abs(w).mean((0, 1, 2)), rtol=1e-6)


def test_adversarial_losses_are_the_cards():
    rng = np.random.default_rng(1)
    real, fake = rng.normal(size=(2, 8, 1)).astype("float32")
    d = float(discriminator_loss(real, fake))
    np.testing.assert_allclose(d, -(log_sigmoid(real).mean() + log_sigmoid(-fake).mean()),
                               rtol=1e-5)
    smooth = float(discriminator_loss(real, fake, label_smoothing=0.1))
    np.testing.assert_allclose(smooth, -((0.9 * log_sigmoid(real) + 0.1 * log_sigmoid(-real))
                                         .mean() + log_sigmoid(-fake).mean()), rtol=1e-5)
    z = tf.Variable(fake)
    p = 1 / (1 + np.exp(-fake))                         # D(T)
    for non_sat, value, grad in ((True, -log_sigmoid(fake).mean(), -(1 - p) / 8),
                                 (False, log_sigmoid(-fake).mean(), -p / 8)):
        with tf.GradientTape() as tape:
            g = generator_loss(z, non_saturating=non_sat)
        np.testing.assert_allclose(float(g), value, rtol=1e-5)
        # Non-saturating: the logit gradient is -(1 - D(T)), the card's factor.
        np.testing.assert_allclose(tape.gradient(g, z), grad, rtol=1e-5, atol=1e-7)


def tiny_rbcn(pruned=False):
    def net(conv, p):
        i = keras.Input((6, 6, 2))
        h = L.BatchNormalization(name=f"{p}bn0")(L.Conv2D(4, 3, padding="same",
                                                          name=f"{p}stem")(i))
        h = L.BatchNormalization(name=f"{p}bn1")(conv(4, 3, padding="same", name=f"{p}conv")(h))
        return keras.Model(i, L.Dense(3, name=f"{p}logits")(L.GlobalAveragePooling2D()(h)))

    student, teacher = net(RBConv2D, "s_"), net(L.Conv2D, "t_")
    x = np.random.default_rng(2).normal(size=(8, 6, 6, 2)).astype("float32")
    student(x)                                         # eager call: C = mean |W|
    return student, teacher, x, np.arange(8) % 3


def test_rbcn_trainer_losses_equal_closed_forms():
    student, teacher, x, y = tiny_rbcn()
    trainer = RBCNTrainer(student, teacher, feature_pairs=[("s_bn1", "t_bn1")],
                          kernel_weight=0.01, adversarial_weight=0.5, data_weight=2.0)
    trainer.compile(keras.optimizers.SGD(0.1),
                    keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    got = {k: float(v) for k, v in trainer.compute_losses(x, y).items()}
    logits = student.predict(x, verbose=0)
    logp = logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)
    task = -logp[np.arange(8), y].mean()
    fake = keras.Model(student.input, student.get_layer("s_bn1").output).predict(x, verbose=0)
    real = keras.Model(teacher.input, teacher.get_layer("t_bn1").output).predict(x, verbose=0)
    disc = trainer.discriminators[0]
    zr, zf = disc.predict(real, verbose=0), disc.predict(fake, verbose=0)
    layer = student.get_layer("s_conv")
    w, c = tf.convert_to_tensor(layer.kernel).numpy(), layer.kernel_quantizer.scale.numpy()
    kernel = 0.5 * 0.01 * ((w - c * sign(w)) ** 2).sum()
    data = 0.5 * ((real - fake) ** 2).sum() / 8
    adv = -log_sigmoid(zf).mean()
    np.testing.assert_allclose(got["task_loss"], task, rtol=1e-4)
    np.testing.assert_allclose(got["kernel_loss"], kernel, rtol=1e-4)
    np.testing.assert_allclose(got["data_loss"], data, rtol=1e-4)
    np.testing.assert_allclose(got["adversarial_loss"], adv, rtol=1e-4)
    np.testing.assert_allclose(got["discriminator_loss"],
                               -(log_sigmoid(zr).mean() + log_sigmoid(-zf).mean()), rtol=1e-4)
    np.testing.assert_allclose(got["loss"], task + 0.5 * adv + kernel + 2.0 * data, rtol=1e-4)
    with pytest.raises(ValueError, match="'s_bn0'.*'t_logits'"):
        RBCNTrainer(student, teacher, feature_pairs=[("s_bn0", "t_logits")])
    with pytest.raises(ValueError, match="no layer with an RBCNSign"):
        RBCNTrainer(teacher, teacher, feature_pairs=[("t_bn1", "t_bn1")])


def test_rbcn_step_updates_w_then_c_and_the_discriminator():
    student, teacher, x, y = tiny_rbcn()
    lam, lr = 0.5, 0.05
    trainer = RBCNTrainer(student, teacher, feature_pairs=[("s_bn1", "t_bn1")],
                          kernel_weight=lam, adversarial_weight=0.0)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    trainer.compile(keras.optimizers.SGD(lr), ce, discriminator_optimizer=keras.optimizers.SGD(0.1),
                    scale_optimizer=keras.optimizers.SGD(lr))
    layer = student.get_layer("s_conv")
    scale = layer.kernel_quantizer.scale
    with tf.GradientTape() as tape:
        task = ce(y, student(x, training=True))
    g_task = tape.gradient(task, scale).numpy()
    c0, w0 = scale.numpy(), tf.convert_to_tensor(layer.kernel).numpy()
    d0 = [v.numpy() for v in trainer.discriminators[0].weights]
    t0 = [v.numpy() for v in teacher.weights]
    logs = trainer.train_on_batch(x, y, return_dict=True)
    w1 = tf.convert_to_tensor(layer.kernel).numpy()
    assert not np.allclose(w1, w0)
    # C steps after W: its kernel-loss gradient is the card's, evaluated at the new W.
    dc = -lam * ((w1 - c0 * sign(w1)) * sign(w1)).sum((0, 1, 2))
    np.testing.assert_allclose(scale.numpy(), c0 - lr * (g_task + dc), rtol=1e-4, atol=1e-6)
    assert all(not np.allclose(a, v.numpy()) for a, v in zip(d0, trainer.discriminators[0].weights))
    assert all(np.array_equal(a, v.numpy()) for a, v in zip(t0, teacher.weights))
    assert {"loss", "discriminator_loss", "kernel_loss", "adversarial_loss"} <= set(logs)


def mnist_bnn(conv, p="", **kw):
    i = keras.Input((28, 28, 1))
    h = L.BatchNormalization(name=f"{p}bn0")(L.Conv2D(16, 3, name=f"{p}stem", use_bias=False)(i))
    h = L.MaxPool2D(2)(h)
    h = L.BatchNormalization(name=f"{p}bn1")(conv(32, 3, padding="same", name=f"{p}c1", **kw)(h))
    h = L.MaxPool2D(2)(h)
    h = L.BatchNormalization(name=f"{p}bn2")(conv(32, 3, padding="same", name=f"{p}c2", **kw)(h))
    return keras.Model(i, L.Dense(10, name=f"{p}logits")(L.GlobalAveragePooling2D()(h)),
                       name=f"{p}net")


def check_shrunk_and_lce(masked, x, tmp_path):
    small = shrink(masked)
    ref = masked.predict(x, verbose=0)
    np.testing.assert_allclose(small.predict(x, verbose=0), ref, atol=1e-4)
    for owner, m in filter_masks(masked).items():
        assert small.get_layer(owner).filters == int((m.effective() != 0).sum()), owner
    # The removed stem/c1 channels' constant (+1 after binarization) went into the bias.
    assert small.get_layer("c1").use_bias and small.get_layer("c2").use_bias
    res = tfcompress.convert(small, target="lce")
    assert "LceBconv2d" in res.custom_ops, res.ops
    rep = res.verify(x, latency_runs=0)
    # Binary convolutions are exact; float stem, BatchNorm and logits differ by rounding.
    assert rep.max_abs_diff <= 1e-4, rep
    small.save(tmp_path / "small.keras")
    again = keras.models.load_model(tmp_path / "small.keras")
    np.testing.assert_allclose(again.predict(x, verbose=0), small.predict(x, verbose=0),
                               atol=1e-6)
    return small


def test_pruned_rbcn_shrinks_exactly_and_runs_in_lce(mnist_small, tmp_path):
    (x, y), (xt, _) = mnist_small
    pruner = RBCNPruning(0.5, ConstantSparsity(0.5, begin_step=4, frequency=100),
                         l1_penalty=1e-2)
    student = pruner.prepare(mnist_bnn(RBConv2D))
    assert set(filter_masks(student)) == {"stem", "c1", "c2"}   # binary consumers fold
    teacher = mnist_bnn(L.Conv2D, "t_")
    trainer = RBCNTrainer(student, teacher, feature_pairs=[("c2_filter_mask", "t_bn2")],
                          data_weight=1e-3, kernel_weight=1e-3, discriminator_l2=1e-4)
    trainer.compile(keras.optimizers.Adam(1e-3),
                    keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                    discriminator_optimizer=keras.optimizers.Adam(1e-4))
    hist = trainer.fit(x[:192], y[:192], batch_size=32, verbose=0, callbacks=[pruner])
    assert np.isfinite(hist.history["loss"]).all()
    assert all(v == 0.5 for v in pruner.sparsity().values())
    check_shrunk_and_lce(student, xt[:64], tmp_path)


def test_binary_layers_that_cannot_fold_a_removed_channel_say_why():
    i = keras.Input((8, 8, 3))
    h = L.Conv2D(4, 3, name="stem")(i)
    h = RBConv2D(4, 3, padding="same", pad_values=0.0, name="zero_pad")(h)
    masked = add_filter_masks(keras.Model(i, L.Flatten()(h)), layers=["stem"])
    m = filter_masks(masked)["stem"]
    m.set_weights([np.array([1, 0, 1, 1], "float32"), np.int64(1)])
    with pytest.raises(PruningError, match="'zero_pad' pads with 0.*pad_values=1"):
        shrink(masked)
    with pytest.raises(ValueError, match="RBConv2D binarizes its kernel with RBCNSign"):
        RBConv2D(4, 3, kernel_quantizer="ste_sign")
    a = RBConv2D(4, 3, name="r").get_config()
    assert RBConv2D.from_config(a).get_config() == a
    b = BONNConv2D(4, 3, kernel_quantizer=BONNSign(lam=0.1, nu=2.0)).get_config()
    assert BONNConv2D.from_config(b).get_config() == b


# ----------------------------------------------------------------------------- BONN
def test_bonn_kernel_loss_and_gradient_are_the_closed_form():
    rng = np.random.default_rng(3)
    k = rng.normal(0, 0.4, (3, 3, 2, 4)).astype("float32")
    w, mp, mn = (rng.uniform(0.2, 0.6, 4).astype("float32") for _ in range(3))
    lsp, lsn = (rng.uniform(-2, -1, 4).astype("float32") for _ in range(2))
    lam, nu = 0.3, 1.5
    kv = tf.Variable(k)
    with tf.GradientTape() as tape:
        loss = bonn_kernel_loss(kv, w, mp, mn, lsp, lsn, lam, nu)
    pos = k >= 0
    prior = np.where(pos, (k - mp) ** 2 / np.exp(2 * lsp) + 2 * lsp,
                     (k + mn) ** 2 / np.exp(2 * lsn) + 2 * lsn)
    expect = 0.5 * lam * ((w * sign(k) - w * k) ** 2 + nu * prior).sum()
    np.testing.assert_allclose(float(loss), expect, rtol=1e-5)
    grad = lam * (-(w ** 2) * (sign(k) - k)
                  + nu * np.where(pos, (k - mp) / np.exp(2 * lsp), (k + mn) / np.exp(2 * lsn)))
    np.testing.assert_allclose(tape.gradient(loss, kv), grad, rtol=1e-4, atol=1e-6)
    # The layer adds exactly this loss to model.losses in a forward pass; k_hat = w sign(k).
    layer = BONNConv2D(4, 3, kernel_quantizer=BONNSign(lam=lam, nu=nu))
    model = keras.Sequential([keras.Input((5, 5, 2)), layer])
    layer.kernel.assign(k)
    model(np.ones((1, 5, 5, 2), "float32"))            # first eager call: lazy init
    q = layer.kernel_quantizer
    for var, value in zip((q.w, q.mu_pos, q.mu_neg, q.log_sigma_pos, q.log_sigma_neg),
                          (w, mp, mn, lsp, lsn)):
        var.assign(value)
    model(np.ones((1, 5, 5, 2), "float32"), training=True)
    np.testing.assert_allclose(float(tf.add_n(model.losses)), expect, rtol=1e-5)
    np.testing.assert_allclose(layer.binary_kernel(), w * sign(k), rtol=1e-6)


def bimodality(v):
    """Sarle's coefficient (skew^2 + 1) / kurtosis: 1/3 for a Gaussian, 1 for two spikes."""
    z = (v - v.mean()) / v.std()
    return ((z ** 3).mean() ** 2 + 1) / (z ** 4).mean()


def test_bonn_kernel_loss_makes_latent_weights_bimodal():
    q = BONNSign(lam=1.0, nu=1.0)
    rng = np.random.default_rng(4)
    k = tf.Variable(rng.normal(0, 0.3, (3, 3, 8, 16)).astype("float32"))
    q(k)                                                # lazy init: mu = mean |k|
    opt = keras.optimizers.Adam(0.01)
    start = k.numpy().ravel()
    for _ in range(40):
        with tf.GradientTape() as tape:
            loss = q.kernel_loss(k)
        variables = [k] + q.trainable_weights
        opt.apply_gradients(zip(tape.gradient(loss, variables), variables))
    end = k.numpy().ravel()
    assert bimodality(start) < 0.4 and bimodality(end) > 0.75, (bimodality(start),
                                                                bimodality(end))
    # The mass moved toward the two modes +mu+ / -mu-.
    mu_pos, mu_neg = q.mu_pos.numpy().mean(), q.mu_neg.numpy().mean()

    def to_modes(v):
        return np.abs(np.abs(v) - np.where(v >= 0, mu_pos, mu_neg)).mean()

    assert to_modes(end) < 0.3 * to_modes(start)


def test_bayesian_feature_loss_is_the_closed_form_and_pulls_centres_to_class_means():
    layer = BayesianFeatureLoss(3, theta=0.2)
    rng = np.random.default_rng(5)
    f = rng.normal(size=(6, 2, 2)).astype("float32")
    y = np.array([0, 1, 2, 0, 1, 0])
    loss0 = layer([f, y])
    c = rng.normal(size=(3, 4)).astype("float32")
    lv = rng.uniform(-1, 1, (3, 4)).astype("float32")
    layer.set_weights([c, lv])
    with tf.GradientTape() as tape:
        loss = layer([f, y])
    fl = f.reshape(6, -1)
    d = fl - c[y]
    per = (d ** 2 * (1 + np.exp(-lv[y])) + lv[y]).sum(1)
    np.testing.assert_allclose(float(loss), 0.1 * per.mean(), rtol=1e-5)
    gc = tf.convert_to_tensor(tape.gradient(loss, layer.centers)).numpy()
    for k in range(3):
        sel = y == k
        np.testing.assert_allclose(gc[k], -0.2 / 6 * ((1 + np.exp(-lv[k])) * d[sel]).sum(0),
                                   rtol=1e-4, atol=1e-6)
    # One-hot labels give the same loss; at c = class means the centre gradient vanishes.
    np.testing.assert_allclose(float(layer([f, np.eye(3)[y]])), float(loss), rtol=1e-6)
    layer.centers.assign(np.stack([fl[y == k].mean(0) for k in range(3)]))
    with tf.GradientTape() as tape:
        loss = layer([f, y])
    np.testing.assert_allclose(tf.convert_to_tensor(tape.gradient(loss, layer.centers)), 0,
                               atol=1e-6)
    assert float(loss0) > 0


def grouped_filters(groups=4, copies=4, noise=0.05):
    rng = np.random.default_rng(6)
    protos = rng.normal(size=(groups, 3 * 3 * 2))
    order = rng.permutation(groups * copies)
    truth = np.repeat(np.arange(groups), copies)[order]
    rows = protos[truth] + noise * rng.normal(size=(groups * copies, protos.shape[1]))
    model = keras.Sequential([keras.Input((6, 6, 2)), L.Conv2D(groups * copies, 3, name="c"),
                              L.Flatten(), L.Dense(3)])
    model.get_layer("c").kernel.assign(rows.T.reshape(3, 3, 2, -1).astype("float32"))
    return model, truth


def test_bayesian_pruning_merges_groups_and_keeps_their_first_filter():
    model, truth = grouped_filters()
    pruner = BayesianFilterPruning(0.75, gamma=0.2, penalty=1.0, nu=0.01, step_size=0.1)
    masked = pruner.prepare(model)
    pruner.set_model(masked)
    labels = pruner.criterion.cluster(pruner, "c")
    # k-means recovers the planted groups (as a partition).
    assert {frozenset(np.flatnonzero(labels == g)) for g in range(4)} == \
        {frozenset(np.flatnonzero(truth == g)) for g in range(4)}
    kernel = masked.get_layer("c").kernel
    rows0 = kernel.numpy().reshape(-1, 16).T
    pruner.criterion.pull(pruner, "c", eta=0.1)
    rows1 = kernel.numpy().reshape(-1, 16).T
    for g in range(4):
        idx = labels == g
        mean = rows0[idx].mean(0)
        np.testing.assert_allclose(rows1[idx].mean(0), mean, atol=1e-6)     # means kept
        var = ((rows0[idx] - mean) ** 2).mean()
        factor = (1 - 0.2) * (1 - min(1.0, 0.1 * 1.0 * (1 + 0.01 / var)))
        np.testing.assert_allclose(rows1[idx] - mean, factor * (rows0[idx] - mean), atol=1e-6)
    pruner.update_masks(0.75)
    kept = np.flatnonzero(filter_masks(masked)["c"].mask.numpy())
    np.testing.assert_array_equal(kept, sorted(np.flatnonzero(truth == g)[0] for g in range(4)))
    with pytest.raises(PruningError, match="gamma"):
        BayesianFilterPruning(0.5, gamma=1.5)
    labels, centres = kmeans(np.r_[np.zeros((3, 2)), np.ones((2, 2))], 2)
    assert len(set(labels[:3])) == 1 and len(set(labels[3:])) == 1 and labels[0] != labels[3]
    np.testing.assert_allclose(np.sort(centres[:, 0]), [0, 1])


def test_bonn_trainer_with_bayesian_pruning_shrinks_and_runs_in_lce(mnist_small, tmp_path):
    (x, y), (xt, _) = mnist_small
    pruner = BayesianFilterPruning(0.5, ConstantSparsity(0.5, begin_step=5, frequency=100),
                                   gamma=0.2)
    model = pruner.prepare(mnist_bnn(BONNConv2D))
    trainer = BONNTrainer(model, num_classes=10, theta=1e-3)
    trainer.compile(keras.optimizers.Adam(1e-3),
                    keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    hist = trainer.fit(x[:192], y[:192], batch_size=32, verbose=0, callbacks=[pruner])
    assert hist.history["kernel_loss"][0] != 0 and hist.history["feature_loss"][0] > 0
    assert all(v == 0.5 for v in pruner.sparsity().values())
    check_shrunk_and_lce(model, xt[:64], tmp_path)
