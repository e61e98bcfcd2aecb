import json

import numpy as np
import pytest

from tfcompress import mixed_precision as MP
from tfcompress._keras import keras


def _model():
    keras.utils.set_random_seed(0)
    return keras.Sequential([
        keras.Input((12, 12, 3)), keras.layers.Conv2D(8, 3, activation="relu", name="c1"),
        keras.layers.Conv2D(16, 3, activation="relu", name="c2"), keras.layers.DepthwiseConv2D(3, name="dw"),
        keras.layers.Conv2D(16, 3, activation="relu", name="c3"), keras.layers.Flatten(),
        keras.layers.Dense(10, activation="softmax", name="d")])


X = np.random.default_rng(0).normal(size=(32, 12, 12, 3)).astype(np.float32)


def test_orm_is_linear_cka():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(20, 7))
    assert MP.orm(a, a) == pytest.approx(1.0)
    assert MP.orm(a, 3.0 * a) == pytest.approx(1.0)                 # scale invariant
    q, _ = np.linalg.qr(rng.normal(size=(7, 7)))
    assert MP.orm(a, a @ q) == pytest.approx(1.0)                   # rotation invariant
    b = rng.normal(size=(20, 5))
    ac, bc = a - a.mean(0), b - b.mean(0)                           # feature-space closed form
    ref = np.linalg.norm(ac.T @ bc) ** 2 / (np.linalg.norm(ac.T @ ac) * np.linalg.norm(bc.T @ bc))
    assert MP.orm(a, b) == pytest.approx(ref, rel=1e-9)


def test_allocation_respects_budget_and_prefers_important_layers():
    params = [1000, 1000, 1000, 1000]
    values = [[t * b / 8 for b in (2, 4, 8)] for t in (0.1, 0.9, 0.5, 0.3)]
    budget = (8 + 4 + 2 + 2) * 1000 / 8
    bits = MP.allocate(values, params, (2, 4, 8), budget)
    assert sum(p * b / 8 for p, b in zip(params, bits)) <= budget
    assert bits == [2, 8, 4, 2]
    for budget in (1000.0, 1500.0, 2600.0, 4000.0):            # exact for every budget
        bits = MP.allocate(values, params, (2, 4, 8), budget)
        assert sum(p * b / 8 for p, b in zip(params, bits)) <= budget
        order = np.argsort([0.1, 0.9, 0.5, 0.3])
        assert list(np.array(bits)[order]) == sorted(bits)   # more important never gets fewer bits


def test_ompq_plan_budget_apply_and_serialization(tmp_path):
    model = _model()
    plan = MP.ompq(model, X, bit_choices=(2, 4, 8), size_budget_kb=5)
    assert plan.size_bytes <= 5 * 1024
    assert plan.bits["c1"] == 8 and plan.bits["d"] == 8           # first/last fixed
    assert all(r["theta"] is not None and r["theta"] > 0 for r in plan.layers)
    again = MP.BitPlan.from_json(plan.to_json())
    assert again.bits == plan.bits and json.loads(again.to_json()) == json.loads(plan.to_json())
    q = MP.apply(model, plan)
    for name, bits in plan.bits.items():
        layer = q.get_layer(name)
        quant = getattr(layer, "kernel_quantizer", None) or layer.depthwise_quantizer
        assert quant.precision == bits, name
    # Reference: the float model with each planned kernel replaced by its LSQ grid computed in
    # numpy from the trained step sizes, w_q = s * clip(round(w / s), -Q_n, Q_p), the same
    # kernel layout (per output channel for Conv2D/Dense, per tensor for the depthwise kernel).
    ref = keras.models.clone_model(model)
    ref.set_weights(model.get_weights())
    for name, bits in plan.bits.items():
        layer = q.get_layer(name)
        quant = getattr(layer, "kernel_quantizer", None) or layer.depthwise_quantizer
        kernel = (layer.kernel if hasattr(layer, "kernel") else layer.depthwise_kernel).numpy()
        s = np.asarray(quant.step.numpy(), np.float64)
        q_n, q_p = quant.q_range
        assert (q_n, q_p) == (2 ** (bits - 1), 2 ** (bits - 1) - 1)
        w_q = s * np.clip(np.round(kernel / s), -q_n, q_p)
        target = ref.get_layer(name)
        target.set_weights([w_q.astype(np.float32)] + target.get_weights()[1:])
        assert len(np.unique(w_q)) <= 2 ** bits * (kernel.shape[-1] if s.size > 1 else 1)
    np.testing.assert_allclose(q.predict(X, verbose=0), ref.predict(X, verbose=0), atol=2e-6)
    assert np.abs(q.predict(X, verbose=0) - model.predict(X, verbose=0)).max() > 1e-4  # quantized
    assert "c3" in plan.table() and plan.plot(tmp_path / "p.png").stat().st_size > 1000


def test_ompq_bops_budget_and_baselines():
    model = _model()
    uni = MP.uniform_plan(model, 4)
    assert set(uni.bits.values()) == {4, 8}
    tight = MP.ompq(model, X, size_budget_kb=20, bops_budget=uni.bops)
    assert tight.bops <= uni.bops
    sens = MP.sensitivity_plan(model, X, size_budget_kb=uni.size_bytes / 1024)
    assert sens.size_bytes <= uni.size_bytes
    assert all("sensitivity" in r for r in sens.layers if not r["fixed"])


def test_bad_input():
    model = _model()
    with pytest.raises(MP.MixedPrecisionError, match="smallest feasible size_budget_kb is 3.590"):
        MP.ompq(model, X, size_budget_kb=0.5)
    with pytest.raises(MP.MixedPrecisionError, match="bit_choices"):
        MP.ompq(model, X, bit_choices=(1, 4), size_budget_kb=5)
    with pytest.raises(MP.MixedPrecisionError, match="no Conv2D"):
        MP.ompq(keras.Sequential([keras.Input((3,)), keras.layers.ReLU()]), X, size_budget_kb=1)
    bad = MP.BitPlan("x", [{"name": "nope", "bits": 4, "params": 1, "macs": 1}])
    with pytest.raises(MP.MixedPrecisionError, match="nope"):
        MP.apply(model, bad)
    with pytest.raises(MP.MixedPrecisionError, match="BitPlan"):
        MP.BitPlan.from_json("[1, 2]")
