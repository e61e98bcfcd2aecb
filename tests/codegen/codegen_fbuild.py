"""Build small ``.tflite`` flatbuffers directly (TFLite schema object API), so the op tests can
draw hundreds of random shapes and attributes without running a converter.

The files are run by the real interpreters (ai-edge-litert's reference kernels, LCE's
interpreter), which validate them; a malformed file fails there, not silently.
"""

import flatbuffers
import numpy as np
from flatbuffers import flexbuffers

from ai_edge_litert import schema_py_generated as S

TYPES = {"float32": S.TensorType.FLOAT32, "int8": S.TensorType.INT8, "int32": S.TensorType.INT32,
         "float16": S.TensorType.FLOAT16}
ACT = {"NONE": 0, "RELU": 1, "RELU_N1_TO_1": 2, "RELU6": 3}
PAD = {"SAME": 0, "VALID": 1}


class Builder:
    """Tensors, operators and buffers of one subgraph; :meth:`finish` returns the bytes."""

    def __init__(self):
        self.tensors, self.ops, self.codes = [], [], []
        self.buffers = [S.BufferT()]

    def tensor(self, shape, dtype, data=None, scale=None, zero_point=None, qdim=0, name=None):
        t = S.TensorT()
        t.shape = np.asarray(shape, np.int32)
        t.type = TYPES[dtype]
        t.name = name or f"t{len(self.tensors)}"
        if data is not None:
            b = S.BufferT()
            b.data = np.frombuffer(np.ascontiguousarray(np.asarray(data, dtype)).tobytes(), np.uint8)
            self.buffers.append(b)
            t.buffer = len(self.buffers) - 1
        else:
            t.buffer = 0
        if scale is not None:
            q = S.QuantizationParametersT()
            q.scale = np.asarray(scale, np.float32).reshape(-1)
            zp = np.zeros(q.scale.size, np.int64) if zero_point is None else zero_point
            q.zeroPoint = np.asarray(zp, np.int64).reshape(-1)
            q.quantizedDimension = qdim
            t.quantization = q
        self.tensors.append(t)
        return len(self.tensors) - 1

    def _code(self, builtin=None, custom=None):
        key = (builtin, custom)
        for i, c in enumerate(self.codes):
            if c[0] == key:
                return i
        oc = S.OperatorCodeT()
        if custom is not None:
            oc.builtinCode = S.BuiltinOperator.CUSTOM
            oc.deprecatedBuiltinCode = S.BuiltinOperator.CUSTOM
            oc.customCode = custom
        else:
            code = getattr(S.BuiltinOperator, builtin)
            oc.builtinCode = code
            oc.deprecatedBuiltinCode = min(code, 127)
        oc.version = 1
        self.codes.append((key, oc))
        return len(self.codes) - 1

    def op(self, name, inputs, outputs, options=None, options_type=None, version=1):
        """A builtin op; ``options`` an ``*OptionsT`` instance (its union type inferred)."""
        o = S.OperatorT()
        o.opcodeIndex = self._code(builtin=name)
        self.codes[o.opcodeIndex][1].version = version
        o.inputs = np.asarray(inputs, np.int32)
        o.outputs = np.asarray(outputs, np.int32)
        if options is not None:
            tname = options_type or type(options).__name__[:-1]  # Conv2DOptionsT -> Conv2DOptions
            o.builtinOptionsType = getattr(S.BuiltinOptions, tname)
            o.builtinOptions = options
        self.ops.append(o)

    def custom(self, name, inputs, outputs, options=None):
        o = S.OperatorT()
        o.opcodeIndex = self._code(custom=name)
        o.inputs = np.asarray(inputs, np.int32)
        o.outputs = np.asarray(outputs, np.int32)
        if options:
            o.customOptions = np.frombuffer(bytes(flexbuffers.Dumps(options)), np.uint8)
        o.customOptionsFormat = S.CustomOptionsFormat.FLEXBUFFERS
        self.ops.append(o)

    def finish(self, inputs, outputs):
        g = S.SubGraphT()
        g.tensors = self.tensors
        g.operators = self.ops
        g.inputs = np.asarray(inputs, np.int32)
        g.outputs = np.asarray(outputs, np.int32)
        g.name = "main"
        m = S.ModelT()
        m.version = 3
        m.operatorCodes = [c for _, c in self.codes]
        m.subgraphs = [g]
        m.buffers = self.buffers
        m.description = "tfcompress codegen test"
        b = flatbuffers.Builder(1024)
        b.Finish(m.Pack(b), file_identifier=b"TFL3")
        return bytes(b.Output())


def options(cls, **fields):
    """``options("Conv2DOptions", padding=0, ...)``: an ``*OptionsT`` with the given fields."""
    o = getattr(S, cls + "T")()
    for k, v in fields.items():
        if not hasattr(o, k):
            raise AttributeError(f"{cls} has no field {k}")
        setattr(o, k, v)
    return o
