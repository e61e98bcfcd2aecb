"""Lowering of the TFLite convolutions and FULLY_CONNECTED (float32 and int8) to kernel calls
(see :mod:`tfcompress.codegen.ops_builtin` for the rest)."""

import numpy as np

from tfcompress.codegen import quant
from tfcompress.codegen.graph import CodegenError
from tfcompress.codegen.steps import (
    CTYPES, Step, geom_init, row_geom, rows_args, spatial_geom,
)

F32 = np.float32
from tfcompress.codegen.ops_common import _check_types, _const, _float_act, _int8_act, _label, _per_tensor, _t


# ---------------------------------------------------------------- convolutions
def _conv_common(ctx, node, depthwise):
    inp, filt = _t(ctx, node.inputs[0]), _const(ctx, node, node.inputs[1], "filter")
    out = _t(ctx, node.outputs[0])
    bias = _t(ctx, node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] >= 0 else None
    o = node.options
    if len(filt.shape) != 4:
        raise CodegenError(f"{node.describe()}: filter shape {filt.shape} is not 4-D.")
    g = spatial_geom(node, inp.shape, out.shape, filt.shape[1], filt.shape[2], o["strideH"],
                     o["strideW"], o.get("dilationHFactor", 1) or 1, o.get("dilationWFactor", 1) or 1,
                     o["padding"])
    if inp.dtype == "float32" and filt.dtype != "float32":
        raise CodegenError(f"{node.describe()}: a float32 layer with {filt.dtype} weights is a "
                           "dynamic-range (hybrid) model; convert to float32, float16 or full int8.")
    dtype = _check_types(node, [inp, out], ("float32", "int8"))
    return inp, filt, bias, out, g, dtype


def lower_conv2d(ctx, node):
    inp, filt, bias, out, g, dtype = _conv_common(ctx, node, False)
    cin_g = filt.shape[3]
    if g["in_c"] % cin_g or g["out_c"] % (g["in_c"] // cin_g):
        raise CodegenError(f"{node.describe()}: filter depth {cin_g} does not divide the "
                           f"{g['in_c']} input channels into groups.")
    groups = g["in_c"] // cin_g
    name = ctx.ident(f"conv{node.index}")
    decls = []
    fname, d = ctx.const_array(filt.data, CTYPES[dtype], key=filt.index, base=f"conv{node.index}_w")
    decls += [d] if d else []
    bname = "0"
    if bias is not None:
        if bias.data is None:
            raise CodegenError(f"{node.describe()}: the bias must be constant.")
        bname, d = ctx.const_array(bias.data, "float" if dtype == "float32" else "int32_t",
                                   key=bias.index, base=f"conv{node.index}_b")
        decls += [d] if d else []
    step = Step(_label(node), node, [inp.index], [out.index], rows=row_geom(g),
                row_bytes_in=g["in_w"] * g["in_c"] * inp.itemsize,
                row_bytes_out=g["out_w"] * g["out_c"] * out.itemsize)
    if dtype == "float32":
        lo, hi = _float_act(node)
        decls.append(f"static const tfc_conv_f32_t {name} = {{{geom_init(g)}, {groups}, {fname}, "
                     f"{bname}, {lo}, {hi}}};")
        step.kernels = {"float"}
        step.emit = lambda b, rows, s: [
            f"tfc_conv2d_f32(&{name}, {b[inp.index]}, {b[out.index]}, {rows_args(rows, g['out_h'])});"]
    else:
        if bias is not None and bias.dtype != "int32":
            raise CodegenError(f"{node.describe()}: int8 convolution needs an int32 bias, got {bias.dtype}.")
        _per_tensor(node, inp)
        _per_tensor(node, out)
        if np.any(filt.zero_point != 0):
            raise CodegenError(f"{node.describe()}: int8 filters must be symmetric (zero point 0).")
        mults, shifts = quant.conv_per_channel(inp.qscale, filt.scale, out.qscale, g["out_c"])
        mname, d1 = ctx.const_array(mults, "int32_t", base=f"conv{node.index}_m")
        sname, d2 = ctx.const_array(shifts, "int32_t", base=f"conv{node.index}_s")
        lo, hi = _int8_act(node, out)
        cmsis = int(groups == 1 and ctx.cmsis)
        # CMSIS-NN im2col buffer, the largest over its non-Helium code paths (s8 conv: 2 columns
        # of int16; 1x1 fast path: 2 * in_c int16)
        cols = g["k_h"] * g["k_w"] * g["in_c"]
        scratch = 4 * (cols + (-cols) % 4) if cmsis else 0
        scratch = max(scratch, 4 * g["in_c"]) if cmsis else 0
        decls += [d1, d2, f"static const tfc_conv_s8_t {name} = {{{geom_init(g)}, {groups}, "
                  f"{-inp.qzero}, {out.qzero}, {lo}, {hi}, {fname}, {bname}, {mname}, {sname}, "
                  f"{cmsis}, {scratch}}};"]
        step.kernels = {"int8"}
        step.scratch = scratch
        step.emit = lambda b, rows, s: [
            f"TFC_CHECK(tfc_conv2d_s8(&{name}, {b[inp.index]}, {b[out.index]}, "
            f"{rows_args(rows, g['out_h'])}, {s or '0'}));"]
    step.decls = decls
    return step


def lower_dwconv2d(ctx, node):
    inp, filt, bias, out, g, dtype = _conv_common(ctx, node, True)
    mult = node.options.get("depthMultiplier", 1) or 1
    if filt.shape[0] != 1 or filt.shape[3] != g["out_c"] or g["out_c"] != g["in_c"] * (g["out_c"] // max(g["in_c"], 1)):
        raise CodegenError(f"{node.describe()}: depthwise filter {filt.shape} does not match "
                           f"{g['in_c']} -> {g['out_c']} channels.")
    mult = g["out_c"] // g["in_c"]
    name = ctx.ident(f"dwconv{node.index}")
    decls = []
    fname, d = ctx.const_array(filt.data, CTYPES[dtype], key=filt.index, base=f"dw{node.index}_w")
    decls += [d] if d else []
    bname = "0"
    if bias is not None:
        if bias.data is None:
            raise CodegenError(f"{node.describe()}: the bias must be constant.")
        bname, d = ctx.const_array(bias.data, "float" if dtype == "float32" else "int32_t",
                                   key=bias.index, base=f"dw{node.index}_b")
        decls += [d] if d else []
    step = Step(_label(node), node, [inp.index], [out.index], rows=row_geom(g),
                row_bytes_in=g["in_w"] * g["in_c"] * inp.itemsize,
                row_bytes_out=g["out_w"] * g["out_c"] * out.itemsize)
    if dtype == "float32":
        lo, hi = _float_act(node)
        decls.append(f"static const tfc_dwconv_f32_t {name} = {{{geom_init(g)}, {mult}, {fname}, "
                     f"{bname}, {lo}, {hi}}};")
        step.kernels = {"float"}
        step.emit = lambda b, rows, s: [
            f"tfc_dwconv2d_f32(&{name}, {b[inp.index]}, {b[out.index]}, {rows_args(rows, g['out_h'])});"]
    else:
        _per_tensor(node, inp)
        _per_tensor(node, out)
        mults, shifts = quant.conv_per_channel(inp.qscale, filt.scale, out.qscale, g["out_c"])
        mname, d1 = ctx.const_array(mults, "int32_t", base=f"dw{node.index}_m")
        sname, d2 = ctx.const_array(shifts, "int32_t", base=f"dw{node.index}_s")
        lo, hi = _int8_act(node, out)
        cmsis = int(ctx.cmsis)
        scratch = 2 * g["in_c"] * g["k_h"] * g["k_w"] if cmsis else 0
        decls += [d1, d2, f"static const tfc_dwconv_s8_t {name} = {{{geom_init(g)}, {mult}, "
                  f"{-inp.qzero}, {out.qzero}, {lo}, {hi}, {fname}, {bname}, {mname}, {sname}, "
                  f"{cmsis}, {scratch}}};"]
        step.kernels = {"int8"}
        step.scratch = scratch
        step.emit = lambda b, rows, s: [
            f"TFC_CHECK(tfc_dwconv2d_s8(&{name}, {b[inp.index]}, {b[out.index]}, "
            f"{rows_args(rows, g['out_h'])}, {s or '0'}));"]
    step.decls = decls
    return step


def lower_fully_connected(ctx, node):
    inp, w = _t(ctx, node.inputs[0]), _const(ctx, node, node.inputs[1], "weights")
    out = _t(ctx, node.outputs[0])
    bias = _t(ctx, node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] >= 0 else None
    if len(w.shape) != 2:
        raise CodegenError(f"{node.describe()}: weights shape {w.shape} is not 2-D.")
    if node.options.get("weightsFormat", 0) != 0:
        raise CodegenError(f"{node.describe()}: shuffled weight formats are not supported.")
    if inp.dtype == "float32" and w.dtype != "float32":
        raise CodegenError(f"{node.describe()}: float32 activations with {w.dtype} weights is a "
                           "dynamic-range (hybrid) model; convert to float32 or full int8.")
    dtype = _check_types(node, [inp, out], ("float32", "int8"))
    n_out, n_in = w.shape
    if inp.size % n_in:
        raise CodegenError(f"{node.describe()}: input of {inp.size} values is not a multiple of "
                           f"the {n_in} weights per output.")
    batches = inp.size // n_in
    name = ctx.ident(f"fc{node.index}")
    decls = []
    wname, d = ctx.const_array(w.data, CTYPES[dtype], key=w.index, base=f"fc{node.index}_w")
    decls += [d] if d else []
    bname = "0"
    if bias is not None:
        if bias.data is None:
            raise CodegenError(f"{node.describe()}: the bias must be constant.")
        bname, d = ctx.const_array(bias.data, "float" if dtype == "float32" else "int32_t",
                                   key=bias.index, base=f"fc{node.index}_b")
        decls += [d] if d else []
    step = Step(_label(node), node, [inp.index], [out.index])
    if dtype == "float32":
        lo, hi = _float_act(node)
        decls.append(f"static const tfc_fc_f32_t {name} = {{{batches}, {n_in}, {n_out}, {wname}, "
                     f"{bname}, {lo}, {hi}}};")
        step.kernels = {"float"}
        step.emit = lambda b, rows, s: [f"tfc_fc_f32(&{name}, {b[inp.index]}, {b[out.index]});"]
    else:
        _per_tensor(node, inp)
        _per_tensor(node, out)
        per_channel = w.scale.size > 1
        if per_channel:
            mults, shifts = quant.conv_per_channel(inp.qscale, w.scale, out.qscale, n_out)
        else:
            real = float(F32(inp.qscale) * F32(w.scale[0])) / float(F32(out.qscale))
            m, s_ = quant.quantize_multiplier(real)
            mults, shifts = [m], [s_]
        mname, d1 = ctx.const_array(mults, "int32_t", base=f"fc{node.index}_m")
        sname, d2 = ctx.const_array(shifts, "int32_t", base=f"fc{node.index}_s")
        lo, hi = _int8_act(node, out)
        wzp = int(w.zero_point[0]) if w.zero_point.size else 0
        cmsis = int(not per_channel and ctx.cmsis)
        scratch = 4 * n_out if cmsis else 0
        decls += [d1, d2, f"static const tfc_fc_s8_t {name} = {{{batches}, {n_in}, {n_out}, "
                  f"{-inp.qzero}, {-wzp}, {out.qzero}, {lo}, {hi}, {wname}, {bname}, {mname}, "
                  f"{sname}, {int(per_channel)}, {cmsis}, {scratch}}};"]
        step.kernels = {"int8"}
        step.scratch = scratch
        step.emit = lambda b, rows, s: [
            f"TFC_CHECK(tfc_fc_s8(&{name}, {b[inp.index]}, {b[out.index]}, {s or '0'}));"]
    step.decls = decls
    return step
