"""What :meth:`tfcompress.runtime.Interpreter.prepare` accepts: the input rules.

Nothing is guessed. An array must have the input's shape, or that shape without its batch axis
of size 1; it is never reshaped or transposed (an NCHW array for an NHWC model has the right
number of values and would run to a confident wrong answer). Floats are cast to a float input
or quantized, ``q = clip(round(x / scale + zero_point), lo, hi)``, for an int8/uint8/int16
input; NaN and infinities are refused. Integers are never converted between number formats:
for a quantized input they must already be its quantized values in its exact type (uint8
pixels given to an int8 model would otherwise wrap around: 200 -> -56), for a float input they
are refused (scaling them is the caller's decision), for a plain integer input (token ids)
they must fit its range.
"""

import numpy as np

INT_RANGES = {"int8": (-128, 127), "uint8": (0, 255), "int16": (-32768, 32767)}

__all__ = ["INT_RANGES", "check_dtype", "dequantize", "quantize", "shape_error"]


def quantize(x, dtype, scale, zero_point):
    """Float array -> integer tensor: ``clip(round(x / scale + zero_point), lo, hi)``.

    ``round`` is numpy's (half to even); values outside the type's range saturate.
    """
    lo, hi = INT_RANGES[dtype]
    q = np.round(np.asarray(x, np.float64) / scale + zero_point)
    return np.clip(q, lo, hi).astype(dtype)


def dequantize(q, scale, zero_point):
    """Integer tensor -> float32: ``(q - zero_point) * scale``."""
    return ((np.asarray(q, np.float64) - zero_point) * scale).astype(np.float32)


def shape_error(spec, shape, what="an array"):
    want = tuple(spec["shape"])
    msg = (f"Input {spec['name']!r} of this model has shape {want}; got {what} of shape "
           f"{tuple(shape)}.")
    if len(want) >= 1 and want[0] == 1:
        msg += f" Only a missing batch axis is added (an array of shape {want[1:]} is fine);"
    msg += " nothing is reshaped or transposed."
    if sorted(shape) in (sorted(want), sorted(want[1:])) and tuple(shape) != want[1:]:
        msg += (" The array holds as many values in another layout: if it is channels-first "
                "(NCHW), transpose it to channels-last (NHWC), e.g. x.transpose(0, 2, 3, 1).")
    return ValueError(msg)


def check_dtype(a, spec):
    """``a`` as the input's dtype under the rules of :meth:`Interpreter.prepare`."""
    name, want = spec["name"], spec["dtype"]
    kind = a.dtype.kind
    quantized = want in INT_RANGES and spec["scale"] is not None
    if kind not in "biuf":
        raise ValueError(f"Input {name!r} must be a numeric array; got dtype {a.dtype}.")
    if kind == "f" and a.size and not np.isfinite(a).all():
        bad = int(np.size(a) - np.isfinite(a).sum())
        raise ValueError(f"Input {name!r} contains {bad} NaN or infinite value(s); "
                         "the interpreter would return garbage for them.")
    if quantized:
        if kind == "f":
            return quantize(a, want, spec["scale"], spec["zero_point"])
        if a.dtype != np.dtype(want):
            raise ValueError(
                f"Input {name!r} of this model is quantized {want} (scale {spec['scale']:.6g}, "
                f"zero point {spec['zero_point']}); got an integer array of type {a.dtype}. "
                f"Integer arrays are passed unchanged, so they must already be {want} "
                "quantized values. Pass float values instead to have them quantized (raw "
                "uint8 pixels: scale them to the float range the model was trained on first)."
            )
        return a
    if want.startswith("float"):
        if kind != "f":
            raise ValueError(
                f"Input {name!r} of this model is {want}; got an integer array of type "
                f"{a.dtype}. Integers are not converted to floats for you: scale them as the "
                "model was trained (for example raw pixels as x / 127.5 - 1) and pass floats."
            )
        return a.astype(want, copy=False)
    if want == "bool":
        if kind != "b":
            raise ValueError(f"Input {name!r} of this model is bool; got {a.dtype}.")
        return a
    try:
        info = np.iinfo(want)
    except ValueError:
        raise ValueError(f"Input {name!r} has type {want}, which tfcompress cannot feed.") from None
    if kind not in "iu":
        raise ValueError(f"Input {name!r} of this model holds integers ({want}); got {a.dtype}.")
    if a.size and (a.min() < info.min or a.max() > info.max):
        raise ValueError(
            f"Input {name!r} of this model is {want} (range {info.min}..{info.max}); got "
            f"{a.dtype} values from {a.min()} to {a.max()}, which do not fit."
        )
    return a.astype(want, copy=False)

