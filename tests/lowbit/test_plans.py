"""Mixed-precision plans (OMPQ, uniform, sensitivity) deploy to every integer target, and the
plan's bits appear per layer in the converted file's report."""

import numpy as np
import pytest

import tfcompress
from tfcompress._keras import keras
from tfcompress.mixed_precision import apply, ompq, sensitivity_plan, uniform_plan

# stem 72 + head 1440 params stay at 8 bits (1512 B); hidden0/1 hold 3456 params
BUDGET_KB = (1512 + 3456 * 4 / 8) / 1024          # the size of the uniform 4-bit plan


@pytest.fixture(scope="module")
def plans(float_mnist, mnist_lowbit):
    (x, _), _ = mnist_lowbit
    return {
        "ompq": ompq(float_mnist, x[:32], bit_choices=(2, 4, 8), size_budget_kb=BUDGET_KB),
        "uniform": uniform_plan(float_mnist, 4),
        "sensitivity": sensitivity_plan(float_mnist, x[:32], bit_choices=(2, 4, 8),
                                        size_budget_kb=BUDGET_KB),
    }


@pytest.mark.parametrize("kind", ["ompq", "uniform", "sensitivity"])
def test_plan_converts_to_every_integer_target(kind, plans, float_mnist, mnist_lowbit):
    (x, _), (xt, _) = mnist_lowbit
    plan = plans[kind]
    assert plan.size_bytes <= BUDGET_KB * 1024 + 1e-6
    qmodel = apply(float_mnist, plan, activation_bits=8, x_sample=x[:256])
    for target in ("int8", "micro", "edgetpu"):
        res = tfcompress.convert(qmodel, target=target, representative_data=x[:100], plan=plan,
                                 allow_low_bit=True)
        rows = [r for r in res.report()["layers"] if r["role"] == "kernel"]
        assert {r["layer"]: r["planned_bits"] for r in rows} == plan.bits
        assert all(r["trained_bits"] == r["planned_bits"] for r in rows)
        assert "(plan" in res.report()["layers_table"]
        if target == "edgetpu":
            assert all(r["stored_bits"] == 8 for r in rows)
        # the file computes what the Keras model computes (no fine-tuning needed for that)
        out = res.interpreter().predict(xt[:100])
        assert np.mean(out.argmax(1) == qmodel.predict(xt[:100], verbose=0).argmax(1)) >= 0.97


def test_ompq_plan_end_to_end(plans, float_mnist, mnist_lowbit):
    (x, y), (xt, yt) = mnist_lowbit
    plan = plans["ompq"]
    qmodel = apply(float_mnist, plan, activation_bits=8, x_sample=x[:256])
    qmodel.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", ["accuracy"])
    qmodel.fit(x[:3840], y[:3840], batch_size=64, epochs=1, verbose=0)
    res = tfcompress.convert(qmodel, target="int8", representative_data=x[:200], plan=plan,
                             allow_low_bit=True)
    rep = res.verify(xt, yt, latency_runs=0)
    assert rep.agreement >= 0.995 and abs(rep.accuracy - rep.keras_accuracy) <= 0.003, rep
    kernels = [r for r in res.report()["layers"] if r["role"] == "kernel"]
    stored = sum(r["weight_bytes"] for r in kernels)
    assert stored <= plan.size_bytes + 1e-6 or any("int8" in " ".join(r["notes"]) for r in kernels)
