"""``summary(model)``: what each layer of a (compressed) Keras model costs.

Per layer: parameters, the bit width of its weights, memory at that bit width, multiply-
accumulates (MACs) and how many of them are binary operations (BOPs), and kernel sparsity.

Definitions (one example, batch 1):

- **Parameters**: trainable + non-trainable weights, as Keras counts them
  (``layer.count_params()``; BatchNormalization counts beta, gamma, moving mean and variance).
- **Bits**: the ``precision`` of the quantizer of each kernel (``kernel``, ``depthwise_kernel``,
  ``pointwise_kernel``; see :func:`tfcompress.inspection.layer_precisions`), 32 for an
  unquantized kernel. Every other parameter (bias, BatchNormalization statistics, embeddings)
  is stored as 32-bit float.
- **Memory**: ``sum(kernel_size * kernel_bits) / 8 + other_params * 4`` bytes, so a binary
  kernel of ``n`` weights takes ``n / 8`` bytes. The float32 reference is ``params * 4`` bytes
  and ``float32_ratio = float32_bytes / memory_bytes`` (how many times smaller the model is).
- **MACs** (for Dense, Conv1D/2D/3D, DepthwiseConv, SeparableConv, transposed convolutions
  and the larq ``Quant*`` layers that subclass them): ``kernel.size * positions``, where
  ``positions`` is the number of output spatial positions (input positions for a transposed
  convolution; the product of the inner axes for a Dense layer applied to a sequence, 1 for a
  plain Dense layer). A SeparableConv counts ``(depthwise.size + pointwise.size) * positions``.
  This is the convention of larq's ``larq.models.summary``.
- **BOPs**: MACs whose two operands are both 1-bit, i.e. of a kernel with a 1-bit quantizer
  applied to a 1-bit ``input_quantizer`` (XNOR-popcount in Larq Compute Engine, Rastegari et
  al., 2016, arXiv:1603.05279). The pointwise half of a SeparableConv multiplies the
  (integer-valued) depthwise output, so it is never counted as BOPs.
- **Sparsity**: share of kernel weights that are exactly zero (latent, stored values).

A wrapper layer (a TF-MOT pruning wrapper, ``TimeDistributed``) is reported with the kernels,
quantizers and MACs of the layer it wraps and its own parameter count, so a pruning wrapper's
mask and threshold count as 32-bit parameters until the wrappers are stripped.

Example:

>>> from tfcompress import keras
>>> m = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, use_bias=False)])
>>> s = summary(m)
>>> s.rows[0]["macs"], s.totals["params"], s.totals["memory_bytes"]
(1296, 36, 144.0)
"""

import json
from dataclasses import dataclass, field

import numpy as np

from tfcompress._keras import keras
from tfcompress.inspection import iter_layers, layer_precisions

# Weight attribute -> the role name tfcompress.inspection.layer_precisions reports for it.
KERNEL_ROLES = ("kernel", "depthwise_kernel", "pointwise_kernel")

_TRANSPOSED = (keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose,
               keras.layers.Conv3DTranspose)
_CONVOLUTIONS = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D,
                 keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D,
                 keras.layers.SeparableConv1D, keras.layers.SeparableConv2D) + _TRANSPOSED
MAC_LAYERS = _CONVOLUTIONS + (keras.layers.Dense,)

# Columns of the text table: (row key, header, formatter of the row).
_TEXT_COLUMNS = (
    ("name", "Layer", lambda r: r["name"]),
    ("type", "Type", lambda r: r["type"]),
    ("output_shape", "Output shape", lambda r: _shape_str(r["output_shape"])),
    ("params", "Params", lambda r: f"{r['params']:,}"),
    # Kernels of different widths (a SeparableConv's depthwise/pointwise) show as "1/32".
    ("bits", "Bits", lambda r: "/".join(dict.fromkeys(str(b) for b in r["weight_bits"].values()))
     or str(r["bits"])),
    ("input_bits", "In bits", lambda r: str(r["input_bits"])),
    ("memory_bytes", "Memory (B)", lambda r: _bytes_str(r["memory_bytes"])),
    ("macs", "MACs", lambda r: f"{r['macs']:,}"),
    ("bops", "BOPs", lambda r: f"{r['bops']:,}"),
    ("sparsity", "Sparsity", lambda r: f"{r['sparsity']:.1%}"),
)


def _shape_str(shape):
    if shape is None:
        return "?"
    if shape and isinstance(shape[0], (list, tuple)):
        return ", ".join(_shape_str(s) for s in shape)
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ")"


def _bytes_str(value):
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.1f}"


@dataclass
class ModelSummary:
    """The result of :func:`summary`.

    Attributes:
        name: the model's name.
        rows: one dict per layer (keys: ``name``, ``type``, ``output_shape``, ``params``,
            ``trainable_params``, ``non_trainable_params``, ``bits``, ``weight_bits``,
            ``input_bits``, ``memory_bytes``, ``float32_memory_bytes``, ``macs``, ``bops``,
            ``nonbinary_macs``, ``kernel_params``, ``zero_kernel_weights``, ``sparsity``);
            ``None`` where a value does not apply (no MACs for a pooling layer, no bits for a
            layer without weights) or is unknown (MACs of a layer with an undefined output size).
        totals: sums over the rows plus ``float32_ratio`` (float32 bytes / memory bytes),
            ``bops_share`` (BOPs / MACs) and the overall kernel ``sparsity``.
    """

    name: str
    rows: list = field(default_factory=list)
    totals: dict = field(default_factory=dict)

    def to_dict(self):
        return {"model": self.name, "rows": [dict(r) for r in self.rows],
                "totals": dict(self.totals)}

    def to_json(self, indent=2):
        return json.dumps(self.to_dict(), indent=indent)

    def to_text(self):
        """An aligned text table, a totals line and a line comparing with float32."""
        header = [c[1] for c in _TEXT_COLUMNS]
        body = [[("-" if r.get(key) is None else fmt(r)) for key, _, fmt in _TEXT_COLUMNS]
                for r in self.rows]
        t = self.totals
        total = ["Total", "", "", f"{t['params']:,}", "", "", _bytes_str(t["memory_bytes"]),
                 f"{t['macs']:,}", f"{t['bops']:,}",
                 "-" if t["sparsity"] is None else f"{t['sparsity']:.1%}"]
        widths = [max(len(line[i]) for line in [header, total] + body) for i in range(len(header))]

        def fmt_line(cells):
            # Text columns (name, type, shape) left-aligned; numbers right-aligned.
            return "  ".join(c.ljust(w) if i < 3 else c.rjust(w)
                             for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

        rule = "-" * len(fmt_line(header))
        lines = [f"Model: {self.name}", rule, fmt_line(header), rule]
        lines += [fmt_line(cells) for cells in body]
        lines += [rule, fmt_line(total), rule]
        lines.append(
            f"Memory {t['memory_bytes'] / 1024:,.2f} KiB vs {t['float32_memory_bytes'] / 1024:,.2f}"
            f" KiB at float32 ({t['float32_ratio']:.2f}x smaller); "
            f"MACs {t['macs']:,}, of which BOPs {t['bops']:,} ({t['bops_share']:.1%})"
        )
        return "\n".join(lines)

    def __str__(self):
        return self.to_text()

    def plot(self, path, *, title=None):
        """Write a PNG bar chart of memory per layer (layers with weights), coloured by bits.

        Uses matplotlib's Agg canvas directly, so no GUI backend or global state is touched.
        Returns the path.
        """
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.patches import Patch

        rows = [r for r in self.rows if r["params"]]
        if not rows:
            raise ValueError(f"Model {self.name!r} has no weights; there is no memory to plot.")
        bits = sorted({r["bits"] for r in rows})
        palette = ["#d62728", "#ff7f0e", "#bcbd22", "#2ca02c", "#17becf", "#1f77b4", "#9467bd"]
        colour = {b: palette[min(i, len(palette) - 1)] for i, b in enumerate(bits)}
        fig = Figure(figsize=(max(6.0, 0.5 * len(rows) + 2), 4.5))
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        ax.bar(range(len(rows)), [r["memory_bytes"] / 1024 for r in rows],
               color=[colour[r["bits"]] for r in rows])
        ax.set_xticks(range(len(rows)))
        ax.set_xticklabels([r["name"] for r in rows], rotation=60, ha="right", fontsize=8)
        ax.set_ylabel("memory (KiB)")
        ax.set_title(title or f"{self.name}: {self.totals['memory_bytes'] / 1024:,.1f} KiB "
                     f"({self.totals['float32_ratio']:.1f}x smaller than float32)")
        ax.legend(handles=[Patch(color=colour[b], label=f"{b}-bit weights") for b in bits])
        fig.tight_layout()
        fig.savefig(path, format="png", dpi=100)
        return path


def _check_model(model):
    if not isinstance(model, keras.Model):
        kind = type(model).__module__ + "." + type(model).__name__
        hint = (" It looks like a Keras 3 model; build it with tf_keras "
                "(`from tfcompress import keras`)."
                if type(model).__module__.startswith("keras") else "")
        raise TypeError(f"summary() expects a tf_keras Model, got {kind}.{hint}")
    if not model.built:
        raise ValueError(
            f"Model {model.name!r} is not built, so its weights do not exist yet; start it "
            "with keras.Input(...), call model.build(input_shape) or call it on data first."
        )


def _output_shape(layer, attr="output_shape"):
    """The layer's (input or) output shape, or ``None`` when Keras does not know a single one
    (a layer never called symbolically, or shared by several calls)."""
    try:
        shape = getattr(layer, attr)
    except (AttributeError, RuntimeError):
        return None
    if isinstance(shape, list):
        shape = shape[0] if len(shape) == 1 else [tuple(s) for s in shape]
    return tuple(shape) if shape and not isinstance(shape[0], tuple) else shape


def _positions(layer, core):
    """How many times a kernel is applied for one example (``None`` if unknown)."""
    transposed = isinstance(core, _TRANSPOSED)
    shape = _output_shape(layer, "input_shape" if transposed else "output_shape")
    if shape is None or (shape and isinstance(shape[0], tuple)):
        return None
    if isinstance(core, keras.layers.Dense):
        inner = shape[1:-1]
    elif getattr(core, "data_format", "channels_last") == "channels_first":
        inner = shape[2:]
    else:
        inner = shape[1:-1]
    if any(d is None for d in inner):
        return None
    return int(np.prod(inner, dtype=np.int64))


def _kernels(core):
    """``[(role, variable)]`` of the core layer's kernels."""
    return [(role, getattr(core, role)) for role in KERNEL_ROLES
            if getattr(core, role, None) is not None]


def _core(layer):
    while isinstance(layer, keras.layers.Wrapper):
        layer = layer.layer
    return layer


def _layer_row(layer):
    # A wrapper (TF-MOT pruning, TimeDistributed, ...) keeps the wrapped layer's kernels and
    # quantizers; its own output shape and parameter count are used.
    core = _core(layer)
    try:
        precisions = layer_precisions(core)
    except ValueError as err:
        raise ValueError(f"Layer {layer.name!r}: {err}") from err
    kernels = _kernels(core)
    params = int(layer.count_params())
    trainable = int(sum(int(np.prod(w.shape)) for w in layer.trainable_weights))
    weight_bits = {role: precisions.get(role, 32) for role, _ in kernels}
    kernel_sizes = {role: int(np.prod(v.shape)) for role, v in kernels}
    kernel_params = sum(kernel_sizes.values())
    memory_bits = (sum(kernel_sizes[r] * weight_bits[r] for r in kernel_sizes)
                   + (params - kernel_params) * 32)
    zeros = sum(int(np.count_nonzero(np.asarray(v.numpy()) == 0)) for _, v in kernels)
    input_bits = precisions.get("input", 32)

    macs = bops = None
    if isinstance(core, MAC_LAYERS) and kernels:
        positions = _positions(layer, core)
        if positions is not None:
            macs = bops = 0
            for role, size in kernel_sizes.items():
                n = size * positions
                macs += n
                if role != "pointwise_kernel" and input_bits == 1 and weight_bits[role] == 1:
                    bops += n

    bits = None
    if weight_bits:
        bits = max(weight_bits.values())
    elif params:
        bits = 32
    type_name = type(layer).__name__
    if core is not layer:
        type_name += f"({type(core).__name__})"
    return {
        "name": layer.name, "type": type_name, "output_shape": _output_shape(layer),
        "params": params, "trainable_params": trainable, "non_trainable_params": params - trainable,
        "bits": bits, "weight_bits": weight_bits,
        "input_bits": input_bits if kernels else None,
        "memory_bytes": memory_bits / 8, "float32_memory_bytes": params * 4.0,
        "macs": macs, "bops": bops, "nonbinary_macs": None if macs is None else macs - bops,
        "kernel_params": kernel_params, "zero_kernel_weights": zeros,
        "sparsity": zeros / kernel_params if kernel_params else None,
    }


def summary(model):
    """Per-layer parameters, bits, memory, MACs/BOPs and sparsity of a built tf_keras model.

    Nested models are expanded into their layers (a layer reached twice through a shared
    sub-model is listed once); input layers are left out. See the module docstring for the
    definitions.

    Args:
        model: a built tf_keras ``Model`` (larq and tfcompress quantized layers included).

    Returns:
        :class:`ModelSummary` with ``rows``, ``totals``, ``to_text()``, ``to_json()``,
        ``to_dict()`` and ``plot(path)``.

    Raises:
        TypeError: ``model`` is not a tf_keras Model (e.g. a Keras 3 model).
        ValueError: the model is not built, or a quantizer does not declare its bit width.
    """
    _check_model(model)
    rows, unknown, seen = [], [], set()
    for layer in iter_layers(model):
        if id(layer) in seen or isinstance(layer, keras.layers.InputLayer):
            continue
        seen.add(id(layer))
        row = _layer_row(layer)
        if row["macs"] is None and isinstance(_core(layer), MAC_LAYERS):
            unknown.append(row["name"])
        rows.append(row)

    def total(key):
        return sum(r[key] or 0 for r in rows)

    memory, float32 = total("memory_bytes"), total("float32_memory_bytes")
    macs, bops, kernel_params = total("macs"), total("bops"), total("kernel_params")
    totals = {
        "layers": len(rows), "params": total("params"),
        "trainable_params": total("trainable_params"),
        "non_trainable_params": total("non_trainable_params"),
        "memory_bytes": memory, "float32_memory_bytes": float32,
        "float32_ratio": float32 / memory if memory else 1.0,
        "macs": macs, "bops": bops, "nonbinary_macs": macs - bops,
        "bops_share": bops / macs if macs else 0.0,
        "kernel_params": kernel_params, "zero_kernel_weights": total("zero_kernel_weights"),
        "sparsity": total("zero_kernel_weights") / kernel_params if kernel_params else None,
        # MAC layers whose output size Keras does not know (so their MACs are not counted).
        "unknown_macs_layers": unknown,
    }
    return ModelSummary(name=model.name, rows=rows, totals=totals)


__all__ = ["MAC_LAYERS", "ModelSummary", "summary"]
