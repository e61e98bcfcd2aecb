"""Helpers shared by the builtin-op lowerings (:mod:`tfcompress.codegen.ops_builtin` and
:mod:`tfcompress.codegen.ops_conv`): tensor lookup, type checks, fused activations."""


from tfcompress.codegen import quant
from tfcompress.codegen.graph import ACTIVATIONS, CodegenError
from tfcompress.codegen.steps import c_float



def _t(ctx, i):
    return ctx.graph.tensors[i]


def _act(node):
    return ACTIVATIONS.get(node.options.get("fusedActivationFunction", 0), "OTHER")


def _check_types(node, tensors, allowed):
    kinds = {t.dtype for t in tensors}
    if len(kinds) != 1 or next(iter(kinds)) not in allowed:
        raise CodegenError(f"{node.describe()}: tensors of type(s) {sorted(kinds)} are not "
                           f"supported (supported: {', '.join(allowed)}, one type per op).")
    return next(iter(kinds))


def _float_act(node):
    act = _act(node)
    try:
        lo, hi = quant.activation_range_float(act)
    except ValueError as err:
        raise CodegenError(f"{node.describe()}: {err}.") from err
    return c_float(lo), c_float(hi)


def _int8_act(node, out):
    try:
        return quant.activation_range_int8(_act(node), out.qscale, out.qzero)
    except ValueError as err:
        raise CodegenError(f"{node.describe()}: {err}.") from err


def _const(ctx, node, i, what):
    t = _t(ctx, i)
    if t.data is None:
        raise CodegenError(f"{node.describe()}: the {what} must be a constant tensor "
                           f"(tensor {t.name!r} is computed at run time).")
    return t


def _per_tensor(node, t):
    if t.scale.size != 1:
        raise CodegenError(f"{node.describe()}: tensor {t.name!r} needs per-tensor quantization "
                           f"(it has {t.scale.size} scales).")


def _label(node):
    return f"{node.op} (#{node.index})"
