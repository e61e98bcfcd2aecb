"""Lowered operators ("steps") and the C-emission context shared by the op emitters.

A :class:`Step` is one kernel call: the tensors it reads and writes, the C declarations it needs
(constant arrays, a parameter struct) and a function that writes the call for given buffers.
Steps that work row by row (convolutions, pooling, element-wise ops, bit-packing) also carry
their vertical geometry so the planner can stream rows through a chain of them.
"""

from dataclasses import dataclass, field

import numpy as np

from tfcompress.codegen.graph import PADDINGS, CodegenError

CTYPES = {"float32": "float", "int8": "int8_t", "int32": "int32_t", "uint32": "uint32_t",
          "int16": "int16_t", "uint8": "uint8_t"}


@dataclass
class RowGeom:
    """Vertical geometry of a row-wise step: output row ``y`` reads input rows
    ``[y*stride - pad, y*stride - pad + (k-1)*dil]`` clipped to ``[0, in_h)``."""

    k: int = 1
    stride: int = 1
    dil: int = 1
    pad: int = 0
    in_h: int = 1
    out_h: int = 1

    def input_rows(self, lo, hi):
        a = max(0, lo * self.stride - self.pad)
        b = min(self.in_h, (hi - 1) * self.stride - self.pad + (self.k - 1) * self.dil + 1)
        return a, b

    @property
    def overlapping(self):
        """True when consecutive output rows share input rows (streaming would recompute)."""
        return self.stride < (self.k - 1) * self.dil + 1


@dataclass
class Step:
    """One kernel call.

    Attributes:
        label: a comment for the generated code (op and node).
        node: the graph node (``None`` for synthetic steps).
        ins, outs: activation tensor indices read / written.
        decls: C declarations (file scope) this call needs.
        emit: ``emit(bufs, rows, scratch) -> list of C lines``; ``bufs`` maps tensor index to a
            C pointer expression; ``rows`` is ``None`` (whole tensors) or
            ``(oy0, oy1, in_row0, out_row0)``; ``scratch`` a C pointer expression or ``None``.
        rows: :class:`RowGeom` when the step can compute a band of output rows.
        row_bytes_in/out: bytes of one row of the (first) input / output (row-wise steps).
        elementwise: output row ``y`` depends on input row ``y`` only.
        scratch: bytes of temporary arena memory the call needs.
        inplace: the output may share the buffer of input 0 (element ``i`` is read before any
            write at or after it).
        alias: the output is the input's memory (no code; RESHAPE).
        kernels: kernel source groups used (``float``, ``int8``, ``binary``).
        row_decls / full_decls: declarations needed only when the step runs on row bands /
            on whole tensors.
    """

    label: str
    node: object
    ins: list
    outs: list
    decls: list = field(default_factory=list)
    emit: object = None
    rows: RowGeom = None
    row_bytes_in: int = 0
    row_bytes_out: int = 0
    elementwise: bool = False
    scratch: int = 0
    inplace: bool = False
    alias: bool = False
    kernels: set = field(default_factory=set)
    row_decls: list = field(default_factory=list)
    full_decls: list = field(default_factory=list)


class Context:
    """Unique C identifiers and constant arrays (deduplicated per tensor) for one model."""

    def __init__(self, graph, prefix, *, cmsis=True):
        self.graph = graph
        self.prefix = prefix
        self.cmsis = bool(cmsis)
        self._names = set()
        self._consts = {}
        self.const_bytes = 0

    def ident(self, base):
        base = "".join(ch if ch.isalnum() else "_" for ch in base)
        name = f"{self.prefix}_{base}"
        i = 1
        while name in self._names:
            i += 1
            name = f"{self.prefix}_{base}_{i}"
        self._names.add(name)
        return name

    def const_array(self, values, ctype, key=None, base="w"):
        """Declare ``static const ctype name[] = {...}`` once; return ``(name, decl or None)``."""
        if key is not None and key in self._consts:
            return self._consts[key], None
        name = self.ident(base)
        decl = f"static const {ctype} {name}[{max(1, np.asarray(values).size)}] = {{\n{format_values(values, ctype)}\n}};"
        arr = np.asarray(values)
        self.const_bytes += arr.size * {"float": 4, "int32_t": 4, "uint32_t": 4, "int8_t": 1,
                                        "int16_t": 2, "uint8_t": 1}[ctype]
        if key is not None:
            self._consts[key] = name
        return name, decl


def c_float(v):
    v = float(np.float32(v))
    if not np.isfinite(v):
        raise CodegenError(f"Non-finite float constant {v} cannot be written as C.")
    s = "%.9g" % v
    if not any(ch in s for ch in ".en"):
        s += ".0"
    return s + "f"


def format_values(values, ctype, per_line=16):
    arr = np.asarray(values).reshape(-1)
    if arr.size == 0:
        arr = np.zeros(1, dtype=arr.dtype if arr.dtype != object else np.int64)
    if ctype == "float":
        f = arr.astype(np.float32)
        if not np.isfinite(f).all():
            raise CodegenError("Non-finite float constant cannot be written as C.")
        toks = np.char.mod("%.9g", f.astype(np.float64))
        plain = np.char.find(toks, ".") < 0
        plain &= np.char.find(toks, "e") < 0
        toks = np.where(plain, np.char.add(toks, ".0"), toks)
        toks = np.char.add(toks, "f").tolist()
    elif ctype == "uint32_t":
        toks = ["0x%08xu" % v for v in arr.astype(np.uint32).tolist()]
    elif ctype == "int32_t":
        toks = [("(-2147483647 - 1)" if v == -(1 << 31) else str(v)) for v in arr.astype(np.int64).tolist()]
    else:
        toks = list(map(str, arr.astype(np.int64).tolist()))
    lines = [", ".join(toks[i:i + per_line]) for i in range(0, len(toks), per_line)]
    return "  " + ",\n  ".join(lines)


def geom_init(g):
    """C initializer of a ``tfc_geom_t`` from a dict."""
    keys = ("in_h", "in_w", "in_c", "out_h", "out_w", "out_c", "k_h", "k_w", "stride_h",
            "stride_w", "dil_h", "dil_w", "pad_t", "pad_l")
    return "{" + ", ".join(str(int(g[k])) for k in keys) + "}"


def compute_padding(padding, in_size, k, stride, dil):
    """TFLite ``ComputeOutSize`` + ``ComputePaddingWithOffset``: ``(out_size, pad_before)``."""
    eff = (k - 1) * dil + 1
    if padding == "SAME":
        out = (in_size + stride - 1) // stride
    elif padding == "VALID":
        out = (in_size + stride - eff) // stride
    else:
        raise CodegenError(f"Unknown padding {padding!r}.")
    total = max((out - 1) * stride + eff - in_size, 0)
    return out, total // 2


def spatial_geom(node, in_shape, out_shape, k_h, k_w, stride_h, stride_w, dil_h, dil_w, padding):
    """Geometry dict for an NHWC op, checking the output shape the converter recorded."""
    if len(in_shape) != 4 or len(out_shape) != 4:
        raise CodegenError(f"{node.describe()}: expected 4-D NHWC tensors, got {in_shape} -> {out_shape}.")
    if in_shape[0] != 1:
        raise CodegenError(f"{node.describe()}: batch size {in_shape[0]}; generated C runs batch 1.")
    pad = PADDINGS.get(padding, padding) if isinstance(padding, int) else padding
    oh, pt = compute_padding(pad, in_shape[1], k_h, stride_h, dil_h)
    ow, pl = compute_padding(pad, in_shape[2], k_w, stride_w, dil_w)
    if (oh, ow) != tuple(out_shape[1:3]):
        raise CodegenError(f"{node.describe()}: output {out_shape[1:3]} does not match "
                           f"{pad} padding of {in_shape[1:3]} (expected {(oh, ow)}).")
    return {"in_h": in_shape[1], "in_w": in_shape[2], "in_c": in_shape[3], "out_h": oh,
            "out_w": ow, "out_c": out_shape[3], "k_h": k_h, "k_w": k_w, "stride_h": stride_h,
            "stride_w": stride_w, "dil_h": dil_h, "dil_w": dil_w, "pad_t": pt, "pad_l": pl}


def row_geom(g):
    return RowGeom(k=g["k_h"], stride=g["stride_h"], dil=g["dil_h"], pad=g["pad_t"],
                   in_h=g["in_h"], out_h=g["out_h"])


def rows_args(rows, out_h):
    """C argument text ``oy0, oy1, in_row0, out_row0``."""
    if rows is None:
        return f"0, {out_h}, 0, 0"
    return ", ".join(str(r) for r in rows)


__all__ = ["CTYPES", "Context", "RowGeom", "Step", "c_float", "compute_padding", "format_values",
           "geom_init", "row_geom", "rows_args", "spatial_geom"]
