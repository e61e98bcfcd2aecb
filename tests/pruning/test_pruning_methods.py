"""DFS, EM and CoGD: the behaviour their method cards claim, on constructed problems."""

import numpy as np
import pytest

import tfcompress  # noqa: F401
from tfcompress._keras import keras
from tfcompress.errors import PruningError
from tfcompress.pruning import ConstantSparsity, FilterPruning, filter_masks, shrink
from tfcompress.pruning.methods import asynchrony, fista_momentum, gmm_em_1d, soft_threshold


def test_prox_and_fista_formulas():
    z = np.linspace(-3, 3, 61)
    np.testing.assert_allclose(soft_threshold(z, 0.7),
                               np.where(np.abs(z) > 0.7, z - 0.7 * np.sign(z), 0.0))
    a = [1.0]
    for _ in range(5):
        a.append(fista_momentum(a[-1]))
    np.testing.assert_allclose(a[1], (1 + np.sqrt(5)) / 2)
    assert all(b > c for b, c in zip(a[1:], a[:-1]))


def test_em_separates_a_bimodal_set_of_norms():
    rng = np.random.default_rng(4)
    low = rng.normal(0.2, 0.05, 40)
    high = rng.normal(1.5, 0.2, 60)
    values = rng.permutation(np.r_[low, high])
    w, mu, sd, resp, ll = gmm_em_1d(values)
    np.testing.assert_allclose(w, [0.4, 0.6], atol=0.02)
    np.testing.assert_allclose(mu, [0.2, 1.5], atol=0.05)
    np.testing.assert_allclose(sd, [0.05, 0.2], rtol=0.3)
    assigned_low = resp[:, 0] > 0.5
    np.testing.assert_array_equal(assigned_low, values < 0.8)
    # EM never decreases the likelihood: more iterations give at least the same.
    assert gmm_em_1d(values, iterations=3)[4] <= ll + 1e-9


def conv_with_bimodal_filters(n_low=6, n_high=10):
    model = keras.Sequential([keras.Input((6, 6, 2)), keras.layers.Conv2D(n_low + n_high, 3,
                                                                        name="c"),
                              keras.layers.Flatten(), keras.layers.Dense(3)])
    rng = np.random.default_rng(5)
    k = rng.normal(size=(3, 3, 2, n_low + n_high))
    k /= np.linalg.norm(k.reshape(-1, k.shape[-1]), axis=0)
    scales = rng.permutation(np.r_[rng.uniform(0.05, 0.1, n_low), rng.uniform(1.0, 1.3, n_high)])
    model.get_layer("c").set_weights([(k * scales).astype("float32"),
                                      np.zeros(n_low + n_high, "float32")])
    return model, scales


def test_em_method_prunes_the_low_component_first():
    model, scales = conv_with_bimodal_filters()
    pruner = FilterPruning(0.375, method="em")               # 6 of 16
    masked = pruner.prepare(model)
    pruner.set_model(masked)
    pruner.update_masks(0.375)
    mask = filter_masks(masked)["c"].mask.numpy()
    np.testing.assert_array_equal(mask == 0, scales < 0.5)
    fit = pruner.criterion.fits["c"]
    assert fit["weights"][0] == pytest.approx(6 / 16, abs=0.01)


def test_em_penalty_pulls_the_low_component_down():
    model, scales = conv_with_bimodal_filters()
    pruner = FilterPruning(0.0, method="em", penalty=5.0, step_size=0.1)
    masked = pruner.prepare(model)
    masked.compile(keras.optimizers.SGD(0.0), "mse")       # lr 0: only the EM decay acts
    x = np.random.default_rng(0).normal(size=(16, 6, 6, 2)).astype("float32")
    masked.fit(x, np.zeros((16, 3)), batch_size=4, verbose=0, callbacks=[pruner])
    norms = np.linalg.norm(masked.get_layer("c").kernel.numpy().reshape(-1, 16), axis=0)
    post_low = pruner.criterion.posterior_low["c"]
    # Each batch multiplies W_i by (1 - eta * lambda * r_i): low filters shrink by 0.5 per step.
    np.testing.assert_allclose(norms[scales < 0.5], scales[scales < 0.5] * 0.5 ** 4, rtol=1e-4)
    np.testing.assert_allclose(norms[scales > 0.5], scales[scales > 0.5], rtol=1e-4)
    assert np.all(post_low[scales < 0.5] > 0.99)


def lasso_problem(train_weights=False, signal=1.0):
    """conv(8) -> mask -> flatten -> dense(1): channels 0-3 feed nothing (zero dense rows),
    so the data loss never asks for them; targets come from the unmasked model."""
    rng = np.random.default_rng(0)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(8, 3, name="c"),
                              keras.layers.Flatten(), keras.layers.Dense(1, name="out")])
    w = rng.normal(0, signal, size=(288, 1)).astype("float32")
    w.reshape(36, 8)[:, :4] = 0
    model.get_layer("out").set_weights([w, np.zeros(1, "float32")])
    model.get_layer("out").trainable = False
    model.get_layer("c").trainable = train_weights
    x = rng.normal(size=(256, 8, 8, 1)).astype("float32")
    return model, x, model.predict(x, verbose=0)


def test_dfs_drives_unimportant_masks_to_exactly_zero():
    model, x, t = lasso_problem(signal=2.0)
    pruner = FilterPruning(0.5, method="dfs", l1_penalty=25.0,
                           schedule=ConstantSparsity(0.5, begin_step=24, frequency=1000))
    masked = pruner.prepare(model)
    masked.compile(keras.optimizers.SGD(0.002), "mse")      # eta * lambda = 0.05 per step
    seen = []

    class Probe(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append(filter_masks(masked)["c"].scale.numpy().copy())

    masked.fit(x, t, batch_size=32, epochs=3, verbose=0, callbacks=[Probe(), pruner])
    before_hard = seen[22]                                  # step 23, before the hard pruning
    assert np.all(before_hard[:4] == 0.0)                    # exactly zero, not just small
    assert np.all(np.abs(before_hard[4:]) > 0.3)            # the useful ones stay well above
    # ISTA without momentum needs 1 / (eta lambda) = 20 steps from 1 to 0: FISTA is faster.
    first_zero = next(i for i, s in enumerate(seen) if np.all(s[:4] == 0))
    assert first_zero < 19
    # The scheduled hard pruning removes exactly the zeroed filters, and shrink drops them.
    np.testing.assert_array_equal(filter_masks(masked)["c"].mask.numpy(), [0] * 4 + [1] * 4)
    small = shrink(masked)
    assert small.get_layer("c").filters == 4
    np.testing.assert_allclose(small.predict(x[:16], verbose=0),
                               masked.predict(x[:16], verbose=0), atol=1e-4)


def test_asynchrony_ratio_definition():
    m0, m1 = np.array([1.0, 1.0]), np.array([0.5, 1.0])
    w0 = np.ones((3, 2))
    w1 = w0 * 1.1
    expected = (0.5 / np.sqrt(2)) / (np.linalg.norm(w1 - w0) / np.linalg.norm(w0))
    assert asynchrony(m0, m1, w0, w1) == pytest.approx(expected)


def test_cogd_correction_keeps_masks_from_dying_early():
    results = {}
    for method, opts in (("dfs", {"fista": False}), ("cogd", {})):
        model, x, t = lasso_problem(train_weights=True)
        pruner = FilterPruning(0.0, method=method, l1_penalty=20.0, **opts)
        masked = pruner.prepare(model)
        masked.compile(keras.optimizers.SGD(0.002), "mse")
        masked.fit(x, t, batch_size=32, epochs=3, verbose=0, callbacks=[pruner])
        results[method] = (filter_masks(masked)["c"].scale.numpy(), pruner.criterion)
    ista, cogd = results["dfs"][0], results["cogd"][0]
    assert results["cogd"][1].corrections > 0
    assert results["cogd"][1].ratios["c"] > 1.0              # masks move faster than weights
    # Same lambda, same steps: the coupled update leaves the useful masks larger.
    assert np.all(cogd[4:] > ista[4:])


def test_method_options_are_checked():
    with pytest.raises(PruningError, match="Bad option"):
        FilterPruning(0.5, method="dfs", lamda=1.0)
    with pytest.raises(PruningError, match="non-negative"):
        FilterPruning(0.5, method="dfs", l1_penalty=-1)
    with pytest.raises(PruningError, match="takes no options"):
        FilterPruning(0.5, method="l1", l1_penalty=1)
    model, _ = conv_with_bimodal_filters()
    plain = FilterPruning(0.5).prepare(model)
    with pytest.raises(PruningError, match="soft masks"):
        FilterPruning(0.5, method="dfs").set_model(plain)
