"""The integer parameters computed offline (closed forms; the op tests check them end to end
against the interpreters)."""

import math

import numpy as np
import pytest

from tfcompress.codegen import quant


@pytest.mark.parametrize("real,expected", [(0.5, (1 << 30, 0)), (1.0, (1 << 30, 1)),
                                           (0.75, (3 << 29, 0)), (0.0, (0, 0)),
                                           (2.0 ** -40, (0, 0))])
def test_quantize_multiplier_closed_forms(real, expected):
    assert quant.quantize_multiplier(real) == expected


def test_quantize_multiplier_is_within_half_a_q31_step():
    rng = np.random.default_rng(0)
    for real in rng.uniform(1e-6, 50.0, 500):
        m, s = quant.quantize_multiplier(real)
        assert (1 << 30) <= m < (1 << 31)
        assert abs(m * 2.0 ** (s - 31) - real) <= 2.0 ** (s - 32) * (1 + 1e-12)


def test_round_half_away_and_activation_ranges():
    assert [quant.round_half_away(v) for v in (0.5, 1.5, -0.5, -2.5, 2.4999)] == [1, 2, -1, -3, 2]
    assert quant.activation_range_int8("RELU6", 6 / 255, -128) == (-128, 127)
    assert quant.activation_range_int8("RELU", 0.1, 10) == (10, 127)
    assert quant.activation_range_int8("NONE", 0.1, 10) == (-128, 127)
    with pytest.raises(ValueError):
        quant.activation_range_int8("TANH", 0.1, 0)


def test_lce_output_transform_closed_form():
    """y = (K - x) * mul + bias with x = 2 * popcount, folded as x * (-mul) + (bias + K mul)."""
    mul, bias, lo, hi = quant.lce_output_transform([0.5, -2.0], [1.0, 3.0], 27, "RELU")
    np.testing.assert_allclose(mul, [-0.5, 2.0])
    np.testing.assert_allclose(bias, [1.0 + 27 * 0.5, 3.0 - 27 * 2.0])
    # RELU on K - x >= 0  <=>  x <= K; clamps are on x
    assert (lo, hi) == (0, 27)
    x = 10
    assert math.isclose(x * mul[0] + bias[0], (27 - x) * 0.5 + 1.0)


def test_softmax_params_match_the_reference_radius():
    m, shift, diff_min = quant.softmax_params(1.0, 1 / 16)
    assert (1 << 30) <= m < (1 << 31) and shift >= 0
    assert diff_min == -math.floor(31 * (1 << 26) / (1 << shift))
