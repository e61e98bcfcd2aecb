"""Lowering of TFLite builtin operators (float32 and int8) to kernel calls.

Every ``lower_*`` function takes the :class:`~tfcompress.codegen.steps.Context` and a graph
node and returns a :class:`~tfcompress.codegen.steps.Step`; integer parameters are computed with
:mod:`tfcompress.codegen.quant` exactly as the TFLite reference kernels' ``Prepare`` does.
"""

import numpy as np

from tfcompress.codegen import quant
from tfcompress.codegen.graph import CodegenError
from tfcompress.codegen.steps import (
    CTYPES, Step, c_float, geom_init, row_geom, rows_args, spatial_geom,
)

F32 = np.float32
from tfcompress.codegen.ops_common import _act, _check_types, _const, _float_act, _int8_act, _label, _per_tensor, _t
from tfcompress.codegen.ops_conv import lower_conv2d, lower_dwconv2d, lower_fully_connected


# ---------------------------------------------------------------- pooling / reduction
def lower_pool(ctx, node):
    inp, out = _t(ctx, node.inputs[0]), _t(ctx, node.outputs[0])
    o = node.options
    g = spatial_geom(node, inp.shape, out.shape, o["filterHeight"], o["filterWidth"],
                     o["strideH"], o["strideW"], 1, 1, o["padding"])
    dtype = _check_types(node, [inp, out], ("float32", "int8"))
    kind = "max" if node.op == "MAX_POOL_2D" else "avg"
    name = ctx.ident(f"pool{node.index}")
    step = Step(_label(node), node, [inp.index], [out.index], rows=row_geom(g),
                row_bytes_in=g["in_w"] * g["in_c"] * inp.itemsize,
                row_bytes_out=g["out_w"] * g["out_c"] * out.itemsize)
    if dtype == "float32":
        lo, hi = _float_act(node)
        step.decls = [f"static const tfc_pool_f32_t {name} = {{{geom_init(g)}, {lo}, {hi}}};"]
        step.kernels = {"float"}
        step.emit = lambda b, rows, s: [
            f"tfc_{kind}pool_f32(&{name}, {b[inp.index]}, {b[out.index]}, {rows_args(rows, g['out_h'])});"]
    else:
        if inp.qscale != out.qscale or inp.qzero != out.qzero:
            raise CodegenError(f"{node.describe()}: int8 pooling needs the same input and output "
                               "quantization.")
        lo, hi = _int8_act(node, out)
        cmsis = int(ctx.cmsis)
        scratch = 4 * g["in_c"] if kind == "avg" and cmsis else 0
        step.decls = [f"static const tfc_pool_s8_t {name} = {{{geom_init(g)}, {lo}, {hi}, {cmsis}, {scratch}}};"]
        step.kernels = {"int8"}
        step.scratch = scratch
        if kind == "max":
            step.emit = lambda b, rows, s: [
                f"TFC_CHECK(tfc_maxpool_s8(&{name}, {b[inp.index]}, {b[out.index]}, {rows_args(rows, g['out_h'])}));"]
        else:
            step.emit = lambda b, rows, s: [
                f"TFC_CHECK(tfc_avgpool_s8(&{name}, {b[inp.index]}, {b[out.index]}, "
                f"{rows_args(rows, g['out_h'])}, {s or '0'}));"]
    return step


def lower_mean(ctx, node):
    inp, out = _t(ctx, node.inputs[0]), _t(ctx, node.outputs[0])
    axes_t = _const(ctx, node, node.inputs[1], "axis")
    dtype = _check_types(node, [inp, out], ("float32", "int8"))
    rank = len(inp.shape)
    axes = sorted({int(a) % rank for a in np.asarray(axes_t.data).reshape(-1)})
    if not axes:
        return _copy_step(ctx, node, inp, out)
    if axes != list(range(axes[0], axes[-1] + 1)):
        raise CodegenError(f"{node.describe()}: MEAN over non-adjacent axes {axes} is not supported.")
    outer = int(np.prod(inp.shape[:axes[0]], dtype=np.int64))
    reduce = int(np.prod([inp.shape[a] for a in axes], dtype=np.int64))
    inner = int(np.prod(inp.shape[axes[-1] + 1:], dtype=np.int64))
    step = Step(_label(node), node, [inp.index], [out.index])
    if dtype == "float32":
        step.kernels = {"float"}
        step.emit = lambda b, rows, s: [
            f"tfc_mean_f32({b[inp.index]}, {b[out.index]}, {outer}, {reduce}, {inner});"]
    else:
        _per_tensor(node, inp)
        _per_tensor(node, out)
        real = float(F32(inp.qscale)) / float(F32(out.qscale))
        mult, shift = quant.quantize_multiplier(real)
        # reference_ops::QuantizedMeanOrSum folds 1/num_elements into the multiplier
        sh = reduce.bit_length() - 1
        sh = min(sh, 32, 31 + shift)
        mult = int((mult << sh) // reduce) if sh >= 0 else int(mult)
        shift = shift - sh
        step.kernels = {"int8"}
        step.emit = lambda b, rows, s: [
            f"tfc_mean_s8({b[inp.index]}, {b[out.index]}, {outer}, {reduce}, {inner}, "
            f"{inp.qzero}, {mult}, {shift}, {out.qzero});"]
    return step


# ---------------------------------------------------------------- element-wise
def _broadcast(node, a_shape, b_shape, out_shape):
    """tfc_bcast_t initializer for a (right-aligned) broadcast of two shapes, up to 5-D."""
    rank = len(out_shape)
    if rank > 5:
        raise CodegenError(f"{node.describe()}: broadcasting beyond 5 dimensions is not supported.")
    a = (1,) * (rank - len(a_shape)) + tuple(a_shape)
    b = (1,) * (rank - len(b_shape)) + tuple(b_shape)
    for x, y, o in zip(a, b, out_shape):
        if not ((x == o or x == 1) and (y == o or y == 1)):
            raise CodegenError(f"{node.describe()}: shapes {a_shape} and {b_shape} do not "
                               f"broadcast to {out_shape}.")
    if a == b == tuple(out_shape):
        n = int(np.prod(out_shape, dtype=np.int64))
        return f"{{{{1, 1, 1, 1, {n}}}, {{0, 0, 0, 0, 1}}, {{0, 0, 0, 0, 1}}, 1}}", True

    def strides(s):
        st, acc = [0] * rank, 1
        for i in range(rank - 1, -1, -1):
            st[i] = acc if s[i] != 1 else 0
            acc *= s[i]
        return st

    pad = 5 - rank
    dims = [1] * pad + list(out_shape)
    s1 = [0] * pad + strides(a)
    s2 = [0] * pad + strides(b)
    fmt = lambda v: "{" + ", ".join(str(int(x)) for x in v) + "}"  # noqa: E731
    return f"{{{fmt(dims)}, {fmt(s1)}, {fmt(s2)}, 0}}", False


def _row_shape(shape):
    """(rows, elements per row) of a tensor viewed as NHWC rows (H), else one row."""
    if len(shape) == 4 and shape[0] == 1:
        return shape[1], int(shape[2] * shape[3])
    return 1, int(np.prod(shape, dtype=np.int64)) if shape else 1


def _binary_elementwise(ctx, node, kind):
    a, b_, out = _t(ctx, node.inputs[0]), _t(ctx, node.inputs[1]), _t(ctx, node.outputs[0])
    dtype = _check_types(node, [a, b_, out], ("float32", "int8"))
    name = ctx.ident(f"{kind}{node.index}")
    decls = []
    names = []
    for t in (a, b_):
        if t.data is not None:
            nm, d = ctx.const_array(t.data, CTYPES[dtype], key=t.index, base=f"{kind}{node.index}_c")
            decls += [d] if d else []
            names.append(nm)
        else:
            names.append(None)
    ins = [t.index for t in (a, b_) if t.data is None]
    init, flat = _broadcast(node, a.shape, b_.shape, out.shape)
    # A row-wise variant (for streaming / in-place) when the constant operand does not vary
    # along H: the same broadcast per row of the 4-D output.
    rows_ok = False
    row_init = None
    oh, row_elems = _row_shape(out.shape)
    var = [t for t in (a, b_) if t.data is None]
    if len(out.shape) == 4 and out.shape[0] == 1 and len(var) == 1 and var[0].shape == out.shape:
        const = b_ if b_.data is not None else a
        cs = (1,) * (4 - len(const.shape)) + tuple(const.shape)
        if cs[1] == 1:
            ra = (1, out.shape[2], out.shape[3])
            rc = (1,) + tuple(cs[2:])
            sa, sb = (ra, rc) if a.data is None else (rc, ra)
            row_init, _ = _broadcast(node, sa, sb, ra)
            rows_ok = True
    step = Step(_label(node), node, ins, [out.index])
    if rows_ok:
        step.elementwise = True
        step.rows = None
        step.row_bytes_in = row_elems * out.itemsize
        step.row_bytes_out = row_elems * out.itemsize
    step.inplace = len(ins) >= 1 and all(ctx.graph.tensors[i].shape == out.shape for i in ins[:1])
    rname = ctx.ident(f"{kind}{node.index}_row") if rows_ok else None

    def operands(bufs, y=None):
        res = []
        for t, nm in zip((a, b_), names):
            if nm is not None:
                res.append(nm)
            elif y is None:
                res.append(bufs[t.index])
            else:
                res.append(f"{bufs[t.index]} + ({y}) * {row_elems}")
        return res

    if dtype == "float32":
        lo, hi = _float_act(node)
        full_decls = [f"static const tfc_bcast_t {name} = {init};"]
        if rows_ok:
            row_decls = [f"static const tfc_bcast_t {rname} = {row_init};"]

        def emit(bufs, rows, s):
            if rows is None:
                x, y = operands(bufs)
                return [f"tfc_{kind}_f32(&{name}, {x}, {y}, {bufs[out.index]}, {lo}, {hi});"]
            oy0, oy1, in0, out0 = rows
            x, y = operands(bufs, f"tfc_y - ({in0})")
            return [f"for (tfc_y = {oy0}; tfc_y < {oy1}; ++tfc_y) "
                    f"tfc_{kind}_f32(&{rname}, {x}, {y}, {bufs[out.index]} + (tfc_y - ({out0})) * {row_elems}, {lo}, {hi});"]
        step.kernels = {"float"}
    else:
        for t in (a, b_, out):
            _per_tensor(node, t)
        lo, hi = _int8_act(node, out)
        if kind == "add":
            left = 20
            twice = 2.0 * float(max(F32(a.qscale), F32(b_.qscale)))
            m1, s1 = quant.quantize_multiplier_smaller_than_one(float(F32(a.qscale)) / twice)
            m2, s2 = quant.quantize_multiplier_smaller_than_one(float(F32(b_.qscale)) / twice)
            mo, so = quant.quantize_multiplier_smaller_than_one(
                twice / float(F32(1 << left) * F32(out.qscale)))
            fields = (f"{-a.qzero}, {-b_.qzero}, {out.qzero}, {m1}, {s1}, {m2}, {s2}, {mo}, {so}, "
                      f"{left}, {lo}, {hi}")
            ctype = "tfc_add_s8_t"
        else:
            real = float(F32(F32(a.qscale) * F32(b_.qscale)) / F32(out.qscale))
            mo, so = quant.quantize_multiplier(real)
            fields = f"{-a.qzero}, {-b_.qzero}, {out.qzero}, {mo}, {so}, {lo}, {hi}"
            ctype = "tfc_mul_s8_t"
        full_decls = [f"static const {ctype} {name} = {{{init}, {fields}, {int(flat and ctx.cmsis)}}};"]
        if rows_ok:
            row_decls = [f"static const {ctype} {rname} = {{{row_init}, {fields}, 0}};"]

        def emit(bufs, rows, s):
            if rows is None:
                x, y = operands(bufs)
                return [f"TFC_CHECK(tfc_{kind}_s8(&{name}, {x}, {y}, {bufs[out.index]}));"]
            oy0, oy1, in0, out0 = rows
            x, y = operands(bufs, f"tfc_y - ({in0})")
            return [f"for (tfc_y = {oy0}; tfc_y < {oy1}; ++tfc_y) "
                    f"TFC_CHECK(tfc_{kind}_s8(&{rname}, {x}, {y}, {bufs[out.index]} + (tfc_y - ({out0})) * {row_elems}));"]
        step.kernels = {"int8"}
    step.decls = decls
    step.row_decls = row_decls if rows_ok else []
    step.full_decls = full_decls
    step.emit = emit
    return step


def lower_add(ctx, node):
    return _binary_elementwise(ctx, node, "add")


def lower_mul(ctx, node):
    return _binary_elementwise(ctx, node, "mul")


def _unary(ctx, node, inp, out, body):
    """A step applying ``body(in_expr, out_expr, count_expr)`` over whole tensors or row bands."""
    oh, row_elems = _row_shape(out.shape)
    step = Step(_label(node), node, [inp.index], [out.index])
    if len(out.shape) == 4 and out.shape[0] == 1 and tuple(inp.shape[:3]) == tuple(out.shape[:3]):
        step.elementwise = True
        step.row_bytes_in = inp.size // max(oh, 1) * inp.itemsize
        step.row_bytes_out = row_elems * out.itemsize
    in_row = inp.size // max(oh, 1)

    def emit(bufs, rows, s):
        if rows is None:
            return body(bufs[inp.index], bufs[out.index], str(out.size))
        oy0, oy1, in0, out0 = rows
        return body(f"{bufs[inp.index]} + (({oy0}) - ({in0})) * {in_row}",
                    f"{bufs[out.index]} + (({oy0}) - ({out0})) * {row_elems}",
                    f"(({oy1}) - ({oy0})) * {row_elems}")
    step.emit = emit
    return step


def lower_activation(ctx, node):
    inp, out = _t(ctx, node.inputs[0]), _t(ctx, node.outputs[0])
    dtype = _check_types(node, [inp, out], ("float32", "int8"))
    op = node.op
    if dtype == "float32":
        if op in ("RELU", "RELU6", "RELU_N1_TO_1"):
            lo, hi = {"RELU": (0.0, quant.FLOAT_MAX), "RELU6": (0.0, 6.0),
                      "RELU_N1_TO_1": (-1.0, 1.0)}[op]
            body = lambda i, o, n: [f"tfc_clamp_f32({i}, {o}, {n}, {c_float(lo)}, {c_float(hi)});"]  # noqa: E731
        else:
            fn = {"LOGISTIC": "tfc_logistic_f32", "TANH": "tfc_tanh_f32"}[op]
            body = lambda i, o, n: [f"{fn}({i}, {o}, {n});"]  # noqa: E731
        step = _unary(ctx, node, inp, out, body)
        step.kernels = {"float"}
    else:
        _per_tensor(node, inp)
        _per_tensor(node, out)
        if op in ("RELU", "RELU6", "RELU_N1_TO_1"):
            real = float(F32(F32(inp.qscale) / F32(out.qscale)))
            m, s_ = quant.quantize_multiplier(real)
            amin, amax = {"RELU": (0.0, None), "RELU6": (0.0, 6.0), "RELU_N1_TO_1": (-1.0, 1.0)}[op]
            lo = max(-128, out.qzero + int(quant.round_half_away(float(F32(amin) / F32(out.qscale)))))
            hi = 127 if amax is None else min(
                127, out.qzero + int(quant.round_half_away(float(F32(amax) / F32(out.qscale)))))
            body = lambda i, o, n: [f"tfc_relu_s8({i}, {o}, {n}, {inp.qzero}, {out.qzero}, {m}, {s_}, {lo}, {hi});"]  # noqa: E731
            step = _unary(ctx, node, inp, out, body)
        else:
            table = quant.lut_int8(op, inp.qscale, inp.qzero, out.qscale, out.qzero)
            tname, d = ctx.const_array(table, "int8_t", base=f"lut{node.index}")
            body = lambda i, o, n: [f"tfc_lut_s8({i}, {o}, {n}, {tname});"]  # noqa: E731
            step = _unary(ctx, node, inp, out, body)
            step.decls = [d]
        step.kernels = {"int8"}
    step.inplace = True
    return step


def lower_quantize(ctx, node):
    inp, out = _t(ctx, node.inputs[0]), _t(ctx, node.outputs[0])
    if out.dtype != "int8" or inp.dtype not in ("float32", "int8"):
        raise CodegenError(f"{node.describe()}: QUANTIZE {inp.dtype} -> {out.dtype} is not "
                           "supported (float32/int8 -> int8 only).")
    _per_tensor(node, out)
    if inp.dtype == "float32":
        body = lambda i, o, n: [f"tfc_quantize_f32_s8({i}, {o}, {n}, {c_float(out.qscale)}, {out.qzero});"]  # noqa: E731
        step = _unary(ctx, node, inp, out, body)
        step.kernels = {"float"}
    else:
        _per_tensor(node, inp)
        real = float(F32(inp.qscale)) / float(F32(out.qscale))
        m, s_ = quant.quantize_multiplier(real)
        body = lambda i, o, n: [f"tfc_requantize_s8({i}, {o}, {n}, {inp.qzero}, {out.qzero}, {m}, {s_});"]  # noqa: E731
        step = _unary(ctx, node, inp, out, body)
        step.kernels = {"int8"}
        step.inplace = True
    return step


def lower_dequantize(ctx, node):
    inp, out = _t(ctx, node.inputs[0]), _t(ctx, node.outputs[0])
    if inp.dtype != "int8" or out.dtype != "float32":
        raise CodegenError(f"{node.describe()}: DEQUANTIZE {inp.dtype} -> {out.dtype} is not "
                           "supported (int8 -> float32 at run time; float16 constants are folded).")
    _per_tensor(node, inp)
    body = lambda i, o, n: [f"tfc_dequantize_s8_f32({i}, {o}, {n}, {c_float(inp.qscale)}, {inp.qzero});"]  # noqa: E731
    step = _unary(ctx, node, inp, out, body)
    step.kernels = {"float"}
    return step


def lower_softmax(ctx, node):
    inp, out = _t(ctx, node.inputs[0]), _t(ctx, node.outputs[0])
    dtype = _check_types(node, [inp, out], ("float32", "int8"))
    depth = inp.shape[-1] if inp.shape else 1
    rows = inp.size // depth
    beta = float(node.options.get("beta", 1.0))
    step = Step(_label(node), node, [inp.index], [out.index])
    if dtype == "float32":
        step.kernels = {"float"}
        step.emit = lambda b, r, s: [
            f"tfc_softmax_f32({b[inp.index]}, {b[out.index]}, {rows}, {depth}, {c_float(beta)});"]
    else:
        _per_tensor(node, inp)
        if out.qzero != -128 or abs(out.qscale - 1 / 256) > 0.001 / 256:
            raise CodegenError(f"{node.describe()}: int8 softmax needs output scale 1/256 and zero "
                               "point -128.")
        m, sh, dmin = quant.softmax_params(beta, inp.qscale)
        name = ctx.ident(f"softmax{node.index}")
        step.decls = [f"static const tfc_softmax_s8_t {name} = {{{rows}, {depth}, {m}, {sh}, {dmin}, {int(ctx.cmsis)}}};"]
        step.kernels = {"int8"}
        step.emit = lambda b, r, s: [f"TFC_CHECK(tfc_softmax_s8(&{name}, {b[inp.index]}, {b[out.index]}));"]
    return step


# ---------------------------------------------------------------- layout
def _copy_step(ctx, node, inp, out):
    if inp.nbytes != out.nbytes or inp.dtype != out.dtype:
        raise CodegenError(f"{node.describe()}: {inp.shape} {inp.dtype} cannot be viewed as "
                           f"{out.shape} {out.dtype}.")
    if inp.quantized and out.quantized and (inp.qscale != out.qscale or inp.qzero != out.qzero):
        raise CodegenError(f"{node.describe()}: a reshape that changes quantization is not supported.")
    step = Step(_label(node), node, [inp.index], [out.index], alias=True)
    step.emit = lambda b, r, s: [f"tfc_copy({b[inp.index]}, {b[out.index]}, {inp.nbytes});"]
    step.kernels = {"float"}
    return step


def lower_reshape(ctx, node):
    return _copy_step(ctx, node, _t(ctx, node.inputs[0]), _t(ctx, node.outputs[0]))


def lower_pad(ctx, node):
    inp, out = _t(ctx, node.inputs[0]), _t(ctx, node.outputs[0])
    pads = _const(ctx, node, node.inputs[1], "paddings").data.reshape(-1, 2).astype(int)
    dtype = _check_types(node, [inp, out], ("float32", "int8"))
    rank = len(inp.shape)
    if rank > 4:
        raise CodegenError(f"{node.describe()}: PAD supports up to 4-D tensors, got {rank}-D.")
    if np.any(pads < 0):
        raise CodegenError(f"{node.describe()}: negative paddings are not supported.")
    value = 0.0 if dtype == "float32" else out.qzero
    if len(node.inputs) > 2 and node.inputs[2] >= 0:
        v = _const(ctx, node, node.inputs[2], "constant value")
        value = float(v.data.reshape(-1)[0]) if dtype == "float32" else int(v.data.reshape(-1)[0])
    if dtype == "int8" and (inp.qscale != out.qscale or inp.qzero != out.qzero):
        raise CodegenError(f"{node.describe()}: int8 PAD needs the same input and output quantization.")
    k = 4 - rank
    dims = [1] * k + list(inp.shape)
    before = [0] * k + [int(p[0]) for p in pads]
    after = [0] * k + [int(p[1]) for p in pads]
    name = ctx.ident(f"pad{node.index}")
    vname = ctx.ident(f"pad{node.index}_v")
    fmt = lambda v: "{" + ", ".join(str(int(x)) for x in v) + "}"  # noqa: E731
    ctype = CTYPES[dtype]
    vtext = c_float(value) if dtype == "float32" else str(int(value))
    step = Step(_label(node), node, [inp.index], [out.index])
    step.decls = [f"static const {ctype} {vname} = {vtext};",
                  f"static const tfc_pad_t {name} = {{{fmt(dims)}, {fmt(before)}, {fmt(after)}, "
                  f"{inp.itemsize}, &{vname}}};"]
    step.emit = lambda b, r, s: [f"tfc_pad(&{name}, {b[inp.index]}, {b[out.index]});"]
    step.kernels = {"float"}
    return step


def lower_concatenation(ctx, node):
    ins = [_t(ctx, i) for i in node.inputs]
    out = _t(ctx, node.outputs[0])
    dtype = _check_types(node, ins + [out], ("float32", "int8"))
    if dtype == "int8":
        for t in ins:
            if t.qscale != out.qscale or t.qzero != out.qzero:
                raise CodegenError(f"{node.describe()}: int8 CONCATENATION inputs must share the "
                                   "output's scale and zero point (TFLite's int8 rule).")
    rank = len(out.shape)
    axis = int(node.options.get("axis", 0)) % rank
    outer = int(np.prod(out.shape[:axis], dtype=np.int64))
    sizes = [int(np.prod(t.shape[axis:], dtype=np.int64)) * t.itemsize for t in ins]
    name = ctx.ident(f"concat{node.index}")
    decls = []
    const_names = {}
    for t in ins:
        if t.data is not None:
            nm, d = ctx.const_array(t.data, CTYPES[dtype], key=t.index, base=f"concat{node.index}_c")
            const_names[t.index] = nm
            decls += [d] if d else []
    decls.append(f"static const int32_t {name}_sizes[{len(ins)}] = {{{', '.join(map(str, sizes))}}};")
    step = Step(_label(node), node, [t.index for t in ins if t.data is None], [out.index])
    act = _act(node)
    if act not in ("NONE", None):
        raise CodegenError(f"{node.describe()}: fused activation {act} on CONCATENATION is not supported.")

    def emit(bufs, rows, s):
        ptrs = ", ".join(f"(const void *)({const_names.get(t.index) or bufs[t.index]})" for t in ins)
        return ["{", f"  const void *tfc_ins[{len(ins)}] = {{{ptrs}}};",
                f"  tfc_concat(tfc_ins, {name}_sizes, {len(ins)}, {outer}, {bufs[out.index]});", "}"]
    step.decls = decls
    step.emit = emit
    step.kernels = {"float"}
    return step


LOWER = {
    "CONV_2D": lower_conv2d, "DEPTHWISE_CONV_2D": lower_dwconv2d,
    "FULLY_CONNECTED": lower_fully_connected, "MAX_POOL_2D": lower_pool,
    "AVERAGE_POOL_2D": lower_pool, "MEAN": lower_mean, "ADD": lower_add, "MUL": lower_mul,
    "PAD": lower_pad, "PADV2": lower_pad, "RESHAPE": lower_reshape, "SOFTMAX": lower_softmax,
    "CONCATENATION": lower_concatenation, "QUANTIZE": lower_quantize,
    "DEQUANTIZE": lower_dequantize, "RELU": lower_activation, "RELU6": lower_activation,
    "RELU_N1_TO_1": lower_activation, "LOGISTIC": lower_activation, "TANH": lower_activation,
}

__all__ = ["LOWER"]
