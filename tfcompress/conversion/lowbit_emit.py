"""Emission for the exact-grid exporter: the lowered graph with its integer parameters ->
flatbuffer operators (see :mod:`tfcompress.conversion.lowbit` for the arithmetic: trained
grids, folded clamps, stored-scale gauges, the ``k_c`` accumulator refinement, exact input
widening and the packing rule)."""

import numpy as np

from tfcompress.conversion import int4 as I4
from tfcompress.conversion.fbwriter import ACTIVATIONS, GraphBuilder
from tfcompress.errors import ConversionError

_OP_NAMES = {"conv": "CONV_2D", "dwconv": "DEPTHWISE_CONV_2D", "fc": "FULLY_CONNECTED"}


# --------------------------------------------------------------------------- emission
def _weights_int(op):
    """(integer kernel, true per-channel scale) of a linear op (PTQ for float kernels)."""
    a = op.attrs
    if a["ints"] is not None:
        return np.asarray(a["ints"], np.int64), np.asarray(a["w_scale"], np.float64)
    w = np.asarray(a["weights"], np.float64)
    axes = tuple(range(w.ndim - 1))
    scale = np.max(np.abs(w), axis=axes) / 127.0
    scale = np.where(scale > 0, scale, 1.0)
    ints = np.clip(np.round(w / scale), -127, 127).astype(np.int64)
    return ints, scale


def _layout(kind, ints):
    """Keras-normalized kernel (output channel last) -> TFLite layout."""
    if kind == "conv":
        return np.transpose(ints, (3, 0, 1, 2))           # (cout, kh, kw, cin)
    if kind == "dwconv":
        kh, kw, _, c = ints.shape
        return ints.reshape(1, kh, kw, c)                   # (1, kh, kw, cin*mult)
    return np.transpose(ints, (1, 0))                       # (out, in)


# Largest requantization multiplier M = S_in S_w / S_out accepted without widening the input.
# TFLite's reference kernels (and TFLite Micro) round twice (gemmlowp's high-mul, then a
# rounding shift), so with M in [2^-(r+1), 2^-r) about 2^-(r+1) of the outputs can land one
# level off; an int32 bias in units of S_in S_w is off by up to M/2 of a level. Below 2^-10
# both stay under 0.05% of a layer's outputs.
PRECISION_MULTIPLIER = 2.0 ** -10


# Packed kernels are kept only when their multiplier is at most this (see PRECISION_MULTIPLIER).
PACK_MULTIPLIER = 2.0 ** -9


def _flip_estimate(m):
    """Share of outputs a double-rounding requantization with multiplier ``m`` (< 1/2) moves
    one level, plus the int32 bias error (about ``m / 4`` on average)."""
    if m >= 0.5:
        return m / 4
    r = int(np.floor(-np.log2(m)))
    return 2.0 ** -(r + 1) + m / 4


def _grid_range(v):
    """``(lo, hi)`` of the integers (zero point removed) a grid-valued tensor holds."""
    g = v.grid
    z = int(np.round(float(g.zero_point.ravel()[0])))
    return g.qmin - z, g.qmax - z


def _widening(v):
    """How many times ``v``'s integers fit in int8 (1 for tensors not on a trained grid)."""
    if v.grid is None:
        return 1
    lo, hi = _grid_range(v)
    return max(255 // max(hi - lo, 1), 1)


def _int16_ratio(v):
    """The integer ``r`` that spreads ``v``'s integers (zero point removed) over int16."""
    if v.grid is None:
        return 128
    lo, hi = _grid_range(v)
    return max(32767 // max(abs(lo), abs(hi), 1), 1)


def _headroom(ints, bits):
    """Largest integer ``k_c`` per output channel with ``k_c * ints`` inside the ``bits``-bit
    container (``[-2^{b-1}, 2^{b-1} - 1]``, int8 weights ``[-127, 127]``)."""
    flat = ints.reshape(-1, ints.shape[-1])
    top = 127 if bits == 8 else 2 ** (bits - 1) - 1
    bottom = 127 if bits == 8 else 2 ** (bits - 1)
    hi = np.maximum(flat.max(0), 0)
    lo = np.maximum(-flat.min(0), 0)
    k_hi = np.where(hi > 0, top // np.maximum(hi, 1), 2 ** 30)
    k_lo = np.where(lo > 0, bottom // np.maximum(lo, 1), 2 ** 30)
    k = np.minimum(k_hi, k_lo)
    return np.where(k >= 2 ** 30, 1, np.maximum(k, 1)).astype(np.int64)


class _Emitter:
    def __init__(self, g, target, io_type, allow_low_bit, pack=True, int16=False):
        self.g, self.target, self.io_type, self.allow_low_bit = g, target, io_type, allow_low_bit
        self.pack = pack
        self.int16 = int16 and target in ("int8", "micro")
        self.widen_cache = {}
        self.b = GraphBuilder()
        self.idx = {}
        self.storage = {}        # layer name -> stored bits of its kernel
        self.refused = []

    def t(self, v):
        if id(v) not in self.idx:
            self.idx[id(v)] = self.b.tensor(v.name, v.shape, v.dtype, scale=v.stored_scale,
                                            zero_point=v.zero_point)
        return self.idx[id(v)]

    def const_i32(self, name, values):
        values = np.asarray(values, np.int32)
        return self.b.tensor(name, values.shape, "int32", data=values)

    def run(self):
        g, b = self.g, self.b
        io = self.io_type
        for i, v in enumerate(g.inputs):
            if io == "int8":
                b.inputs.append(self.t(v))
            else:
                dtype = "float32" if io == "float32" else "uint8"
                ext = b.tensor(f"input_{i}", v.shape, dtype,
                               **({} if dtype == "float32" else
                                  {"scale": v.stored_scale, "zero_point": v.zero_point + 128}))
                b.inputs.append(ext)
                b.op("QUANTIZE", [ext], [self.t(v)])
        for op in g.ops:
            getattr(self, "op_" + op.kind)(op)
        for i, v in enumerate(g.outputs):
            if io == "int8":
                b.outputs.append(self.t(v))
            else:
                dtype = "float32" if io == "float32" else "uint8"
                ext = b.tensor(f"output_{i}", v.shape, dtype,
                               **({} if dtype == "float32" else
                                  {"scale": v.stored_scale, "zero_point": v.zero_point + 128}))
                b.op("DEQUANTIZE" if dtype == "float32" else "QUANTIZE", [self.t(v)], [ext])
                b.outputs.append(ext)
        if self.refused:
            desc = "; ".join(self.refused)
            raise ConversionError(
                f"Target {self.target!r} cannot store these layers at their trained width: "
                f"{desc}. Pass allow_low_bit=True to store them as int8 (the file computes the "
                "same numbers, it is just not smaller), or choose a target whose runtime runs "
                "packed filters for these operators (see tfcompress.conversion.int4).")
        return b.finish()

    # ------------------------------------------------------------------ operations
    def op_linear(self, op):
        a, kind = op.attrs, op.kind
        x, y = op.inputs[0], op.outputs[0]
        ints, w_true = _weights_int(op)
        row = a["row"]
        lo, hi = int(ints.min()), int(ints.max())
        if lo < -128 or hi > 127:
            grid = a["grid"]
            raise ConversionError(
                f"Layer {op.name!r}: the {row['role']} integers span [{lo}, {hi}] "
                f"({grid.kind if grid else 'float'}), more than int8 holds: a {row['trained_bits']}"
                f"-bit grid this target cannot store exactly. Use fewer bits (power-of-two: "
                "at most 4) or a uniform quantizer.")
        s_in, s_in_st = x.scale, x.stored_scale
        s_out, s_out_st = y.scale, y.stored_scale
        w_st = w_true * (s_in / s_in_st) * (s_out_st / s_out)
        bias = np.zeros(ints.shape[-1]) if a["bias"] is None else np.asarray(a["bias"], np.float64)
        bias = bias + a.get("bias_shift", 0.0)
        w_float = ints * w_true
        if x.offset:
            taps = w_float.reshape(-1, w_float.shape[-1]).sum(0)
            bias = bias + x.offset * taps
        name = _OP_NAMES[kind]
        trained = row.get("trained_bits", 32)
        bits = I4.storage_bits(name, self.target, trained, ints) if self.pack else 8
        runs16 = "int16" in (x.dtype, y.dtype)
        if bits < 8 and runs16:
            bits = 8            # 16x8 kernels take int8 filters only
            row.setdefault("notes", []).append("stored as int8: it runs in 16x8 (int8 filters)")
        elif trained <= 4 and bits == 8 and self.pack:
            reason = I4.packed_reason(name, self.target, trained, ints)
            if not self.allow_low_bit:
                self.refused.append(f"{op.name!r} {row['role']}={trained} bits ({reason})")
            row.setdefault("notes", []).append(f"stored as int8: {reason}")
        if bits < 8 and self.pack != "always":
            # Packed filters run in TFLite's reference-rounding kernels (XNNPACK does not take
            # INT4 convolutions): keep them only where that rounding stays exact.
            m_packed = np.max(s_in / _widening(x) * w_true / _headroom(ints, bits) / s_out)
            if m_packed > PACK_MULTIPLIER:
                bits = 8
                row.setdefault("notes", []).append(
                    f"kept int8 for exactness: packed, its requantization multiplier would be "
                    f"{m_packed:.2g} (> 2^-9), so the runtime's double rounding would move about "
                    f"{100 * _flip_estimate(m_packed):.1f}% of its outputs; pack_weights='always' packs it")
        # Refine the accumulator: k_c * ints still fits the container, so one accumulator unit
        # is k_c times finer and the int32 bias (in those units) rounds k_c times less.
        k = _headroom(ints, bits)
        ints = ints * k
        w_true, w_st = w_true / k, w_st / k
        x_idx = self.t(x)
        widen = _widening(x)
        multiplier = s_in * w_true / s_out
        same = a.get("padding") == "SAME"
        border = bool(x.offset) and (same or (x.producer is not None and x.producer.kind == "pad"))
        padding = a.get("padding")
        all16 = (self.int16 and bits == 8 and not border and x.dtype == "int8"
                 and y.dtype == "int8" and y.grid is not None)
        if widen > 1 and not all16 and (bits < 8 or multiplier.max() > PRECISION_MULTIPLIER
                                        or border):
            x_idx = self.widened(x, widen)
            s_in, s_in_st = s_in / widen, s_in_st / widen
            row.setdefault("notes", []).append(f"input widened x{widen} (exact MUL) for precision")
            if border and same:
                # pad explicitly with the widened level nearest to real 0 (-offset), so the
                # border taps see 0 up to 1/(2 x widen) of a level, as Keras pads them
                x_idx = self.pad_near_zero(x, x_idx, widen, op, ints.shape[:2])
                padding = "VALID"
        if border:
            row.setdefault("notes", []).append(
                "input offset (LSQ+): exact inside, border taps off by < "
                f"{0.5 / (widen if same else 1):.3g} of a level")
        bias_type = "int32"
        y_idx = self.t(y)
        x16_in = x.dtype == "int16"        # an int16 tensor kept for a global average
        precise = (self.target in ("int8", "micro") and y.dtype == "int8" and y.grid is not None
                   and bits == 8 and x_idx == self.t(x) and x.dtype == "int8"
                   and multiplier.max() > PRECISION_MULTIPLIER) or all16
        if x16_in and y.dtype == "int8":
            # a 16x8 op writes int16: the grid's integers go to int16, then into int8 as below
            precise = True
        if precise:
            # the input grid fills int8 (no room to widen): compute in 16x8 instead. The input
            # is requantized exactly to int16 (x128), the bias becomes int64 in 128x finer
            # units, the op writes the trained grid's integers into int16 with its fused clamp,
            # and a QUANTIZE with equal scales (multiplier 1) saturates them into int8 at the
            # grid's zero point: the same clamp as the int8 op, one rounding, a finer bias.
            y_idx = self.b.tensor(f"{y.name}/int16", y.shape, "int16", scale=y.stored_scale,
                                  zero_point=0)
            row.setdefault("notes", []).append(
                "16x8 for precision (int16 input)" if x16_in else
                f"16x8 (compute='16x8'): input integers x{_int16_ratio(x)} in int16" if all16
                else "16x8 for precision (8-bit input grid)")
            row["compute_bits"] = "8x16"
        if x16_in:
            bias_type = "int64"
        elif y.dtype == "int16" or precise:
            # 16x8: the int8 input requantized exactly to int16 (x128, multiplier 128), an
            # int64 bias in units of the finer input scale
            # (all16: a trained grid's integers times the largest integer int16 holds)
            r = _int16_ratio(x) if all16 else 128
            x16 = self.b.tensor(f"{x.name}/int16x{r}", x.shape, "int16", scale=s_in_st / r,
                                zero_point=0)
            self.b.op("QUANTIZE", [x_idx], [x16])
            x_idx, s_in, s_in_st, bias_type = x16, s_in / r, s_in_st / r, "int64"
        b_int = np.round(bias / (s_in * w_true))
        row["multiplier"] = float(np.max(s_in * w_true / s_out))
        if bias_type == "int32" and np.abs(b_int).max(initial=0) >= 2 ** 31:
            raise ConversionError(f"Layer {op.name!r}: the folded bias overflows int32 at the "
                                  "chosen scales (a near-zero scale); check its BatchNorm.")
        tfl = _layout(kind, ints)
        axis = 3 if kind == "dwconv" else 0
        wname = f"{op.name}/{row['role']}"
        if bits == 8:
            w_idx = self.b.tensor(wname, tfl.shape, "int8", scale=w_st, zero_point=0, axis=axis,
                                  data=tfl)
        else:
            w_idx = self.b.tensor(wname, tfl.shape, f"int{bits}", scale=w_st, zero_point=0,
                                  axis=axis, data=I4.pack(tfl, bits))
        b_idx = self.b.tensor(f"{op.name}/bias", (ints.shape[-1],), bias_type,
                              scale=s_in_st * w_st, zero_point=0, data=b_int)
        row.update(stored_bits=bits, compute_bits=row.get("compute_bits", 8),
                   storage={8: "INT8", 4: "INT4 packed", 2: "INT2 packed"}[bits],
                   weight_bytes=int(np.ceil(ints.size * bits / 8)))
        act = ACTIVATIONS[a["act"]]
        if kind == "fc":
            opts = self.b.options("FullyConnectedOptions", fusedActivationFunction=act,
                                  keepNumDims=False)
        else:
            pad = 0 if padding == "SAME" else 1
            (sh, sw), (dh, dw) = a["strides"], a["dilation"]
            if kind == "conv":
                opts = self.b.options("Conv2DOptions", padding=pad, strideH=sh, strideW=sw,
                                      dilationHFactor=dh, dilationWFactor=dw,
                                      fusedActivationFunction=act)
            else:
                opts = self.b.options("DepthwiseConv2DOptions", padding=pad, strideH=sh,
                                      strideW=sw, dilationHFactor=dh, dilationWFactor=dw,
                                      depthMultiplier=a["depth_multiplier"],
                                      fusedActivationFunction=act)
        self.b.op(name, [x_idx, w_idx, b_idx], [y_idx], opts)
        if precise:
            self.b.op("QUANTIZE", [y_idx], [self.t(y)])

    op_conv = op_dwconv = op_fc = op_linear

    def pad_near_zero(self, v, x_idx, m, op, kernel_hw):
        """PADV2 of the widened ``v`` as SAME padding would, with the level nearest real 0."""
        a = op.attrs
        (kh, kw), (sh, sw), (dh, dw) = kernel_hw, a["strides"], a["dilation"]
        _, in_h, in_w, c = v.shape
        oh, ow = -(-in_h // sh), -(-in_w // sw)
        ph = max((oh - 1) * sh + (kh - 1) * dh + 1 - in_h, 0)
        pw = max((ow - 1) * sw + (kw - 1) * dw + 1 - in_w, 0)
        lo, _ = _grid_range(v)
        zp = int(-128 - m * lo)
        level = int(np.clip(zp + np.round(-v.offset / (v.scale / m)), -128, 127))
        pads = self.const_i32(f"{v.name}/border", [[0, 0], [ph // 2, ph - ph // 2],
                                                     [pw // 2, pw - pw // 2], [0, 0]])
        value = self.b.tensor(f"{v.name}/border_value", (), "int8", scale=v.stored_scale / m,
                              zero_point=zp, data=np.asarray(level, np.int8))
        out = self.b.tensor(f"{v.name}/padded", (1, in_h + ph, in_w + pw, c), "int8",
                            scale=v.stored_scale / m, zero_point=zp)
        self.b.op("PADV2", [x_idx, pads, value], [out])
        return out

    def widened(self, v, m):
        """``v``'s integers times ``m`` (an exact int8 MUL: its multiplier is 1), emitted once."""
        key = (id(v), m)
        if key not in self.widen_cache:
            lo, _ = _grid_range(v)
            zp = int(-128 - m * lo)
            c = self.b.tensor(f"{v.name}/widen_factor", (1,), "int8", scale=1.0 / m, zero_point=0,
                              data=np.asarray([m], np.int8))
            out = self.b.tensor(f"{v.name}/widened", v.shape, "int8", scale=v.stored_scale / m,
                                zero_point=zp)
            self.b.op("MUL", [self.t(v), c], [out],
                      self.b.options("MulOptions", fusedActivationFunction=0))
            self.widen_cache[key] = out
        return self.widen_cache[key]

    def op_maxpool(self, op, name="MAX_POOL_2D"):
        a = op.attrs
        opts = self.b.options("Pool2DOptions", padding=0 if a["padding"] == "SAME" else 1,
                              strideH=a["strides"][0], strideW=a["strides"][1],
                              filterHeight=a["pool"][0], filterWidth=a["pool"][1],
                              fusedActivationFunction=0)
        self.b.op(name, [self.t(op.inputs[0])], [self.t(op.outputs[0])], opts)

    def op_avgpool(self, op):
        self.op_maxpool(op, "AVERAGE_POOL_2D")

    def op_mean(self, op):
        axes = self.const_i32(f"{op.name}/axes", op.attrs["axes"])
        self.b.op("MEAN", [self.t(op.inputs[0]), axes], [self.t(op.outputs[0])],
                  self.b.options("ReducerOptions", keepDims=op.attrs["keepdims"]))

    def op_reshape(self, op):
        shape = list(op.outputs[0].shape)
        s_idx = self.const_i32(f"{op.name}/shape", shape)
        self.b.op("RESHAPE", [self.t(op.inputs[0]), s_idx], [self.t(op.outputs[0])],
                  self.b.options("ReshapeOptions", newShape=shape))

    def op_pad(self, op):
        x, y = op.inputs[0], op.outputs[0]
        pads = self.const_i32(f"{op.name}/paddings", op.attrs["pads"])
        value = op.attrs["value"]
        if value == 0.0 and not x.offset:
            self.b.op("PAD", [self.t(x), pads], [self.t(y)])
            return
        q = (value - x.offset) / x.scale + x.zero_point
        if abs(q - round(q)) > 1e-3 or not -128 <= round(q) <= 127:
            raise ConversionError(f"Layer {op.name!r}: pad value {value} is not a level of its "
                                  "input's int8 grid, so the padded border cannot be exact.")
        c = self.b.tensor(f"{op.name}/pad_value", (), "int8", scale=x.stored_scale,
                          zero_point=x.zero_point, data=np.asarray(round(q), np.int8))
        self.b.op("PADV2", [self.t(x), pads, c], [self.t(y)])

    def op_add(self, op):
        self.b.op("ADD", [self.t(v) for v in op.inputs], [self.t(op.outputs[0])],
                  self.b.options("AddOptions", fusedActivationFunction=ACTIVATIONS[op.attrs["act"]]))

    def op_softmax(self, op):
        self.b.op("SOFTMAX", [self.t(op.inputs[0])], [self.t(op.outputs[0])],
                  self.b.options("SoftmaxOptions", beta=1.0))

    def op_relu(self, op):
        self.b.op("RELU" if op.attrs["act"] == "RELU" else "RELU6", [self.t(op.inputs[0])],
                  [self.t(op.outputs[0])])

    def op_requant(self, op):
        self.b.op("QUANTIZE", [self.t(op.inputs[0])], [self.t(op.outputs[0])])

    def op_clamp(self, op):
        x, y = op.inputs[0], op.outputs[0]
        cur = self.t(x)
        steps = [(k, v) for k, v in (("MAXIMUM", op.attrs["lo"]), ("MINIMUM", op.attrs["hi"]))
                 if v is not None]
        for i, (name, value) in enumerate(steps):
            c = self.b.tensor(f"{op.name}/{name.lower()}", (1,), "int8", scale=y.stored_scale,
                              zero_point=y.zero_point, data=np.asarray([value], np.int8))
            last = i == len(steps) - 1
            out = self.t(y) if last else self.b.tensor(f"{y.name}/{name.lower()}", y.shape, "int8",
                                                        scale=y.stored_scale, zero_point=y.zero_point)
            self.b.op(name, [cur, c], [out])
            cur = out


__all__ = ["PACK_MULTIPLIER", "PRECISION_MULTIPLIER"]
