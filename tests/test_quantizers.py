"""Tests generated from the quantizer registry, checked against closed forms."""

import json

import numpy as np
import pytest

from tfcompress import quantizers as Q
from tfcompress._keras import keras, tf

ALIASES = sorted(Q.ALIASES)
# one scale per output channel
PER_CHANNEL = {"magnitude_aware_sign", "xnor_weight", "rbcn_sign", "bonn_sign"}
TERNARY = {"ste_tern", "trq"}


def _x(seed=0, shape=(6, 3, 3, 8), scale=0.8):
    return np.random.default_rng(seed).normal(0, scale, shape).astype(np.float32)


def _quantizer(alias):
    q = Q.get(alias)
    if alias == "state_aware_sign":
        q(tf.constant(_x()))
        q.tau_pos.assign(np.linspace(0.5, 1.5, 8).astype(np.float32))
        q.tau_neg.assign(np.linspace(1.2, 0.3, 8).astype(np.float32))
    if alias == "rsign":
        q(tf.constant(_x()))
        q.alpha.assign(np.linspace(-0.3, 0.3, 8).astype(np.float32))
    return q


def _grad(q, x, dy):
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        y = q(xt)
        loss = tf.reduce_sum(y * dy)
    return y.numpy(), tape.gradient(loss, xt).numpy()


# --------------------------------------------------------------- closed-form gradients
def _in(x, c=1.0):
    return (np.abs(x) <= c).astype(np.float32)


def ref_grad(alias, q, x, y):
    """dL/dx / dy for L = sum(y * dy), from the published formulas."""
    if alias in ("ste_sign", "ste_tern"):
        return _in(x)
    if alias == "approx_sign":
        return np.maximum(0.0, 2 - 2 * np.abs(x))
    if alias == "rsign":
        return np.maximum(0.0, 2 - 2 * np.abs(x - q.alpha.numpy()))
    if alias == "swish_sign":
        b = 5.0
        return b * (2 - b * x * np.tanh(b * x / 2)) / (1 + np.cosh(b * x))
    if alias in ("tanh_sign", "ede_sign"):
        t = float(q.t.numpy()) if alias == "ede_sign" else q.t
        k = float(q.k.numpy()) if alias == "ede_sign" else q.k
        return k * t * (1 - np.tanh(t * x) ** 2)
    if alias == "magnitude_aware_sign":
        return np.abs(x).mean(axis=(0, 1, 2)) * _in(x)
    if alias == "xnor_weight":
        n = np.prod(x.shape[:-1])
        return np.abs(x).mean(axis=(0, 1, 2)) * _in(x) + 1.0 / n
    if alias == "rbcn_sign":                       # C approx_sign(W), C per output channel
        return q.scale.numpy() * np.maximum(0.0, 2 - 2 * np.abs(x))
    if alias == "bonn_sign":                       # w ste_sign(k), w per output channel
        return q.w.numpy() * _in(x, q.clip_value)
    if alias == "state_aware_sign":
        tau = np.where(x >= 0, q.tau_pos.numpy(), q.tau_neg.numpy())
        return tau * _in(x)
    if alias == "trq":
        a = float(q.alpha.numpy())
        m0 = _in(x)
        r1 = x - a * np.where(x >= 0, 1.0, -1.0)
        m1 = _in(r1)
        return a * (m0 + m1 * (1 - a * m0))
    if alias == "uniform":
        return np.ones_like(x)          # symmetric min/max range: nothing is clipped
    if alias == "affine":               # the zero-point nudge can put an extreme just outside
        lo, hi = min(x.min(), 0.0), max(x.max(), 0.0)
        scale = (hi - lo) / 255.0
        z = np.clip(np.round(0 - lo / scale), 0, 255)
        v = x.astype(np.float64) / scale + z
        return ((v >= 0) & (v <= 255)).astype(np.float32)
    if alias == "power_of_two":
        e_max = np.round(np.log2(np.abs(x).max()))
        return (np.abs(x) <= 2.0 ** e_max).astype(np.float32)
    if alias == "dorefa":
        return ((x >= 0) & (x <= 1)).astype(np.float32)
    if alias == "pact":
        return ((x >= 0) & (x < float(q.alpha.numpy()))).astype(np.float32)
    if alias in ("lsq", "lsq_plus"):
        q_n, q_p = q.q_range
        s = float(q.step.numpy())
        b = float(q.offset.numpy()) if alias == "lsq_plus" else 0.0
        v = (x - b) / s
        return ((v >= -q_n) & (v <= q_p)).astype(np.float32)   # tf.clip_by_value passes its ends
    raise AssertionError(f"no reference gradient for {alias}")


@pytest.mark.parametrize("alias", ALIASES)
def test_levels_within_precision(alias):
    q = _quantizer(alias)
    y = q(tf.constant(_x(1))).numpy()
    assert isinstance(q.precision, int) and 1 <= q.precision <= 16
    limit = 3 if alias in TERNARY else 2 ** q.precision
    if alias in PER_CHANNEL or alias == "state_aware_sign":
        counts = [len(np.unique(y[..., c])) for c in range(y.shape[-1])]
        assert max(counts) <= limit, counts
    else:
        assert len(np.unique(y)) <= limit
    assert len(np.unique(y)) >= 2


@pytest.mark.parametrize("alias", ALIASES)
def test_gradient_matches_closed_form(alias):
    q = _quantizer(alias)
    x = _x(2)
    if alias == "dorefa":
        x = x + 0.5                  # activations mode works on [0, 1]
    dy = np.random.default_rng(3).normal(size=x.shape).astype(np.float32)
    q(tf.constant(x))                 # first call runs any data-dependent initialization
    y, g = _grad(q, x, dy)
    np.testing.assert_allclose(g, dy * ref_grad(alias, q, x, y), rtol=1e-4, atol=1e-5)


def test_lsq_step_gradient_closed_form():
    q = Q.LSQ(bits=3)
    x = _x(4)
    q(tf.constant(x))
    s = float(q.step.numpy())
    assert s == pytest.approx(2 * np.abs(x).mean() / np.sqrt(3), rel=1e-5)   # the paper's init
    dy = np.random.default_rng(5).normal(size=x.shape).astype(np.float32)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(q(tf.constant(x), training=True) * dy)
    ds = tape.gradient(loss, q.step).numpy()
    q_n, q_p = 4.0, 3.0
    v = x / s
    dv = np.where(v <= -q_n, -q_n, np.where(v >= q_p, q_p, -v + np.round(v)))
    g = 1 / np.sqrt(x.size * q_p)
    assert ds == pytest.approx(float((dy * dv).sum() * g), rel=1e-4)
    # Inference runs the same grid as a FakeQuant op (what TFLite exports).
    np.testing.assert_allclose(q(tf.constant(x), training=False).numpy(),
                               q(tf.constant(x), training=True).numpy(), atol=1e-6)


def test_pact_alpha_gradient_and_penalty():
    q = Q.PACT(bits=2, init=1.0, l2=0.01)
    x = _x(6, scale=1.5)
    dy = np.ones_like(x)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(q(tf.constant(x)) * dy)
    assert tape.gradient(loss, q.alpha).numpy() == pytest.approx(float((x >= 1.0).sum()))
    assert float(q.losses[0]) == pytest.approx(0.01)


def test_uniform_affine_zero_exact_and_per_channel():
    q = Q.Uniform(bits=8, symmetric=False)
    x = np.concatenate([_x(7).ravel() + 0.3, [0.0]]).astype(np.float32)
    y = q(tf.constant(x)).numpy()
    assert y[-1] == 0.0                        # zero is exactly representable
    assert np.abs(y - x).max() <= (x.max() - min(x.min(), 0)) / 255 / 2 + 1e-6
    pc = Q.Uniform(bits=4, per_channel=True)
    w = _x(8) * np.arange(1, 9, dtype=np.float32)
    yw = pc(tf.constant(w)).numpy()
    for c in range(8):
        step = np.abs(w[..., c]).max() / 7
        assert np.abs(yw[..., c] - w[..., c]).max() <= step / 2 + 1e-6


def test_uniform_ema_ranges_for_activations():
    q = Q.Uniform(bits=8, ema_decay=0.5)
    a = np.linspace(-1, 1, 11, dtype=np.float32)
    q(tf.constant(a), training=True)
    q(tf.constant(3 * a), training=True)
    assert float(q.range_max.numpy()) == pytest.approx(0.5 * 1 + 0.5 * 3)
    q(tf.constant(10 * a), training=False)     # inference reads, does not update
    assert float(q.range_max.numpy()) == pytest.approx(2.0)


def test_trq_levels_and_residual_generalization():
    w = _x(9)
    q1 = Q.TRQ(residuals=1)
    y = q1(tf.constant(w)).numpy()
    a = float(q1.alpha.numpy())
    assert a == pytest.approx(0.35 * np.abs(w).mean(), rel=1e-5)
    np.testing.assert_allclose(np.unique(y), [-2 * a, 0, 2 * a], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(y, np.where(np.abs(w) > a, 2 * a * np.sign(w), 0), atol=1e-6)
    q2 = Q.TRQ(residuals=2)
    y2 = q2(tf.constant(w)).numpy()
    a2 = float(q2.alpha.numpy())
    assert set(np.round(np.unique(y2) / a2).astype(int)) <= {-3, -1, 1, 3}
    assert q2.precision == 2 and Q.TRQ(residuals=3).precision == 3


def test_ede_schedule_values_and_callback():
    t0, k0 = Q.ede_values(0, 10)
    assert (t0, k0) == pytest.approx((0.1, 10.0))
    t, k = Q.ede_values(10, 10)
    assert (t, k) == pytest.approx((10.0, 1.0))
    from tfcompress.layers import QuantDense

    m = keras.Sequential([keras.Input((4,)), QuantDense(3, input_quantizer="ede_sign",
                                                        kernel_quantizer="ste_sign",
                                                        kernel_constraint="weight_clip")])
    m.compile("adam", "mse")
    m.fit(np.ones((8, 4)), np.zeros((8, 3)), epochs=3, verbose=0, callbacks=[Q.EDESchedule(4)])
    q = m.layers[0].input_quantizer
    assert float(q.t.numpy()) == pytest.approx(Q.ede_values(2, 4)[0], rel=1e-5)
    with pytest.raises(ValueError, match="no EDESign"):
        plain = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        plain.compile("adam", "mse")
        plain.fit(np.ones((2, 4)), np.ones((2, 1)), verbose=0, callbacks=[Q.EDESchedule(2)])


@pytest.mark.parametrize("alias", ALIASES)
def test_config_round_trip_is_identical(alias):
    q = Q.get(alias)
    config = q.get_config()
    again = type(q).from_config(config).get_config()
    assert json.dumps(config, sort_keys=True) == json.dumps(again, sort_keys=True)
    ser = Q.serialize(q)
    back = Q.get(ser)
    assert type(back) is type(q) and back.precision == q.precision


@pytest.fixture(scope="module")
def reloaded(tmp_path_factory):
    """Train one tiny model per quantizer, save each as .keras, reload all in a fresh process."""
    import subprocess
    import sys

    tmp = tmp_path_factory.mktemp("reload")
    before = {}
    for alias in ALIASES:
        keras.utils.set_random_seed(0)
        x = _x(10, shape=(4, 5, 5, 8))
        if alias == "dorefa":
            x = np.abs(x)
        model = keras.Sequential([keras.Input((5, 5, 8)), keras.layers.Conv2D(8, 1), Q.get(alias)])
        model.compile("adam", "mse")
        model.fit(x, np.zeros_like(x), epochs=1, verbose=0)  # moves trainable quantizer state
        before[alias] = model.predict(x, verbose=0)
        model.save(tmp / f"{alias}.keras")
        np.save(tmp / f"{alias}_x.npy", x)
    code = (
        "import tfcompress, numpy as np, sys\nfrom tfcompress._keras import keras\n"
        f"for a in {ALIASES!r}:\n"
        f"    m = keras.models.load_model({str(tmp)!r} + '/' + a + '.keras')\n"
        f"    np.save({str(tmp)!r} + '/' + a + '_out.npy', m.predict(np.load({str(tmp)!r} + '/' + a + '_x.npy'), verbose=0))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return {a: (before[a], np.load(tmp / f"{a}_out.npy")) for a in ALIASES}


@pytest.mark.parametrize("alias", ALIASES)
def test_model_save_reload_identical_outputs(alias, reloaded):
    before, after = reloaded[alias]
    np.testing.assert_array_equal(after, before)


def test_get_accepts_none_alias_dict_callable_and_rejects_junk():
    assert Q.get(None) is None
    assert Q.get("LSQ").precision == 4
    assert Q.get({"class_name": "lsq", "config": {"bits": 3}}).precision == 3
    fn = lambda x: x  # noqa: E731
    assert Q.get(fn) is fn
    with pytest.raises(ValueError, match="Valid aliases: .*lsq.*trq"):
        Q.get("lsqq")
    with pytest.raises(ValueError, match="Unknown quantizer"):
        Q.get(42)


@pytest.mark.parametrize("factory", [lambda: Q.Uniform(bits=0), lambda: Q.Uniform(bits=17),
                                     lambda: Q.LSQ(bits=1), lambda: Q.LSQ(bits=2.5),
                                     lambda: Q.PACT(bits=20), lambda: Q.PowerOfTwo(bits=-1),
                                     lambda: Q.TRQ(residuals=0)])
def test_impossible_bit_widths(factory):
    with pytest.raises(ValueError, match="must be an integer in"):
        factory()


def test_wrong_axis_for_per_channel():
    q = Q.Uniform(bits=8, per_channel=True, axis=5)
    with pytest.raises(ValueError, match="axis=5 is out of range"):
        q(tf.constant(_x()))
    q = Q.LSQ(bits=4, per_channel=True, axis=0)
    with pytest.raises(ValueError, match="unknown"):
        q.build(tf.TensorShape([None, 4]))
