import numpy as np
import pytest

import tfcompress
from tfcompress._keras import keras
from tfcompress.lowrank import cp_factors, decompose, fine_tune, svd_factors, tucker2_factors
from tfcompress.lowrank.decompose import DecompositionError

X = np.random.default_rng(0).normal(size=(6, 10, 10, 3)).astype(np.float32)


def _model():
    keras.utils.set_random_seed(0)
    inp = keras.Input((10, 10, 3))
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="c1")(inp)
    h = keras.layers.Conv2D(6, 3, strides=2, name="c2")(h)
    h = keras.layers.BatchNormalization(name="bn")(h)
    h = keras.layers.Flatten()(h)
    return keras.Model(inp, keras.layers.Dense(5, name="d")(h))


def test_factor_functions_reconstruct():
    rng = np.random.default_rng(1)
    w = rng.normal(size=(9, 7)).astype(np.float32)
    a, b = svd_factors(w, 7)
    np.testing.assert_allclose(a @ b, w, atol=1e-5)
    k = rng.normal(size=(3, 3, 4, 5)).astype(np.float32)
    u, core, v = tucker2_factors(k, 4, 5)
    np.testing.assert_allclose(np.einsum("hwab,ia,ob->hwio", core, u, v), k, atol=1e-5)
    f = cp_factors(k, 36)
    np.testing.assert_allclose(np.einsum("hr,wr,ir,or->hwio", *f), k, atol=1e-5)
    errs = [np.linalg.norm(np.einsum("hr,wr,ir,or->hwio", *cp_factors(k, r)) - k) for r in (2, 8, 20)]
    assert errs[0] > errs[1] > errs[2]


@pytest.mark.parametrize("method", ["tucker2", "cp"])
def test_full_rank_reproduces_outputs(method):
    model = _model()
    full = decompose(model, rank_ratio=1.0, method=method)
    np.testing.assert_allclose(full.predict(X, verbose=0), model.predict(X, verbose=0), atol=1e-4)
    assert {r["layer"] for r in full.lowrank_report} == {"c1", "c2", "d"}


@pytest.mark.parametrize("method", ["tucker2", "cp"])
def test_parameters_fall_with_rank_and_it_converts(method):
    model = _model()
    counts = [decompose(model, rank_ratio=r, method=method).count_params() for r in (1.0, 0.6, 0.3)]
    assert counts[0] > counts[1] > counts[2]
    half = decompose(model, param_ratio=0.5, method=method)
    for r in half.lowrank_report:
        assert r["params_after"] <= 0.5 * r["params_before"], r
    res = tfcompress.convert(half, target="int8", representative_data=X)
    rep = res.verify(X, latency_runs=0)
    assert rep.max_abs_diff < 0.2 * np.abs(half.predict(X, verbose=0)).max() + 0.05


def test_energy_and_fine_tune():
    model = _model()
    small = decompose(model, energy=0.9, layers=["d"])
    (rep,) = small.lowrank_report
    s = np.linalg.svd(model.get_layer("d").kernel.numpy(), compute_uv=False)
    e = np.cumsum(s ** 2) / np.sum(s ** 2)
    assert rep["rank"] == int(np.searchsorted(e, 0.9) + 1)
    y = np.arange(6) % 5
    weights = [w.copy() for w in small.get_weights()]
    hist = fine_tune(small, X, y, epochs=8, batch_size=3, learning_rate=1e-2,
                     loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    losses = hist.history["loss"]
    assert len(losses) == 8
    # fine-tuning really trains the decomposed model: weights move and the loss goes down on
    # this tiny set it can fit
    assert any(np.abs(a - b).max() > 0 for a, b in zip(weights, small.get_weights()))
    assert losses[-1] < losses[0], losses


def test_bad_input():
    model = _model()
    with pytest.raises(DecompositionError, match="exactly one"):
        decompose(model)
    with pytest.raises(DecompositionError, match=r"rank_ratio must be in \(0, 1\]"):
        decompose(model, rank_ratio=0)
    with pytest.raises(DecompositionError, match=r"rank_ratio must be in \(0, 1\]"):
        decompose(model, rank_ratio=-0.5)
    with pytest.raises(DecompositionError, match="'bn'.*cannot be decomposed"):
        decompose(model, rank_ratio=0.5, layers=["bn"])
    with pytest.raises(DecompositionError, match="No layer named 'zz'"):
        decompose(model, rank_ratio=0.5, layers=["zz"])
    with pytest.raises(DecompositionError, match="method"):
        decompose(model, rank_ratio=0.5, method="svd2")
