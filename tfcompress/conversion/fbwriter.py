"""A small TFLite flatbuffer writer: tensors, constant buffers, builtin operators.

Used by the exact-grid exporter (:mod:`tfcompress.conversion.lowbit`), which chooses every
scale, zero point and integer itself instead of letting the TFLite converter calibrate them.
It writes the LiteRT schema with the object API that ships with ai-edge-litert
(``schema_py_generated``), so what it writes is what LiteRT and TFLite Micro read.

Operator versions are the ones TensorFlow's converter writes for the same int8 operators
(checked against TF 2.21's output); runtimes resolve an operator by ``(code, version)``, and
every version here is registered by ai-edge-litert 2.3 and accepted by tflite-micro, which
ignores versions.
"""

import flatbuffers
import numpy as np

from tfcompress.errors import ConversionError

# TensorFlow 2.21's converter writes these versions for int8 graphs.
OP_VERSIONS = {
    "CONV_2D": 3, "DEPTHWISE_CONV_2D": 3, "FULLY_CONNECTED": 4, "MAX_POOL_2D": 2,
    "AVERAGE_POOL_2D": 2, "RESHAPE": 1, "ADD": 2, "SOFTMAX": 2, "MEAN": 2, "QUANTIZE": 1,
    "DEQUANTIZE": 2, "PAD": 2, "PADV2": 2, "MAXIMUM": 2, "MINIMUM": 2, "MUL": 2,
}

ACTIVATIONS = {"NONE": 0, "RELU": 1, "RELU_N1_TO_1": 2, "RELU6": 3}

_NP_TYPES = {"float32": np.float32, "int32": np.int32, "int8": np.int8, "uint8": np.uint8,
             "int16": np.int16, "int64": np.int64}


def _schema():
    from ai_edge_litert import schema_py_generated as schema

    return schema


class GraphBuilder:
    """Accumulates one subgraph and writes the model.

    >>> g = GraphBuilder()
    >>> x = g.tensor("x", (1, 4), "float32"); y = g.tensor("y", (1, 4), "float32")
    >>> _ = g.op("RELU", [x], [y]); g.inputs, g.outputs = [x], [y]
    >>> len(g.finish()) > 0
    True
    """

    def __init__(self):
        self.schema = _schema()
        self._tensors = []
        self._buffers = [self.schema.BufferT()]      # buffer 0: the empty sentinel
        self._ops = []
        self._codes = {}
        self.inputs = []
        self.outputs = []

    # ------------------------------------------------------------------------- tensors
    def tensor(self, name, shape, dtype, *, scale=None, zero_point=None, axis=0, data=None):
        """Add a tensor; return its index.

        Args:
            name: tensor name (unique names help debugging; not required by runtimes).
            shape: the logical shape (for packed INT4/INT2 tensors too).
            dtype: ``float32``, ``int32``, ``int8``, ``uint8``, ``int16``, ``int64``,
                ``int4`` or ``int2``.
            scale, zero_point: per-tensor scalars or per-channel sequences (with ``axis``).
            data: constant contents: an array of ``dtype`` (cast), or ``bytes`` stored as
                they are (packed sub-byte tensors).
        """
        s = self.schema
        t = s.TensorT()
        t.name = name.encode() if isinstance(name, str) else name
        t.shape = np.asarray(shape, np.int32)
        t.type = getattr(s.TensorType, dtype.upper())
        if scale is not None:
            q = s.QuantizationParametersT()
            q.scale = [float(v) for v in np.atleast_1d(np.asarray(scale, np.float64))]
            zp = np.atleast_1d(np.asarray(0 if zero_point is None else zero_point, np.int64))
            if zp.size == 1 and len(q.scale) > 1:
                zp = np.zeros(len(q.scale), np.int64) + zp[0]
            bounds = {"int8": (-128, 127), "uint8": (0, 255), "int16": (0, 0)}.get(dtype)
            if bounds and not ((zp >= bounds[0]) & (zp <= bounds[1])).all():
                raise ConversionError(
                    f"Tensor {name!r}: zero point {int(zp[(zp < bounds[0]) | (zp > bounds[1])][0])} "
                    f"is outside {dtype}'s {list(bounds)}: its grid (scale and zero point, for "
                    "example an LSQ+ offset of several steps) does not fit the container, so "
                    "the file would be invalid. Retrain with a smaller offset or a narrower "
                    "grid, or use target='float32'.")
            q.zeroPoint = [int(v) for v in zp]
            q.quantizedDimension = int(axis)
            t.quantization = q
        if data is not None:
            b = s.BufferT()
            if isinstance(data, (bytes, bytearray)):
                raw = bytes(data)
            else:
                raw = np.ascontiguousarray(np.asarray(data).astype(_NP_TYPES[dtype])).tobytes()
            b.data = np.frombuffer(raw, np.uint8).copy()
            self._buffers.append(b)
            t.buffer = len(self._buffers) - 1
        else:
            t.buffer = 0
        self._tensors.append(t)
        return len(self._tensors) - 1

    def shape(self, index):
        return tuple(int(d) for d in self._tensors[index].shape)

    # ----------------------------------------------------------------------- operators
    def _opcode(self, name, version):
        key = (name, version)
        if key not in self._codes:
            oc = self.schema.OperatorCodeT()
            code = getattr(self.schema.BuiltinOperator, name)
            oc.builtinCode = code
            oc.deprecatedBuiltinCode = min(code, 127)
            oc.version = version
            self._codes[key] = (len(self._codes), oc)
        return self._codes[key][0]

    def op(self, name, inputs, outputs, options=None, *, version=None):
        """Add builtin operator ``name`` (e.g. ``"CONV_2D"``); ``options`` is a schema
        ``*OptionsT`` object (its type is set from its class name). Returns the op index."""
        s = self.schema
        o = s.OperatorT()
        o.opcodeIndex = self._opcode(name, version or OP_VERSIONS.get(name, 1))
        o.inputs = np.asarray(inputs, np.int32)
        o.outputs = np.asarray(outputs, np.int32)
        if options is not None:
            kind = type(options).__name__[:-1]       # Conv2DOptionsT -> Conv2DOptions
            o.builtinOptionsType = getattr(s.BuiltinOptions, kind)
            o.builtinOptions = options
        self._ops.append(o)
        return len(self._ops) - 1

    def options(self, kind, **fields):
        """A schema options object, e.g. ``options("Conv2DOptions", padding=0, strideW=1)``."""
        obj = getattr(self.schema, kind + "T")()
        for k, v in fields.items():
            if not hasattr(obj, k):
                raise AttributeError(f"{kind} has no field {k!r}")
            setattr(obj, k, v)
        return obj

    # -------------------------------------------------------------------------- output
    def finish(self, description="tfcompress exact-grid exporter"):
        """Serialize to flatbuffer bytes (file identifier ``TFL3``)."""
        s = self.schema
        g = s.SubGraphT()
        g.tensors = self._tensors
        g.operators = self._ops
        g.inputs = np.asarray(self.inputs, np.int32)
        g.outputs = np.asarray(self.outputs, np.int32)
        g.name = b"main"
        m = s.ModelT()
        m.version = 3
        m.description = description.encode()
        m.subgraphs = [g]
        m.operatorCodes = [oc for _, oc in sorted(self._codes.values(), key=lambda t: t[0])]
        m.buffers = self._buffers
        builder = flatbuffers.Builder(1024)
        builder.Finish(m.Pack(builder), file_identifier=b"TFL3")
        return bytes(builder.Output())


def read_model(flatbuffer):
    """The mutable object tree (``ModelT``) of a flatbuffer, for tests and post-processing."""
    return _schema().ModelT.InitFromPackedBuf(bytearray(flatbuffer), 0)


__all__ = ["ACTIVATIONS", "GraphBuilder", "OP_VERSIONS", "read_model"]
