"""Every exported integer grid reproduces its quantizer's own output exactly (per quantizer and
bit width), round trips of the quantizers' configs are untouched, and bad requests are named."""

import larq as lq
import numpy as np
import pytest

from tfcompress import quantizers as Q
from tfcompress._keras import keras, tf
from tfcompress.quantizers.grid import IntegerGrid, integer_grid

BITS = (2, 3, 4, 8)


def _weight_quantizers():
    for b in BITS:
        yield f"uniform{b}", Q.Uniform(bits=b, per_channel=True)
        yield f"uniform_narrow{b}", Q.Uniform(bits=b, narrow_range=True)
        yield f"affine{b}", Q.Uniform(bits=b, symmetric=False, per_channel=True)
        yield f"lsq{b}", Q.LSQ(bits=b, per_channel=True)
        yield f"dorefa{b}", lq.quantizers.DoReFa(k_bit=b, mode="weights")
    for b in (2, 3, 4, 5):
        yield f"pow2_{b}", Q.PowerOfTwo(bits=b, per_channel=True)
    for n in (1, 2, 3):
        yield f"trq{n}", Q.TRQ(residuals=n, per_channel=True)
    yield "ste_tern", Q.ste_tern()


def _activation_quantizers():
    for b in BITS:
        yield f"lsq{b}", Q.LSQ(bits=b, signed=True)
        yield f"lsq_unsigned{b}", Q.LSQ(bits=b, signed=False)
        yield f"lsq_plus{b}", Q.LSQPlus(bits=b)
        yield f"pact{b}", Q.PACT(bits=b, init=3.0)
        yield f"uniform_ema{b}", Q.Uniform(bits=b, ema_decay=0.9)
        yield f"affine_ema{b}", Q.Uniform(bits=b, symmetric=False, ema_decay=0.9)
        yield f"dorefa{b}", lq.quantizers.DoReFa(k_bit=b, mode="activations")


@pytest.mark.parametrize("name,quantizer", list(_weight_quantizers()), ids=lambda v: v if isinstance(v, str) else "")
def test_weight_grid_matches_quantizer_output(name, quantizer, rng):
    w = tf.constant(rng.normal(0, 0.1, (3, 3, 4, 6)).astype(np.float32))
    out = quantizer(w).numpy()
    grid = integer_grid(quantizer, w)
    q = grid.integers(out, name=name)
    assert grid.integral_zero_point
    # decode: the integers and the grid give back the quantizer's output (float32 rounding)
    np.testing.assert_allclose(grid.scale * (q - grid.zero_point), out, rtol=1e-5, atol=1e-7)
    assert grid.bits == quantizer.precision
    if grid.levels is not None:
        assert set(np.unique(q)) <= set(grid.levels)
    # every grid uses at most 2^bits levels
    n_levels = len(grid.levels) if grid.levels is not None else grid.qmax - grid.qmin + 1
    assert n_levels <= 2 ** grid.bits


@pytest.mark.parametrize("name,quantizer", list(_activation_quantizers()), ids=lambda v: v if isinstance(v, str) else "")
def test_activation_grid_matches_quantizer_output(name, quantizer, rng):
    x = tf.constant(rng.normal(0.3, 1.0, (16, 5, 5, 3)).astype(np.float32))
    quantizer(x, training=True) if "ema" in name else quantizer(x)   # build + initialize
    grid = integer_grid(quantizer)
    assert grid.static and grid.per_tensor
    x2 = tf.constant(rng.normal(0.3, 6.0, (16, 5, 5, 3)).astype(np.float32))
    out = quantizer(x2, training=False).numpy() if hasattr(quantizer, "integer_grid") else quantizer(x2).numpy()
    q = grid.integers(out, name=name)
    np.testing.assert_allclose(grid.scale * (q - grid.zero_point), out, rtol=1e-5, atol=1e-6)
    # far outside the range the quantizer clamps to exactly the grid's end points
    ends = tf.constant([[-1e4, 1e4]], tf.float32)
    ends = quantizer(ends, training=False) if hasattr(quantizer, "integer_grid") else quantizer(ends)
    lo, hi = grid.integers(ends.numpy(), name=name)[0]
    assert (lo, hi) == (grid.qmin, grid.qmax)


def test_lsq_plus_zero_point_is_the_learned_offset():
    qz = Q.LSQPlus(bits=4)
    qz(tf.constant(np.linspace(-0.7, 2.0, 50, dtype=np.float32)))
    g = integer_grid(qz)
    np.testing.assert_allclose(g.zero_point, -qz.offset.numpy() / qz.step.numpy())


def test_grid_errors_name_the_cause():
    with pytest.raises(ValueError, match="1-bit"):
        integer_grid(lq.quantizers.SteSign())
    with pytest.raises(ValueError, match="ema_decay"):
        integer_grid(Q.Uniform(bits=4))
    with pytest.raises(ValueError, match="PowerOfTwo.*tensor"):
        integer_grid(Q.PowerOfTwo(bits=3))
    with pytest.raises(ValueError, match="not built"):
        integer_grid(Q.LSQ(bits=4))
    with pytest.raises(ValueError, match="does not export"):
        integer_grid(lq.quantizers.SwishSign() if False else keras.layers.ReLU())
    g = IntegerGrid(2, 0.5, 0.0, -2, 1, kind="t")
    with pytest.raises(ValueError, match="not on the t grid"):
        g.integers(np.array([0.26]))
    with pytest.raises(ValueError, match="outside the grid range"):
        g.integers(np.array([1.0]))
    with pytest.raises(ValueError, match="positive"):
        IntegerGrid(2, 0.0, 0.0, -2, 1)


@pytest.mark.parametrize("quantizer", [Q.Uniform(bits=3, ema_decay=0.9, per_channel=True), Q.LSQ(bits=3),
                                       Q.PACT(bits=3), Q.TRQ(residuals=2), Q.PowerOfTwo(bits=3)])
def test_config_round_trip_unchanged(quantizer):
    config = quantizer.get_config()
    again = type(quantizer).from_config(config).get_config()
    assert config == again
