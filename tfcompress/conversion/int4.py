"""Packed sub-byte weight storage: TFLite's ``INT4`` (and ``INT2``) tensor types.

A packed tensor stores its row-major integers two (INT4) or four (INT2) to a byte, the first
element in the lowest bits, two's complement, the last byte zero-padded. The runtimes unpack
the filter to int8 when the model is prepared, so the file (flash) holds the trained width while
the kernels still compute with int8 arithmetic (the "compute bits" of the report).

Which operators accept packed filters was measured op by op in the pinned runtimes
(ai-edge-litert 2.3.0 with and without XNNPACK, tflite-micro 0.dev20261023182759; the tests in
``tests/lowbit/test_int4.py`` re-check every entry, and that the excluded ones are refused):

============================  =====================  ================================
operator                      LiteRT (int8 inputs)   TFLite Micro (int8 inputs)
============================  =====================  ================================
CONV_2D                       INT4                   INT4
DEPTHWISE_CONV_2D             INT4                   INT4
FULLY_CONNECTED               INT4, INT2             refused ("filter->type != Int4")
TRANSPOSE_CONV                refused                refused
============================  =====================  ================================

The Edge TPU compiler maps 8-bit tensors only, so the ``edgetpu`` target packs nothing.
"""

import numpy as np

# target -> op -> packed storage widths it runs (the target's file must run in its runtime;
# the "micro" target's file also runs in LiteRT, whose table is a superset for these ops).
PACKED_SUPPORT = {
    "int8": {"CONV_2D": (4,), "DEPTHWISE_CONV_2D": (4,), "FULLY_CONNECTED": (4, 2)},
    "micro": {"CONV_2D": (4,), "DEPTHWISE_CONV_2D": (4,)},
    "edgetpu": {},
}
_RANGES = {2: (-2, 1), 4: (-8, 7), 8: (-128, 127)}


def pack(ints, bits):
    """Pack signed integers (any shape, row-major) into bytes, ``8 // bits`` per byte, the
    first element in the least significant bits.

    >>> pack([1, -2, 7, -8, 3], 4).hex()
    'e18703'
    """
    if bits not in (2, 4):
        raise ValueError(f"Packed storage is 2 or 4 bits, got {bits}.")
    q = np.asarray(ints, np.int64).ravel()
    lo, hi = _RANGES[bits]
    if q.size and (q.min() < lo or q.max() > hi):
        raise ValueError(f"Integers span [{q.min()}, {q.max()}]; INT{bits} holds [{lo}, {hi}].")
    per = 8 // bits
    pad = (-q.size) % per
    u = (np.concatenate([q, np.zeros(pad, np.int64)]) & ((1 << bits) - 1)).astype(np.uint8)
    u = u.reshape(-1, per)
    out = np.zeros(len(u), np.uint8)
    for i in range(per):
        out |= (u[:, i] << (bits * i)).astype(np.uint8)
    return out.tobytes()


def unpack(data, count, bits):
    """Inverse of :func:`pack`: ``count`` signed integers from packed bytes (int8 array)."""
    if bits not in (2, 4):
        raise ValueError(f"Packed storage is 2 or 4 bits, got {bits}.")
    b = np.frombuffer(bytes(data), np.uint8)
    per = 8 // bits
    if len(b) * per < count:
        raise ValueError(f"{len(b)} bytes hold at most {len(b) * per} INT{bits} values, not {count}.")
    mask = (1 << bits) - 1
    vals = np.stack([(b >> (bits * i)) & mask for i in range(per)], axis=1).ravel()[:count]
    vals = vals.astype(np.int16)
    vals = np.where(vals >= (1 << (bits - 1)), vals - (1 << bits), vals)
    return vals.astype(np.int8)


def storage_bits(op, target, trained_bits, ints):
    """The narrowest width the ``target``'s runtime runs for ``op``'s filter: 2 or 4 (packed)
    when the layer was trained at 4 bits or fewer and every integer fits, else 8."""
    if trained_bits is None or trained_bits > 4 or not np.size(ints):
        return 8
    lo, hi = int(np.min(ints)), int(np.max(ints))
    for bits in sorted(PACKED_SUPPORT.get(target, {}).get(op, ())):
        if _RANGES[bits][0] <= lo and hi <= _RANGES[bits][1]:
            return bits
    return 8


def packed_reason(op, target, trained_bits, ints):
    """Why a layer trained at ``trained_bits`` <= 4 is stored as int8 (for errors/reports)."""
    widths = PACKED_SUPPORT.get(target, {}).get(op, ())
    if not widths:
        runtime = {"int8": "LiteRT", "micro": "TFLite Micro", "edgetpu": "the Edge TPU"}.get(target, target)
        return f"{runtime} does not run {op} with packed (INT4) filters"
    lo, hi = int(np.min(ints)), int(np.max(ints))
    return (f"its integers span [{lo}, {hi}], more than INT{max(widths)} holds "
            f"[{_RANGES[max(widths)][0]}, {_RANGES[max(widths)][1]}]")


__all__ = ["PACKED_SUPPORT", "pack", "packed_reason", "storage_bits", "unpack"]
