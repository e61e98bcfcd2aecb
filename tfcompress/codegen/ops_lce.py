"""Lowering of the Larq Compute Engine custom operators to the binary kernels.

Semantics follow larq compute-engine (``larq_compute_engine/core/bconv2d/*.h`` and
``tflite/kernels/{bconv2d,bmaxpool,quantization}.cc``): channels are bit-packed 32 per int32
word (bit 1 = negative), ``LceBconv2d`` outputs float32, int8 or bit-packed values, its float/int8
output transform uses the multiplier/bias LCE fuses in ``OneTimeSetup``
(:func:`tfcompress.codegen.quant.lce_output_transform`) and its bit-packed output compares the
popcount with the ``thresholds`` input.
"""

import numpy as np

from tfcompress.codegen import quant
from tfcompress.codegen.graph import ACTIVATIONS, PADDINGS, CodegenError
from tfcompress.codegen.steps import Step, geom_init, row_geom, rows_args, spatial_geom

F32 = np.float32


def _words(c):
    return (int(c) + 31) // 32


def _opt(node, key, default=None, required=True):
    if key in node.options:
        return int(node.options[key])
    if required and default is None:
        raise CodegenError(f"{node.describe()}: custom option {key!r} is missing.")
    return default


def _row_pixels(shape):
    if len(shape) == 4 and shape[0] == 1:
        return shape[1], shape[2]
    return None, None


def lower_lce_quantize(ctx, node):
    inp, out = ctx.graph.tensors[node.inputs[0]], ctx.graph.tensors[node.outputs[0]]
    if inp.dtype not in ("float32", "int8") or out.dtype != "int32":
        raise CodegenError(f"{node.describe()}: LceQuantize {inp.dtype} -> {out.dtype} is not "
                           "supported (float32/int8 -> bit-packed int32).")
    channels = inp.shape[-1]
    if tuple(out.shape) != tuple(inp.shape[:-1]) + (_words(channels),):
        raise CodegenError(f"{node.describe()}: output shape {out.shape} is not the bit-packed "
                           f"{inp.shape}.")
    pixels = inp.size // channels
    h, w = _row_pixels(inp.shape)
    step = Step(f"LceQuantize (#{node.index})", node, [inp.index], [out.index], kernels={"binary"})
    if h is not None:
        step.elementwise = True
        step.row_bytes_in = w * channels * inp.itemsize
        step.row_bytes_out = w * _words(channels) * 4
    # in place: packed word p is written after the inputs it packs were read
    step.inplace = _words(channels) * 4 <= channels * inp.itemsize

    def emit(b, rows, s):
        if rows is None:
            src, dst, n = b[inp.index], b[out.index], str(pixels)
        else:
            oy0, oy1, in0, out0 = rows
            src = f"{b[inp.index]} + (({oy0}) - ({in0})) * {w * channels}"
            dst = f"{b[out.index]} + (({oy0}) - ({out0})) * {w * _words(channels)}"
            n = f"(({oy1}) - ({oy0})) * {w}"
        if inp.dtype == "float32":
            return [f"tfc_lce_quantize_f32({src}, {dst}, {n}, {channels});"]
        return [f"tfc_lce_quantize_s8({src}, {dst}, {n}, {channels}, {inp.qzero});"]
    step.emit = emit
    return step


def lower_lce_dequantize(ctx, node):
    inp, out = ctx.graph.tensors[node.inputs[0]], ctx.graph.tensors[node.outputs[0]]
    if inp.dtype != "int32" or out.dtype not in ("float32", "int8"):
        raise CodegenError(f"{node.describe()}: LceDequantize {inp.dtype} -> {out.dtype} is not "
                           "supported (bit-packed int32 -> float32/int8).")
    channels = out.shape[-1]
    if tuple(inp.shape) != tuple(out.shape[:-1]) + (_words(channels),):
        raise CodegenError(f"{node.describe()}: input shape {inp.shape} is not the bit-packed "
                           f"{out.shape}.")
    pixels = out.size // channels
    h, w = _row_pixels(out.shape)
    step = Step(f"LceDequantize (#{node.index})", node, [inp.index], [out.index], kernels={"binary"})
    if h is not None:
        step.elementwise = True
        step.row_bytes_in = w * _words(channels) * 4
        step.row_bytes_out = w * channels * out.itemsize
    if out.dtype == "int8":
        offset = int(quant.round_half_away(float(F32(1.0) / F32(out.qscale))))
        plus, minus = min(127, out.qzero + offset), max(-128, out.qzero - offset)

    def emit(b, rows, s):
        if rows is None:
            src, dst, n = b[inp.index], b[out.index], str(pixels)
        else:
            oy0, oy1, in0, out0 = rows
            src = f"{b[inp.index]} + (({oy0}) - ({in0})) * {w * _words(channels)}"
            dst = f"{b[out.index]} + (({oy0}) - ({out0})) * {w * channels}"
            n = f"(({oy1}) - ({oy0})) * {w}"
        if out.dtype == "float32":
            return [f"tfc_lce_dequantize_f32({src}, {dst}, {n}, {channels});"]
        return [f"tfc_lce_dequantize_s8({src}, {dst}, {n}, {channels}, {plus}, {minus});"]
    step.emit = emit
    return step


def lower_lce_bconv2d(ctx, node):
    t = ctx.graph.tensors
    inp, filt, out = t[node.inputs[0]], t[node.inputs[1]], t[node.outputs[0]]
    opt = lambda i: t[node.inputs[i]] if len(node.inputs) > i and node.inputs[i] >= 0 else None  # noqa: E731
    mul, bias, thr = opt(2), opt(3), opt(4)
    if inp.dtype != "int32" or filt.dtype != "int32" or len(inp.shape) != 4 or len(filt.shape) != 4:
        raise CodegenError(f"{node.describe()}: input and filter must be 4-D bit-packed int32.")
    if filt.data is None:
        raise CodegenError(f"{node.describe()}: the binary filter must be constant.")
    cin = _opt(node, "channels_in")
    words_in = inp.shape[3]
    cout, kh, kw, words_g = filt.shape
    if _words(cin) != words_in:
        raise CodegenError(f"{node.describe()}: channels_in={cin} does not match the bit-packed "
                           f"input depth {words_in}.")
    if words_in % words_g:
        raise CodegenError(f"{node.describe()}: filter depth {words_g} words does not divide the "
                           f"input depth {words_in} words.")
    groups = words_in // words_g
    if groups > 1 and (cin % groups or (cin // groups) % 32 or cout % groups):
        raise CodegenError(f"{node.describe()}: {groups} groups need channels per group divisible "
                           "by 32 and output channels divisible by the groups.")
    cin_g = cin // groups
    padding = PADDINGS.get(_opt(node, "padding"), None)
    if padding is None:
        raise CodegenError(f"{node.describe()}: unknown padding {node.options.get('padding')}.")
    pad_values = _opt(node, "pad_values", 0, required=False)
    if pad_values not in (0, 1):
        raise CodegenError(f"{node.describe()}: pad_values must be 0 or 1, got {pad_values}.")
    act = ACTIVATIONS.get(_opt(node, "fused_activation_function", 0, required=False), "OTHER")
    g = spatial_geom(node, inp.shape, out.shape, kh, kw, _opt(node, "stride_height"),
                     _opt(node, "stride_width"), _opt(node, "dilation_height_factor", 1, False),
                     _opt(node, "dilation_width_factor", 1, False), padding)
    g["in_c"], g["out_c"] = cin, cout
    padded = padding == "SAME" and (
        g["pad_t"] > 0 or g["pad_l"] > 0
        or (g["out_h"] - 1) * g["stride_h"] + (kh - 1) * g["dil_h"] + 1 > g["in_h"] + g["pad_t"]
        or (g["out_w"] - 1) * g["stride_w"] + (kw - 1) * g["dil_w"] + 1 > g["in_w"] + g["pad_l"])
    pad_mode = 0 if not padded else (1 if pad_values == 1 else 2)
    if pad_mode == 2 and out.dtype == "int32":
        raise CodegenError(f"{node.describe()}: bit-packed output with zero padding (SAME, "
                           "pad_values=0) is not supported (LCE's converter never produces it "
                           "and LCE's kernels do not run it).")
    out_type = {"float32": 0, "int8": 1, "int32": 2}.get(out.dtype)
    if out_type is None:
        raise CodegenError(f"{node.describe()}: output type {out.dtype} is not supported "
                           "(float32, int8 or bit-packed int32).")
    expected_c = _words(cout) if out_type == 2 else cout
    if out.shape[3] != expected_c:
        raise CodegenError(f"{node.describe()}: output depth {out.shape[3]} does not match "
                           f"{cout} output channels.")
    name = ctx.ident(f"bconv{node.index}")
    decls = []
    fname, d = ctx.const_array(filt.data.astype(np.int64) & 0xFFFFFFFF, "uint32_t",
                               key=filt.index, base=f"bconv{node.index}_w")
    decls += [d] if d else []
    mname = bname = tname = "0"
    clamp_lo, clamp_hi = 0, 0
    if out_type == 2:
        if thr is None or thr.data is None or thr.dtype != "int32" or thr.size != cout:
            raise CodegenError(f"{node.describe()}: bit-packed output needs {cout} constant int32 "
                               "thresholds.")
        tname, d = ctx.const_array(thr.data, "int32_t", key=thr.index, base=f"bconv{node.index}_t")
        decls.append(d)
    else:
        for what, x in (("post_activation_multiplier", mul), ("post_activation_bias", bias)):
            if x is None or x.data is None or x.dtype != "float32" or x.size != cout:
                raise CodegenError(f"{node.describe()}: {out.dtype} output needs a constant "
                                   f"float32 {what} of length {cout}.")
        try:
            m, b, clamp_lo, clamp_hi = quant.lce_output_transform(
                mul.data, bias.data, kh * kw * cin_g, act,
                out.qscale if out_type == 1 else None, out.qzero if out_type == 1 else 0)
        except ValueError as err:
            raise CodegenError(f"{node.describe()}: {err}.") from err
        mname, d1 = ctx.const_array(m, "float", base=f"bconv{node.index}_m")
        bname, d2 = ctx.const_array(b, "float", base=f"bconv{node.index}_b")
        decls += [d1, d2]
    clamp_lo_c = "(-2147483647 - 1)" if clamp_lo == quant.INT32_MIN else str(clamp_lo)
    decls.append(f"static const tfc_bconv_t {name} = {{{geom_init(g)}, {groups}, {words_in}, "
                 f"{words_g}, {cin_g}, {pad_mode}, {out_type}, {fname}, {mname}, {bname}, "
                 f"{clamp_lo_c}, {clamp_hi}, {tname}}};")
    out_row = g["out_w"] * (out.shape[3] * out.itemsize)
    step = Step(f"LceBconv2d (#{node.index})", node, [inp.index], [out.index], decls=decls,
                rows=row_geom(g), row_bytes_in=g["in_w"] * words_in * 4, row_bytes_out=out_row,
                scratch=kh * kw * words_in * 4, kernels={"binary", "float"})
    step.emit = lambda b, rows, s: [
        f"tfc_bconv2d(&{name}, (const uint32_t *){b[inp.index]}, {b[out.index]}, "
        f"{rows_args(rows, g['out_h'])}, (uint32_t *){s});"]
    return step


def lower_lce_bmaxpool(ctx, node):
    inp, out = ctx.graph.tensors[node.inputs[0]], ctx.graph.tensors[node.outputs[0]]
    if inp.dtype != "int32" or out.dtype != "int32":
        raise CodegenError(f"{node.describe()}: LceBMaxPool2d needs bit-packed int32 tensors.")
    padding = PADDINGS.get(_opt(node, "padding"), None)
    g = spatial_geom(node, inp.shape, out.shape, _opt(node, "filter_height"),
                     _opt(node, "filter_width"), _opt(node, "stride_height"),
                     _opt(node, "stride_width"), 1, 1, padding)
    name = ctx.ident(f"bmaxpool{node.index}")
    step = Step(f"LceBMaxPool2d (#{node.index})", node, [inp.index], [out.index],
                decls=[f"static const tfc_bmaxpool_t {name} = {{{geom_init(g)}}};"],
                rows=row_geom(g), row_bytes_in=g["in_w"] * g["in_c"] * 4,
                row_bytes_out=g["out_w"] * g["out_c"] * 4, kernels={"binary"})
    step.emit = lambda b, rows, s: [
        f"tfc_bmaxpool2d(&{name}, (const uint32_t *){b[inp.index]}, (uint32_t *){b[out.index]}, "
        f"{rows_args(rows, g['out_h'])});"]
    return step


LOWER = {
    "LceQuantize": lower_lce_quantize, "LceDequantize": lower_lce_dequantize,
    "LceBconv2d": lower_lce_bconv2d, "LceBMaxPool2d": lower_lce_bmaxpool,
}

__all__ = ["LOWER"]
