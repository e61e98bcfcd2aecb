"""Read a TFLite flatbuffer without running it: validity, operators, tensors.

Uses the schema module that ships with ai-edge-litert (the LiteRT schema), so no TensorFlow
import is needed.
"""

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from tfcompress.errors import InterpreterError

_TYPES = {0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 6: "bool",
          7: "int16", 9: "int8", 10: "float64"}


def _schema():
    from ai_edge_litert import schema_py_generated as schema

    return schema


def _builtin_names():
    schema = _schema()
    return {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}


@dataclass
class FlatbufferInfo:
    """What a ``.tflite`` file holds: operators and its input/output tensors."""

    size: int
    ops: list = field(default_factory=list)          # one entry per operator, in graph order
    custom_ops: list = field(default_factory=list)   # sorted unique custom op names
    inputs: list = field(default_factory=list)       # dicts: name, shape, dtype, scale, zero_point
    outputs: list = field(default_factory=list)
    operators: list = field(default_factory=list)    # dicts: op, inputs, outputs, fused_activation
    variable_tensors: list = field(default_factory=list)  # names of state tensors (fused LSTM)

    @property
    def op_counts(self):
        return dict(Counter(self.ops))

    @property
    def builtin_ops(self):
        return sorted(set(self.ops) - set(self.custom_ops))


_ACTIVATIONS = {0: "NONE", 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6", 4: "TANH",
                5: "SIGN_BIT", 6: "SIGN_BIT"}


def _fused_activation(op, schema):
    """The fused activation of ops whose options carry one (conv, pool, add, concat...)."""
    table = op.BuiltinOptions()
    if table is None:
        return None
    for cls in ("Conv2DOptions", "DepthwiseConv2DOptions", "Pool2DOptions", "AddOptions",
                "MulOptions", "SubOptions", "ConcatenationOptions", "FullyConnectedOptions"):
        if op.BuiltinOptionsType() == getattr(schema.BuiltinOptions, cls, -1):
            opts = getattr(schema, cls)()
            opts.Init(table.Bytes, table.Pos)
            return _ACTIVATIONS.get(opts.FusedActivationFunction(), "OTHER")
    return None


def _tensor_info(tensor):
    q = tensor.Quantization()
    scale = zero_point = None
    if q is not None and q.ScaleLength() > 0:
        scales = q.ScaleAsNumpy()
        zps = q.ZeroPointAsNumpy()
        scale = float(scales[0]) if len(scales) == 1 else [float(s) for s in scales]
        zero_point = int(zps[0]) if len(zps) == 1 else [int(z) for z in zps]
    name = tensor.Name()
    return {
        "name": name.decode() if isinstance(name, bytes) else name,
        "shape": tuple(int(d) for d in tensor.ShapeAsNumpy()) if tensor.ShapeLength() else (),
        "dtype": _TYPES.get(tensor.Type(), f"type{tensor.Type()}"),
        "scale": scale,
        "zero_point": zero_point,
    }


def inspect_flatbuffer(model):
    """Parse ``model`` (bytes) and return a :class:`FlatbufferInfo`.

    Raises:
        InterpreterError: the bytes are not a TFLite flatbuffer (too short, wrong file
            identifier, truncated or corrupt tables).
    """
    if isinstance(model, (bytearray, memoryview)):
        model = bytes(model)
    if not isinstance(model, bytes):
        raise TypeError(f"Expected the flatbuffer as bytes, got {type(model).__name__}.")
    if len(model) < 8 or model[4:8] != b"TFL3":
        raise InterpreterError(
            f"Not a TFLite flatbuffer: {len(model)} bytes without the 'TFL3' file identifier "
            "(is the file truncated, or not a .tflite model?)."
        )
    schema = _schema()
    names = _builtin_names()
    try:
        m = schema.Model.GetRootAs(model, 0)
        codes = []
        for i in range(m.OperatorCodesLength()):
            oc = m.OperatorCodes(i)
            code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())
            if code == schema.BuiltinOperator.CUSTOM:
                custom = oc.CustomCode()
                codes.append((custom.decode() if isinstance(custom, bytes) else custom, True))
            else:
                codes.append((names.get(code, f"BUILTIN_{code}"), False))
        if m.SubgraphsLength() < 1:
            raise ValueError("no subgraph")
        g = m.Subgraphs(0)
        variables = [g.Tensors(i).Name().decode(errors="replace")
                     for j in range(m.SubgraphsLength()) for g in [m.Subgraphs(j)]
                     for i in range(g.TensorsLength()) if g.Tensors(i).IsVariable()]
        g = m.Subgraphs(0)
        tensors = []
        for i in range(g.TensorsLength()):
            t = g.Tensors(i)
            info = _tensor_info(t)
            buf = m.Buffers(t.Buffer()) if t.Buffer() < m.BuffersLength() else None
            info["constant"] = bool(buf is not None and (buf.DataLength() or buf.Size()))
            if info["constant"] and info["dtype"] == "int32" and buf.DataLength() and buf.DataLength() <= 64:
                info["values"] = np.frombuffer(buf.DataAsNumpy().tobytes(), "<i4").tolist()
            tensors.append(info)
        operators = []
        for i in range(g.OperatorsLength()):
            op = g.Operators(i)
            operators.append({
                "op": codes[op.OpcodeIndex()][0],
                "inputs": [tensors[int(t)] for t in op.InputsAsNumpy() if t >= 0]
                if op.InputsLength() else [],
                "outputs": [tensors[int(t)] for t in op.OutputsAsNumpy()] if op.OutputsLength() else [],
                "fused_activation": _fused_activation(op, schema),
            })
        ops = [o["op"] for o in operators]
        inputs = [tensors[int(t)] for t in g.InputsAsNumpy()]
        outputs = [tensors[int(t)] for t in g.OutputsAsNumpy()]
        # Touch every buffer so a truncated file fails here rather than in an interpreter.
        for i in range(m.BuffersLength()):
            b = m.Buffers(i)
            if b.Offset() and b.Offset() + b.Size() > len(model):
                raise ValueError(f"buffer {i} lies past the end of the file")
            if b.DataLength():
                np.asarray(b.DataAsNumpy())
    except InterpreterError:
        raise
    except Exception as err:  # flatbuffers raises struct/index errors on corrupt data
        raise InterpreterError(
            f"Corrupt or truncated TFLite flatbuffer ({len(model)} bytes): {err}"
        ) from err
    custom = sorted({name for name, is_custom in codes if is_custom})
    return FlatbufferInfo(size=len(model), ops=ops, custom_ops=custom, inputs=inputs,
                          outputs=outputs, operators=operators, variable_tensors=variables)
