"""The exact-grid exporter's graph: a Keras model lowered to a few integer-friendly operations.

:func:`lower` walks a functional/Sequential tf_keras model node by node and produces a
:class:`Graph` of :class:`Op` s on :class:`Value` s:

- ``linear`` (Conv2D / DepthwiseConv2D / Dense, float or quantized kernel, optional fused
  ReLU/ReLU6), ``bn`` (inference BatchNorm: ``y = m x + a`` per channel), ``relu``,
  ``maxpool`` / ``avgpool`` / ``mean`` (global average), ``reshape``, ``pad``, ``add``,
  ``softmax`` and ``quant`` (a trained activation grid: ``clamp(round(x / s + z))``);
- then :func:`fold_batchnorm` and :func:`fuse_activations` rewrite it the way an integer
  runtime computes it: BatchNorm folded into the producing kernel per output channel
  (``W' = m W``, ``b' = m b + a``, so a per-channel integer grid stays exact: only its scale
  changes) and ReLU/ReLU6 fused into the producing operation's output clamp.

Every value remembers a Keras tensor with the same float contents (``ref``), which is what
calibration measures for tensors that no trained quantizer governs.
"""

from dataclasses import dataclass, field

import numpy as np

from tfcompress._keras import keras
from tfcompress.errors import ConversionError
from tfcompress.quantizers.grid import integer_grid

SUPPORTED_LAYERS = (
    "InputLayer, Conv2D, DepthwiseConv2D, Dense and their larq/tfcompress Quant* versions, "
    "BatchNormalization, ReLU / Activation('relu'|'relu6'|'linear'|'softmax'), Softmax, "
    "MaxPooling2D, AveragePooling2D, GlobalAveragePooling2D, Flatten, Reshape, ZeroPadding2D, "
    "Add, Dropout, and quantizers used as layers"
)
LINEAR = ("conv", "dwconv", "fc")
PASS_THROUGH = ("maxpool", "reshape", "pad")   # int8 output params = input params


@dataclass(eq=False)
class Value:
    """A tensor of the lowered graph (batch 1)."""

    name: str
    shape: tuple
    ref: object = None            # a KerasTensor with the same float contents, or None
    producer: "Op" = None
    consumers: list = field(default_factory=list)
    # integer parameters, set by the exporter: true scale, zero point, stored scale
    scale: float = None
    zero_point: int = None
    stored_scale: float = None
    offset: float = 0.0           # real = stored value + offset (LSQ+ offsets; else 0)
    grid: object = None           # the activation grid that set the parameters, if any
    fixed: bool = False           # parameters chosen by a grid or an op rule (not calibrated)
    dtype: str = "int8"           # "int16" for the 16x8 classifier head (float I/O only)
    range: tuple = None           # calibrated (min, max), when calibrated


@dataclass(eq=False)
class Op:
    """One operation. ``attrs`` depend on ``kind`` (see the module docstring)."""

    kind: str
    inputs: list
    outputs: list
    layer: object = None
    attrs: dict = field(default_factory=dict)

    @property
    def name(self):
        return getattr(self.layer, "name", self.kind)


class Graph:
    """Ops in topological order, the graph inputs and outputs, and per-layer facts."""

    def __init__(self, model):
        self.model = model
        self.ops = []
        self.inputs = []
        self.outputs = []
        self.layer_rows = []        # one dict per quantized role / weight tensor, for the report
        self.grid_tensors = []      # (value, grid, f, layer, role): where each trained grid lives

    def value(self, name, shape, ref=None):
        return Value(name=name, shape=tuple(int(d) for d in shape), ref=ref)

    def add(self, kind, inputs, outputs, layer=None, **attrs):
        op = Op(kind, list(inputs), list(outputs), layer, attrs)
        for v in op.inputs:
            v.consumers.append(op)
        for v in op.outputs:
            v.producer = op
        self.ops.append(op)
        return op

    def remove(self, op):
        self.ops.remove(op)
        for v in op.inputs:
            v.consumers = [c for c in v.consumers if c is not op]

    def replace_uses(self, old, new):
        """Make every consumer of ``old`` read ``new`` (and graph outputs too)."""
        for c in list(old.consumers):
            c.inputs = [new if v is old else v for v in c.inputs]
            new.consumers.append(c)
        old.consumers = []
        self.outputs = [new if v is old else v for v in self.outputs]

    def toposort(self):
        done, order = set(self.inputs), []
        pending = list(self.ops)
        while pending:
            progress = False
            for op in list(pending):
                if all(v in done or v.producer is None for v in op.inputs):
                    order.append(op)
                    done.update(op.outputs)
                    pending.remove(op)
                    progress = True
            if not progress:
                raise ConversionError("The lowered graph has a cycle (internal error).")
        self.ops = order


# ----------------------------------------------------------------------------- helpers
def _err(layer, msg):
    return ConversionError(f"Layer {layer.name!r} ({type(layer).__name__}): {msg}")


def _activation_name(layer):
    act = getattr(layer, "activation", None)
    if act is None:
        return "linear"
    name = getattr(act, "__name__", str(act))
    if name in ("linear", "relu", "softmax", "relu6"):
        return name
    raise _err(layer, f"activation {name!r} has no exact integer form here; use 'relu', "
                      "'relu6', 'softmax' or 'linear' (or a separate layer).")


def _per_channel(array, out_axis_len, layer, what):
    """Collapse an array broadcastable to a kernel (output channel last) to one value per
    output channel, checking that it is constant within each channel."""
    a = np.asarray(array, np.float64)
    if a.size == 1:
        return np.full(out_axis_len, float(a.ravel()[0]))
    flat = a.reshape(-1, a.shape[-1]) if a.ndim else a.reshape(1, 1)
    if flat.shape[-1] not in (1, out_axis_len) or not np.all(flat == flat[:1]):
        raise _err(layer, f"the kernel grid's {what} varies within an output channel (a "
                          "per-input-channel grid); TFLite stores one scale per output channel.")
    return np.broadcast_to(flat[0], (out_axis_len,)).astype(np.float64).copy()


def _kernel_grid(layer, quantizer, kernel, normalize, role):
    """(float kernel, integer kernel, per-output-channel scale, grid) in the normalized layout
    (output channel last) for a quantized kernel; ints are centered (zero point removed)."""
    import tensorflow as tf

    wq = quantizer(tf.convert_to_tensor(kernel))
    wq = np.asarray(wq, np.float64)
    try:
        grid = integer_grid(quantizer, kernel)
    except ValueError as err:
        raise _err(layer, f"{role} quantizer: {err}") from None
    if not grid.integral_zero_point:
        raise _err(layer, f"{role} grid has a fractional zero point; TFLite weights have zero "
                          "point 0.")
    try:
        q = grid.integers(wq, name=f"layer {layer.name!r} {role}")
    except ValueError as err:
        raise _err(layer, str(err)) from None
    scale_full = np.broadcast_to(grid.scale, wq.shape)
    zero_full = np.broadcast_to(grid.zero_point, wq.shape)
    ints = normalize(q - np.round(zero_full).astype(np.int64))
    scale = normalize(scale_full)
    out = ints.shape[-1]
    scale_c = _per_channel(scale, out, layer, "scale")
    wq_n = normalize(wq)
    return wq_n, ints, scale_c, grid


# ----------------------------------------------------------------------------- lowering
def lower(model):
    """Lower ``model`` to a :class:`Graph` (BatchNorm not yet folded). Raises ConversionError
    naming the first layer that has no exact integer form here."""
    import larq as lq

    g = Graph(model)
    values = {}
    for i, kt in enumerate(model.inputs):
        v = g.value(f"input_{i}", (1,) + tuple(kt.shape[1:]), kt)
        if any(d is None for d in kt.shape[1:]):
            raise ConversionError(f"Model input {kt.name!r} has an unknown dimension "
                                  f"{tuple(kt.shape)}; the exporter needs static shapes.")
        values[str(id(kt))] = v
        g.inputs.append(v)
    for depth in sorted(model._nodes_by_depth, reverse=True):
        for node in model._nodes_by_depth[depth]:
            if node.is_input:
                continue
            layer = node.layer
            ins = [values[i] for i in node.flat_input_ids]
            outs_kt = node.outputs if isinstance(node.outputs, (list, tuple)) else [node.outputs]
            if isinstance(layer, keras.Model):
                raise _err(layer, "nested models are not lowered; flatten the model first.")
            if len(outs_kt) != 1:
                raise _err(layer, "layers with several outputs are not supported.")
            kt = outs_kt[0]
            out = g.value(layer.name, (1,) + tuple(kt.shape[1:]), kt)
            _lower_layer(g, layer, ins, out, lq)
            values[node.flat_output_ids[0]] = out
    g.outputs = [values[str(id(kt))] for kt in model.outputs]
    return g


def _quantizer_layer(layer, lq):
    return isinstance(layer, lq.quantizers.Quantizer) or (
        hasattr(layer, "integer_grid") and isinstance(layer, keras.layers.Layer))


def _quant(g, layer, x, quantizer, role):
    """Insert a ``quant`` op for an activation quantizer; return the quantized value."""
    precision = getattr(quantizer, "precision", None)
    if precision == 1:
        raise _err(layer, f"the {role} quantizer {type(quantizer).__name__} is 1-bit (sign): an "
                          "int8 target cannot compute binary activations. Use target='lce' "
                          "(Larq Compute Engine; layers with multi-bit weights and binary inputs "
                          "run there as sums of binary convolutions).")
    try:
        grid = integer_grid(quantizer)
    except ValueError as err:
        raise _err(layer, f"{role} quantizer: {err}") from None
    if not grid.per_tensor:
        raise _err(layer, f"the {role} quantizer is per-channel; TFLite activations have one "
                          "scale and zero point per tensor.")
    if grid.levels is not None:
        raise _err(layer, f"the {role} grid ({grid.kind}) is not uniform; integer kernels round "
                          "activations to uniform grids only.")
    q = g.value(f"{layer.name}/{role}", x.shape)
    g.add("quant", [x], [q], layer, grid=grid, role=role)
    g.layer_rows.append({"layer": layer.name, "role": role, "quantizer": grid.kind,
                         "trained_bits": grid.bits})
    return q


def _lower_layer(g, layer, ins, out, lq):
    from tfcompress.inspection import layer_precisions

    K = keras.layers
    name = type(layer).__name__
    try:
        bits = layer_precisions(layer)
    except ValueError as err:
        raise _err(layer, str(err)) from None
    one = sorted(role for role, b in bits.items() if b == 1)
    if one:
        raise _err(layer, f"{', '.join(one)} {'is' if len(one) == 1 else 'are'} 1-bit (sign): an "
                          "int8 target has no binary kernels and would store it with no size or "
                          "speed gain. Use target='lce' (Larq Compute Engine); layers with multi-bit "
                          "weights and binary inputs convert there as sums of binary convolutions.")
    if callable(getattr(layer, "tfcompress_precisions", None)):
        raise _err(layer, "a layer that quantizes internally has no exact integer lowering here.")
    if _quantizer_layer(layer, lq) and not hasattr(layer, "kernel"):
        q = _quant(g, layer, ins[0], layer, "output")
        g.add("identity", [q], [out], layer)
        return
    if isinstance(layer, (K.Conv2D, K.DepthwiseConv2D, K.Dense)) and not isinstance(
            layer, (K.Conv2DTranspose, K.SeparableConv2D)) and type(layer).__name__ not in (
            "Conv1D", "QuantConv1D", "Conv3D"):
        _lower_linear(g, layer, ins[0], out)
        return
    if isinstance(layer, K.BatchNormalization):
        axis = layer.axis[0] if isinstance(layer.axis, (list, tuple)) else layer.axis
        if axis not in (-1, len(ins[0].shape) - 1):
            raise _err(layer, "only BatchNormalization over the last (channel) axis is supported.")
        gamma = layer.gamma.numpy() if layer.scale else 1.0
        beta = layer.beta.numpy() if layer.center else 0.0
        mult = gamma / np.sqrt(layer.moving_variance.numpy() + layer.epsilon)
        add = beta - layer.moving_mean.numpy() * mult
        g.add("bn", ins, [out], layer, mult=np.asarray(mult, np.float64) * np.ones(out.shape[-1]),
              add=np.asarray(add, np.float64) * np.ones(out.shape[-1]))
        return
    if isinstance(layer, K.ReLU):
        neg = float(np.asarray(layer.negative_slope))
        thr = float(np.asarray(layer.threshold))
        mx = None if layer.max_value is None else float(np.asarray(layer.max_value))
        if neg != 0 or thr != 0 or mx not in (None, 6.0):
            raise _err(layer, "only ReLU and ReLU6 (no slope, no threshold) have an exact "
                              "integer clamp.")
        g.add("relu", ins, [out], layer, act="RELU" if mx is None else "RELU6")
        return
    if isinstance(layer, K.Activation):
        act = _activation_name(layer)
        kind = {"relu": ("relu", "RELU"), "relu6": ("relu", "RELU6"), "linear": ("identity", None),
                "softmax": ("softmax", None)}[act]
        g.add(kind[0], ins, [out], layer, act=kind[1])
        return
    if isinstance(layer, K.Softmax):
        if layer.axis not in (-1, len(ins[0].shape) - 1):
            raise _err(layer, "Softmax over a non-last axis is not supported.")
        g.add("softmax", ins, [out], layer)
        return
    if isinstance(layer, (K.MaxPooling2D, K.AveragePooling2D)):
        if layer.data_format != "channels_last":
            raise _err(layer, "only channels_last pooling is supported.")
        kind = "maxpool" if isinstance(layer, K.MaxPooling2D) else "avgpool"
        g.add(kind, ins, [out], layer, pool=tuple(layer.pool_size), strides=tuple(layer.strides),
              padding=layer.padding.upper())
        return
    if isinstance(layer, K.GlobalAveragePooling2D):
        if layer.data_format != "channels_last":
            raise _err(layer, "only channels_last pooling is supported.")
        # as a depthwise convolution with weights 1/N: one requantization of the exact integer
        # sum (MEAN's integer kernels round twice), and a following quantizer's clamp folds in
        _, h, w, c = ins[0].shape
        pooled = out if layer.keepdims else g.value(f"{layer.name}/pooled", (1, 1, 1, c))
        if not layer.keepdims:
            pooled.ref = None
        row = {"layer": layer.name, "role": "average", "params": h * w * c,
               "quantizer": "1/N", "trained_bits": 32}
        g.add("dwconv", ins, [pooled], layer, weights=np.full((h, w, 1, c), 1.0 / (h * w)),
              ints=None, w_scale=None, grid=None, bias=np.zeros(c), act="NONE", strides=(1, 1),
              dilation=(1, 1), padding="VALID", depth_multiplier=1, pool=True, row=row)
        g.layer_rows.append(row)
        if not layer.keepdims:
            pooled.ref = ("pooled", out.ref)
            g.add("reshape", [pooled], [out], layer)
        return
    if isinstance(layer, (K.Flatten, K.Reshape)):
        g.add("reshape", ins, [out], layer)
        return
    if isinstance(layer, K.ZeroPadding2D):
        (t, b), (lft, r) = layer.padding
        g.add("pad", ins, [out], layer, pads=((0, 0), (t, b), (lft, r), (0, 0)), value=0.0)
        return
    if isinstance(layer, K.Add):
        if len(ins) != 2:
            raise _err(layer, "Add of more than two tensors is not supported; chain two-input Adds.")
        g.add("add", ins, [out], layer, act="NONE")
        return
    if isinstance(layer, (K.Dropout, K.SpatialDropout2D, K.GaussianNoise, K.GaussianDropout,
                          K.ActivityRegularization)) or name == "InputLayer":
        g.add("identity", ins, [out], layer)
        return
    raise _err(layer, f"no exact integer lowering; the exact-grid exporter supports "
                      f"{SUPPORTED_LAYERS}.")


def _lower_linear(g, layer, x, out):
    K = keras.layers
    is_dw = isinstance(layer, K.DepthwiseConv2D)
    is_fc = isinstance(layer, K.Dense)
    if not is_fc and getattr(layer, "data_format", "channels_last") != "channels_last":
        raise _err(layer, "only channels_last convolutions are supported.")
    if not is_fc and not is_dw and getattr(layer, "groups", 1) != 1:
        raise _err(layer, "grouped convolutions are not supported.")
    if is_fc and len(x.shape) != 2:
        raise _err(layer, f"Dense on a rank-{len(x.shape)} input; flatten to (batch, features) first.")
    act = _activation_name(layer)
    x_ref = x.ref
    kq_attr = "depthwise_quantizer" if is_dw else "kernel_quantizer"
    kernel_var = layer.depthwise_kernel if is_dw else layer.kernel
    kernel = kernel_var.numpy()
    if is_dw:
        kh, kw, cin, mult = kernel.shape

        def normalize(a):
            return np.broadcast_to(a, kernel.shape).reshape(kh, kw, 1, cin * mult)
    else:
        def normalize(a):
            return np.broadcast_to(a, kernel.shape).copy()
    iq = getattr(layer, "input_quantizer", None)
    if iq is not None:
        x = _quant(g, layer, x, iq, "input")
    kq = getattr(layer, kq_attr, None)
    role = "depthwise_kernel" if is_dw else "kernel"
    row = {"layer": layer.name, "role": role, "params": int(kernel.size)}
    if kq is not None:
        if getattr(kq, "precision", None) == 1:
            raise _err(layer, f"the {role} quantizer {type(kq).__name__} is 1-bit (sign); an int8 "
                              "target stores it without any size or speed gain. Use target='lce'.")
        w, ints, scale_c, grid = _kernel_grid(layer, kq, kernel, normalize, role)
        row.update(quantizer=grid.kind, trained_bits=grid.bits)
    else:
        w, ints, scale_c, grid = normalize(kernel).astype(np.float64), None, None, None
        row.update(quantizer="float", trained_bits=32)
    bias = layer.bias.numpy().astype(np.float64) if getattr(layer, "use_bias", False) else None
    if is_dw and bias is None:
        bias = np.zeros(w.shape[-1])
    attrs = dict(weights=w, ints=ints, w_scale=scale_c, grid=grid, bias=bias, act="NONE", row=row)
    if not is_fc:
        pad_value = float(getattr(layer, "pad_values", 0.0) or 0.0)
        padding = layer.padding.upper()
        if padding not in ("SAME", "VALID"):
            raise _err(layer, f"padding {layer.padding!r} is not supported.")
        if padding == "SAME" and pad_value != 0.0:
            kh_, kw_ = layer.kernel_size
            (sh, sw), (dh, dw_) = layer.strides, layer.dilation_rate
            in_h, in_w = x.shape[1], x.shape[2]
            oh, ow = -(-in_h // sh), -(-in_w // sw)
            ph = max((oh - 1) * sh + (kh_ - 1) * dh + 1 - in_h, 0)
            pw = max((ow - 1) * sw + (kw_ - 1) * dw_ + 1 - in_w, 0)
            padded = g.value(f"{layer.name}/pad", (1, in_h + ph, in_w + pw, x.shape[3]))
            g.add("pad", [x], [padded], layer,
                  pads=((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)),
                  value=pad_value)
            x, padding = padded, "VALID"
        attrs.update(strides=tuple(layer.strides), dilation=tuple(layer.dilation_rate),
                     padding=padding)
        if is_dw:
            attrs["depth_multiplier"] = int(layer.depth_multiplier)
    kind = "dwconv" if is_dw else ("fc" if is_fc else "conv")
    ref = out.ref if act == "linear" else None
    lin = g.value(f"{layer.name}/linear", out.shape, ref)
    g.add(kind, [x], [lin], layer, **attrs)
    if act == "linear":
        g.add("identity", [lin], [out], layer)
    elif act in ("relu", "relu6"):
        g.add("relu", [lin], [out], layer, act="RELU" if act == "relu" else "RELU6")
    else:
        lin.ref = ("linear_of", layer, x_ref)
        g.add("softmax", [lin], [out], layer)
    g.layer_rows.append(row)


# ------------------------------------------------------------------------------- passes
def remove_identities(g):
    for op in [o for o in g.ops if o.kind == "identity"]:
        src, dst = op.inputs[0], op.outputs[0]
        g.remove(op)
        if src.ref is None or (isinstance(src.ref, tuple)):
            src.ref = dst.ref if dst.ref is not None else src.ref
        g.replace_uses(dst, src)


def fold_batchnorm(g):
    """Fold each BatchNorm into the linear op that feeds only it; lower the others to a 1x1
    depthwise convolution (4-D) so they stay per-channel exact."""
    for op in [o for o in g.ops if o.kind == "bn"]:
        src, dst = op.inputs[0], op.outputs[0]
        mult, add = op.attrs["mult"], op.attrs["add"]
        p = src.producer
        if p is not None and p.kind in LINEAR and len(src.consumers) == 1 and p.attrs["act"] == "NONE":
            a = p.attrs
            a["weights"] = a["weights"] * mult
            bias = a["bias"] if a["bias"] is not None else np.zeros(len(mult))
            a["bias"] = bias * mult + add
            if a["ints"] is not None:
                sign = np.where(mult < 0, -1, 1)
                a["ints"] = a["ints"] * sign
                a["w_scale"] = a["w_scale"] * np.abs(mult)
                dead = a["w_scale"] == 0
                if dead.any():                    # gamma = 0: the channel is constant
                    a["ints"] = np.where(dead, 0, a["ints"])
                    a["w_scale"] = np.where(dead, 1.0, a["w_scale"])
            a.setdefault("folded", []).append(op.layer.name)
            g.remove(op)
            src.ref = dst.ref
            g.replace_uses(dst, src)
        elif len(dst.shape) == 4:
            c = dst.shape[-1]
            g.remove(op)
            new = g.add("dwconv", [src], [dst], op.layer, weights=mult.reshape(1, 1, 1, c),
                        ints=None, w_scale=None, grid=None, bias=add, act="NONE", strides=(1, 1),
                        dilation=(1, 1), padding="VALID", depth_multiplier=1,
                        row={"layer": op.layer.name, "role": "batchnorm", "params": c,
                             "quantizer": "float", "trained_bits": 32})
            g.ops.remove(new)
            g.ops.insert(0, new)
            g.layer_rows.append(new.attrs["row"])
        else:
            raise _err(op.layer, "a BatchNormalization that does not follow a Conv2D/Dense has "
                                 "no exact integer form on rank-2 tensors.")
    g.toposort()


def fuse_activations(g):
    """Fuse ReLU/ReLU6 into the linear op or Add that feeds only them."""
    for op in [o for o in g.ops if o.kind == "relu"]:
        src, dst = op.inputs[0], op.outputs[0]
        p = src.producer
        if p is not None and p.kind in LINEAR + ("add",) and len(src.consumers) == 1 \
                and p.attrs["act"] == "NONE" and src not in g.outputs:
            p.attrs["act"] = op.attrs["act"]
            g.remove(op)
            src.ref = dst.ref
            g.replace_uses(dst, src)


__all__ = ["Graph", "LINEAR", "Op", "PASS_THROUGH", "SUPPORTED_LAYERS", "Value",
           "fold_batchnorm", "fuse_activations", "lower", "remove_identities"]
