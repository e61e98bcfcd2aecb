"""Second-order DARTS: the unrolled architecture gradient (DARTS Eqs. 7-8) against a finite
difference of the unrolled validation loss, and the architecture step built on it."""

import numpy as np
import pytest
from nas_helpers import cifar8

from tfcompress._keras import keras, tf
from tfcompress.nas import DARTS, DartsSpace

OPS = ["skip_connect", "avg_pool_3x3", "sep_conv_3x3"]     # smooth enough for finite differences


@pytest.fixture
def float64():
    """float64 variables, so that finite differences resolve the derivative to ~1e-8."""
    keras.backend.set_floatx("float64")
    yield
    keras.backend.set_floatx("float32")


def _problem(rng):
    (x, y), (xv, yv) = cifar8()
    space = DartsSpace(num_cells=1, channels=4, ops="float", nodes=1, primitives=OPS)
    net = space.build((8, 8, 3), 4)
    for v in net.arch_variables:                      # away from the uniform mix
        v.assign(rng.normal(size=v.shape))
    return space, net, (x[:8].astype(np.float64), y[:8]), (xv[:8].astype(np.float64), yv[:8])


def test_unrolled_hypergradient_matches_a_finite_difference_of_the_unrolled_loss(float64, rng):
    space, net, (x, y), (xv, yv) = _problem(rng)
    xi = 0.5
    search = DARTS(space, (xv, yv), order=2, train_data=(x, y), xi=xi, hvp_epsilon=1e-6)
    search.set_model(net)
    arch, weights = net.arch_variables, net.trainable_variables
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def unrolled_loss(alpha):
        """L_val(w - xi grad_w L_train(w, alpha), alpha), weights restored afterwards."""
        w0 = [v.numpy() for v in weights]
        for v, a in zip(arch, alpha):
            v.assign(a)
        with tf.GradientTape() as tape:
            loss = ce(y, net(x, training=True))
        for v, g in zip(weights, tape.gradient(loss, weights)):
            if g is not None:
                v.assign_sub(xi * g)
        value = float(ce(yv, net(xv, training=True)))
        for v, w in zip(weights, w0):
            v.assign(w)
        return value

    alpha0 = [v.numpy() for v in arch]
    w0 = [v.numpy() for v in net.variables]
    hyper = search.hypergradient(xv, yv, x, y)
    # the step leaves every network variable (weights and BN statistics) as it was
    for v, w in zip(net.variables, w0):
        np.testing.assert_array_equal(v.numpy(), w)
    # first-order part alone: grad_alpha L_val(w', alpha)
    with tf.GradientTape() as tape:
        tape.watch(arch)
        with tf.GradientTape() as inner:
            train_loss = ce(y, net(x, training=True))
        grads = inner.gradient(train_loss, weights)
    for v, g in zip(weights, grads):
        if g is not None:
            v.assign_sub(xi * g)
    with tf.GradientTape() as tape:
        tape.watch(arch)
        val_loss = ce(yv, net(xv, training=True))
    first = [np.zeros(v.shape) if g is None else g.numpy() for g, v in
             zip(tape.gradient(val_loss, arch), arch)]
    for v, w in zip(net.variables, w0):
        v.assign(w)

    h = 1e-6
    for _ in range(3):
        u = [rng.normal(size=a.shape) for a in alpha0]
        fd = (unrolled_loss([a + h * d for a, d in zip(alpha0, u)])
              - unrolled_loss([a - h * d for a, d in zip(alpha0, u)])) / (2 * h)
        got = sum(float((g * d).sum()) for g, d in zip(hyper, u))
        assert got == pytest.approx(fd, rel=1e-4, abs=1e-8)
        # the second-order term matters here: the first-order part alone is far off
        assert abs(sum(float((g * d).sum()) for g, d in zip(first, u)) - fd) > 1e-2 * abs(fd)


def test_second_order_step_applies_adam_to_the_hypergradient_inside_fit(rng):
    space, net, (x, y), (xv, yv) = _problem(rng)
    x, xv = x.astype(np.float32), xv.astype(np.float32)
    lr, wd = 0.01, 1e-3
    search = DARTS(space, (xv, yv), order=2, train_data=(x, y), learning_rate=lr,
                   weight_decay=wd, batch_size=8)
    search.set_model(net)
    assert search.xi_value() == pytest.approx(0.025)       # the weight optimizer's SGD rate
    alpha0 = [v.numpy() for v in net.arch_variables]
    hyper = search.hypergradient(xv, yv, x, y)
    search.arch_step(xv, yv, x, y)
    # Adam's first step, g = hypergradient + weight decay * alpha: Keras' Adam computes
    # lr sqrt(1 - b2) / (1 - b1) * m / (sqrt(v) + eps) = -lr g / (|g| + eps / sqrt(1 - b2))
    for v, a, g in zip(net.arch_variables, alpha0, hyper):
        g = g + wd * a
        np.testing.assert_allclose(v.numpy() - a, -lr * g / (np.abs(g) + 1e-7 / np.sqrt(1e-3)),
                                   rtol=1e-3, atol=1e-7)
    # in fit: one second-order step per training batch, on batches of train_data
    net.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=[search])
    assert search.arch_steps == 1 + 2 and search.get_state()["arch_steps"] == 3
    with pytest.raises(ValueError, match="train_data"):
        DARTS(space, (xv, yv), order=2)
    with pytest.raises(ValueError, match="order must be 1"):
        DARTS(space, (xv, yv), order=3)
