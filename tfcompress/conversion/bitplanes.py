"""Multi-bit weights with binary inputs as a sum of binary convolutions (for the ``lce`` target).

A convolution whose input is binarized (``input_quantizer`` of 1 bit, e.g. ``ste_sign``) and
whose kernel sits on an integer grid ``W = s_c q`` (TRQ, ``ste_tern``, 2-bit uniform/LSQ, ...)
is linear in the kernel, so writing the integers as a combination of sign planes,

    q = c_0 + sum_i w_i B_i,   B_i in {-1, +1}^{kh x kw x cin x cout},

turns it into binary convolutions that LCE runs with XNOR/popcount:

    conv(x, W)[c] = s_c (c_0 conv(x, 1) + sum_i w_i conv(x, B_i))[c].

The planes are chosen from the integers that occur:

- ``{-1, 0, 1}`` (ternary: TRQ with one residual, ``ste_tern``): ``B_0 = sign(q + 1/2)``,
  ``B_1 = sign(q - 1/2)``, ``w = (1/2, 1/2)`` (TRQ's own stem + residual);
- only odd integers in ``[-(2^n - 1), 2^n - 1]`` (TRQ with an even number of signs, DoReFa
  weights): ``q = sum_{i<n} 2^i B_i`` (the binary digits of ``(q + 2^n - 1)/2``);
- any integers in ``[lo, hi]``: ``n = ceil(log2(hi - lo + 1))`` binary digits of ``q - lo``
  give ``q = lo + (2^n - 1)/2 + sum_i 2^{i-1} B_i``; a non-zero constant adds one all-ones
  plane ``B = 1`` (one more binary convolution).

Each plane becomes a larq ``QuantConv2D`` (``ste_sign`` input and kernel, so LCE's converter
emits one ``LceBconv2d`` per plane, sharing one ``LceQuantize``) followed by a fixed per-channel
scale that LCE folds into the bconv's post-activation multiplier; the layer's bias and a
BatchNormalization that only follows the layer are folded into those multipliers and biases,
and an ``Add`` sums the planes. Padding (``pad_values``) is the same for every plane, so
the sum is exact for zero and one padding alike.
"""

import numpy as np

from tfcompress._keras import keras
from tfcompress.errors import ConversionError
from tfcompress.quantizers.grid import integer_grid

__all__ = ["decompose", "find_candidates", "rewrite"]


def decompose(q):
    """Sign planes of an integer kernel: ``(c0, weights, planes)`` with
    ``q == c0 + sum_i weights[i] * planes[i]`` and every plane in ``{-1, +1}``.

    >>> c0, w, p = decompose(np.array([-1, 0, 1, 1]))
    >>> c0, w, [b.tolist() for b in p]
    (0.0, [0.5, 0.5], [[-1, 1, 1, 1], [-1, -1, 1, 1]])
    """
    q = np.asarray(q, np.int64)
    levels = np.unique(q)
    if set(levels.tolist()) <= {-1, 0, 1}:
        planes = [np.where(q >= 0, 1, -1), np.where(q > 0, 1, -1)]
        c0, weights = 0.0, [0.5, 0.5]
    elif np.all(levels % 2 != 0):
        top = int(np.abs(levels).max())
        n = max(int(np.ceil(np.log2(top + 1))), 1)
        u = (q + 2 ** n - 1) // 2
        planes = [np.where((u >> i) & 1, 1, -1) for i in range(n)]
        c0, weights = 0.0, [float(2 ** i) for i in range(n)]
    else:
        lo, hi = int(levels.min()), int(levels.max())
        n = max(int(np.ceil(np.log2(hi - lo + 1))), 1)
        u = q - lo
        planes = [np.where((u >> i) & 1, 1, -1) for i in range(n)]
        c0, weights = float(lo + (2 ** n - 1) / 2), [float(2 ** (i - 1)) for i in range(n)]
    recon = c0 + sum(w * b for w, b in zip(weights, planes))
    if not np.array_equal(recon, q):
        raise AssertionError("bit-plane decomposition does not reconstruct the kernel")
    return c0, weights, [p.astype(np.int64) for p in planes]


def _is_candidate(layer):
    import larq as lq

    if not isinstance(layer, lq.layers.QuantConv2D):
        return False
    iq, kq = getattr(layer, "input_quantizer", None), getattr(layer, "kernel_quantizer", None)
    return (iq is not None and getattr(iq, "precision", None) == 1 and kq is not None
            and (getattr(kq, "precision", None) or 1) > 1)


def find_candidates(model):
    """Names of layers with binary inputs and multi-bit kernels (what :func:`rewrite` splits)."""
    return [la.name for la in model.layers if _is_candidate(la)]


def _kernel_planes(layer):
    import tensorflow as tf

    kernel = layer.kernel.numpy()
    kq = layer.kernel_quantizer
    wq = np.asarray(kq(tf.convert_to_tensor(kernel)), np.float64)
    try:
        grid = integer_grid(kq, kernel)
        q = grid.integers(wq, name=f"layer {layer.name!r} kernel")
    except ValueError as err:
        raise ConversionError(f"Layer {layer.name!r}: its multi-bit kernel has no integer grid "
                              f"to split into binary planes: {err}") from None
    zero = np.round(np.broadcast_to(grid.zero_point, wq.shape)).astype(np.int64)
    q = q - zero
    scale = np.broadcast_to(grid.scale, wq.shape).reshape(-1, wq.shape[-1])
    if not np.all(scale == scale[:1]):
        raise ConversionError(f"Layer {layer.name!r}: the kernel grid's scale varies within an "
                              "output channel; binary planes need one scale per output channel.")
    return q, scale[0].astype(np.float64), grid


def _bn_after(model, layer):
    """The BatchNormalization that is the only consumer of ``layer`` (or None)."""
    nodes = [n for n in layer._outbound_nodes if n.layer in model.layers]
    if len(nodes) != 1 or not isinstance(nodes[0].layer, keras.layers.BatchNormalization):
        return None
    bn = nodes[0].layer
    axis = bn.axis[0] if isinstance(bn.axis, (list, tuple)) else bn.axis
    return bn if axis in (-1, 3) and len(bn._inbound_nodes) == 1 else None


def _planes_block(layer, x, bn):
    """Call the plane layers on ``x``; return (output tensor, description)."""
    import larq as lq

    q, scale, grid = _kernel_planes(layer)
    c0, weights, planes = decompose(q)
    cout = q.shape[-1]
    bias = layer.bias.numpy().astype(np.float64) if layer.use_bias else np.zeros(cout)
    mult, add = np.ones(cout), np.zeros(cout)
    if bn is not None:
        gamma = bn.gamma.numpy() if bn.scale else 1.0
        beta = bn.beta.numpy() if bn.center else 0.0
        mult = gamma / np.sqrt(bn.moving_variance.numpy() + bn.epsilon)
        add = beta - bn.moving_mean.numpy() * mult
    terms = list(zip(weights, planes))
    if c0:
        terms.append((c0, np.ones_like(q)))
    outs = []
    for i, (w, plane) in enumerate(terms):
        conv = lq.layers.QuantConv2D(
            cout, layer.kernel_size, strides=layer.strides, padding=layer.padding,
            pad_values=layer.pad_values, dilation_rate=layer.dilation_rate,
            input_quantizer=layer.input_quantizer, kernel_quantizer="ste_sign", use_bias=False,
            name=f"{layer.name}_plane{i}")
        y = conv(x)
        conv.set_weights([plane.astype(np.float32)])
        post = keras.layers.BatchNormalization(epsilon=1e-3, name=f"{layer.name}_plane{i}_scale")
        y = post(y)
        m_i = scale * w * mult
        b_i = (bias * mult + add) if i == 0 else np.zeros(cout)
        post.set_weights([m_i.astype(np.float32), b_i.astype(np.float32),
                          np.zeros(cout, np.float32), np.full(cout, 1 - 1e-3, np.float32)])
        outs.append(y)
    out = outs[0] if len(outs) == 1 else keras.layers.Add(name=f"{layer.name}_planes")(outs)
    info = {"layer": layer.name, "role": "kernel", "quantizer": grid.kind,
            "trained_bits": grid.bits, "stored_bits": len(terms), "compute_bits": 1,
            "storage": f"{len(terms)} bit-packed sign plane(s)",
            "planes": len(terms), "plane_weights": [float(w) for w, _ in terms],
            "constant_plane": bool(c0), "folded_batchnorm": bn.name if bn is not None else None}
    return out, info


def rewrite(model):
    """``(model', rows)``: ``model`` with every binary-input multi-bit convolution replaced by
    its sum of binary convolutions (``rows`` describe each split layer). ``model`` is returned
    unchanged (and ``rows`` empty) when it has no such layer. The original layers' weights are
    read, not modified; the other layers are shared with ``model``."""
    names = find_candidates(model)
    if not names:
        return model, []
    if any(isinstance(la, keras.Model) for la in model.layers):
        raise ConversionError("Nested models with binary-input multi-bit layers are not split "
                              "into binary planes; flatten the model first.")
    tensors, rows = {}, []
    skip = {}
    for layer in model.layers:
        if layer.name in names:
            bn = _bn_after(model, layer)
            if bn is not None:
                skip[bn.name] = layer.name
    new_inputs = []
    for kt in model.inputs:
        inp = keras.Input(batch_shape=kt.shape, dtype=kt.dtype, name=kt.name.split(":")[0])
        tensors[str(id(kt))] = inp
        new_inputs.append(inp)
    for depth in sorted(model._nodes_by_depth, reverse=True):
        for node in model._nodes_by_depth[depth]:
            if node.is_input:
                continue
            layer = node.layer
            if layer.name in skip:            # folded into the planes: pass the planes' output on
                tensors[node.flat_output_ids[0]] = tensors[node.flat_input_ids[0]]
                continue
            ids = node.flat_input_ids
            args, kwargs = node.map_arguments({i: [tensors[i]] * ids.count(i) for i in set(ids)})
            if layer.name in names:
                bn_name = next((b for b, owner in skip.items() if owner == layer.name), None)
                bn = model.get_layer(bn_name) if bn_name else None
                out, info = _planes_block(layer, args[0], bn)
                rows.append(info)
            else:
                out = layer(*args, **kwargs)
            outs = out if isinstance(out, (list, tuple)) else [out]
            for oid, o in zip(node.flat_output_ids, outs):
                tensors[oid] = o
    outputs = [tensors[str(id(kt))] for kt in model.outputs]
    new = keras.Model(new_inputs, outputs if len(outputs) > 1 else outputs[0],
                      name=model.name + "_bitplanes")
    return new, rows
