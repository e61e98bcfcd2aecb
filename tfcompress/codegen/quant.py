"""The integer parameters TFLite's kernels derive from quantization scales, computed offline.

Each function reproduces what a TFLite/LiteRT kernel's ``Prepare`` computes (in the same
floating-point precision, float32 or double, as the C++ does), so the generated C uses exactly
the multipliers, shifts and clamps of the reference interpreter:

- :func:`quantize_multiplier`: ``tflite::QuantizeMultiplier`` (``frexp``, Q31 significand,
  round half away from zero).
- :func:`activation_range_int8`: ``CalculateActivationRangeQuantized``.
- :func:`softmax_params`: ``PreprocessSoftmaxScaling`` and ``CalculateInputRadius`` with 5
  integer bits (``kScaledDiffIntegerBits``).
- :func:`lut_int8`: ``LUTPopulateInt8`` for LOGISTIC/TANH (the float transform evaluated with
  the C library's ``expf``/``tanhf`` through ctypes, as the interpreter does).
- :func:`lce_output_transform`: LCE's ``OneTimeSetup`` fusing the back-transformation and the
  int8 scale into the float multiplier/bias and clamps.
"""

import ctypes
import ctypes.util
import math

import numpy as np

F32 = np.float32
INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1


def round_half_away(x):
    """``std::round`` / ``TfLiteRound``: ties away from zero."""
    return math.floor(x + 0.5) if x >= 0 else -math.floor(-x + 0.5)


def quantize_multiplier(real):
    """``(significand, shift)`` with ``real ~= significand * 2**(shift - 31)``."""
    real = float(real)
    if real == 0.0:
        return 0, 0
    q, shift = math.frexp(real)
    q_fixed = int(round_half_away(q * (1 << 31)))
    if q_fixed == (1 << 31):
        q_fixed //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    if q_fixed > INT32_MAX:
        raise ValueError(f"multiplier {real} does not fit in Q31")
    return int(q_fixed), int(shift)


def quantize_multiplier_smaller_than_one(real):
    if not 0.0 < real < 1.0:
        raise ValueError(f"expected a multiplier in (0, 1), got {real}")
    m, s = quantize_multiplier(real)
    if s > 0:
        raise ValueError(f"multiplier {real} has a positive shift")
    return m, s


def _quantize_f(scale, zero_point, f):
    """kernel_util.cc ``Quantize``: float32 division, round half away."""
    tmp = round_half_away(float(F32(f) / F32(scale)))
    return int(zero_point) + int(tmp)


def activation_range_int8(activation, scale, zero_point, qmin=-128, qmax=127):
    """(act_min, act_max) of a fused activation on an int8 output."""
    if activation in (None, "NONE"):
        return qmin, qmax
    if activation == "RELU":
        return max(qmin, _quantize_f(scale, zero_point, 0.0)), qmax
    if activation == "RELU6":
        return (max(qmin, _quantize_f(scale, zero_point, 0.0)),
                min(qmax, _quantize_f(scale, zero_point, 6.0)))
    if activation == "RELU_N1_TO_1":
        return (max(qmin, _quantize_f(scale, zero_point, -1.0)),
                min(qmax, _quantize_f(scale, zero_point, 1.0)))
    raise ValueError(f"fused activation {activation} is not supported on int8 outputs")


FLOAT_MAX = float(np.finfo(np.float32).max)


def activation_range_float(activation):
    """``CalculateActivationRange<float>``."""
    if activation in (None, "NONE"):
        return -FLOAT_MAX, FLOAT_MAX
    if activation == "RELU":
        return 0.0, FLOAT_MAX
    if activation == "RELU6":
        return 0.0, 6.0
    if activation == "RELU_N1_TO_1":
        return -1.0, 1.0
    raise ValueError(f"fused activation {activation} is not supported")


def conv_per_channel(input_scale, filter_scales, output_scale, channels):
    """``PopulateConvolutionQuantizationParams``: per-channel (multiplier, shift) lists."""
    scales = np.asarray(filter_scales, np.float32).reshape(-1)
    mults, shifts = [], []
    for c in range(channels):
        fs = float(scales[c] if scales.size > 1 else scales[0])
        eff = float(F32(input_scale)) * fs / float(F32(output_scale))
        m, s = quantize_multiplier(eff)
        mults.append(m)
        shifts.append(s)
    return mults, shifts


def softmax_params(beta, input_scale):
    """(input_multiplier, input_left_shift, diff_min) of the int8 reference softmax."""
    integer_bits = 5
    max_real = float((1 << 31) - 1)
    real = min(float(beta) * float(F32(input_scale)) * (1 << (31 - integer_bits)), max_real)
    m, shift = quantize_multiplier(real)  # QuantizeMultiplierGreaterThanOne
    if shift < 0:
        raise ValueError("softmax multiplier smaller than one")
    max_input_rescaled = (1.0 * ((1 << integer_bits) - 1) * (1 << (31 - integer_bits))
                          / (1 << shift))
    diff_min = -int(math.floor(max_input_rescaled))
    return m, shift, diff_min


_LIBM = None


def _libm():
    global _LIBM
    if _LIBM is None:
        name = ctypes.util.find_library("m") or "libm.so.6"
        lib = ctypes.CDLL(name)
        for fn in ("expf", "tanhf"):
            getattr(lib, fn).restype = ctypes.c_float
            getattr(lib, fn).argtypes = [ctypes.c_float]
        _LIBM = lib
    return _LIBM


def lut_int8(kind, input_scale, input_zero_point, output_scale, output_zero_point):
    """The 256-entry table of LOGISTIC/TANH on int8 (index = input byte as uint8)."""
    lib = _libm()

    def transform(v):
        if kind == "LOGISTIC":
            return F32(F32(1.0) / (F32(1.0) + F32(lib.expf(float(-v)))))
        return F32(lib.tanhf(float(v)))

    inv = F32(F32(1.0) / F32(output_scale))
    table = np.zeros(256, np.int8)
    for val in range(-128, 128):
        deq = F32(F32(input_scale) * F32(val - input_zero_point))
        rescaled = round_half_away(float(F32(transform(deq) * inv)))
        q = int(F32(rescaled) + F32(output_zero_point))
        table[val & 0xFF] = max(-128, min(127, q))
    return table


def lce_output_transform(post_mul, post_bias, backtransform_add, activation, out_scale=None,
                         out_zero_point=0):
    """LCE ``OneTimeSetup``: fused float multiplier/bias (float32 arrays) and int32 clamps for
    ``x = 2 * popcount``."""
    scale = float(F32(out_scale)) if out_scale is not None else 1.0
    zp = float(out_zero_point) if out_scale is not None else 0.0
    pm = np.asarray(post_mul, np.float32).astype(np.float64)
    pb = np.asarray(post_bias, np.float32).astype(np.float64)
    mul = (-1.0 * pm / scale).astype(np.float32)
    bias = ((pb + float(backtransform_add) * pm) / scale + zp).astype(np.float32)
    nominal = {"NONE": (INT32_MIN, INT32_MAX), None: (INT32_MIN, INT32_MAX),
               "RELU": (0, INT32_MAX), "RELU_N1_TO_1": (-1, 1), "RELU6": (0, 6)}
    if activation not in nominal:
        raise ValueError(f"LceBconv2d fused activation {activation} is not supported")
    lo, hi = nominal[activation]
    lo = max(lo, -backtransform_add)
    hi = min(hi, backtransform_add)
    return mul, bias, -hi + backtransform_add, -lo + backtransform_add


__all__ = ["activation_range_float", "activation_range_int8", "conv_per_channel",
           "lce_output_transform", "lut_int8", "quantize_multiplier",
           "quantize_multiplier_smaller_than_one", "round_half_away", "softmax_params"]
