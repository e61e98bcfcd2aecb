"""Read a converted ``.tflite`` flatbuffer into a small graph for code generation.

The reader uses the flatbuffer object API that ships with ai-edge-litert
(``ai_edge_litert.schema_py_generated.ModelT``) for the TFLite schema and
``flatbuffers.flexbuffers`` for the custom options of the Larq Compute Engine ops, so it
needs no TensorFlow import. Only what code generation needs is kept: tensor shapes, types,
quantization, constant data, and per operator its name, inputs, outputs and options (builtin
options as a plain ``dict`` with the schema's field names, custom options decoded).
"""

from dataclasses import dataclass, field

import numpy as np

from tfcompress.errors import ConversionError

# TensorType enum of the TFLite schema -> numpy dtype name
DTYPES = {0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 6: "bool",
          7: "int16", 9: "int8", 10: "float64"}
# ActivationFunctionType enum
ACTIVATIONS = {0: "NONE", 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6", 4: "TANH", 5: "SIGN_BIT"}
# Padding enum
PADDINGS = {0: "SAME", 1: "VALID"}


class CodegenError(ConversionError):
    """A model that cannot be turned into C: an unsupported op, type or attribute (the message
    names the operator and its position in the graph)."""


@dataclass
class Tensor:
    """One tensor of the graph.

    Attributes:
        index: position in the subgraph's tensor list.
        name: the converter's tensor name.
        shape: static shape (the batch dimension included).
        dtype: numpy dtype name (``float32``, ``int8``, ``int32``, ...).
        scale, zero_point: quantization parameters as 1-D arrays (empty when unquantized).
        quantized_dimension: axis of per-channel quantization.
        data: the constant's values (``None`` for activations).
    """

    index: int
    name: str
    shape: tuple
    dtype: str
    scale: np.ndarray
    zero_point: np.ndarray
    quantized_dimension: int = 0
    data: np.ndarray = None

    @property
    def size(self):
        """Number of elements."""
        return int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1

    @property
    def itemsize(self):
        return np.dtype(self.dtype).itemsize

    @property
    def nbytes(self):
        return self.size * self.itemsize

    @property
    def is_constant(self):
        return self.data is not None

    @property
    def quantized(self):
        return self.scale.size > 0

    @property
    def qscale(self):
        """The per-tensor scale as a Python float (``float32`` value, as the runtimes read it)."""
        if self.scale.size == 0:
            raise CodegenError(f"Tensor {self.name!r} ({self.dtype}) has no quantization scale.")
        return float(self.scale[0])

    @property
    def qzero(self):
        return int(self.zero_point[0]) if self.zero_point.size else 0


@dataclass
class Node:
    """One operator: ``op`` is the builtin name (``CONV_2D``) or the custom code
    (``LceBconv2d``); ``inputs``/``outputs`` are tensor indices (-1 = optional input left out);
    ``options`` the builtin or custom options as a dict."""

    index: int
    op: str
    inputs: list
    outputs: list
    options: dict = field(default_factory=dict)
    custom: bool = False

    def describe(self):
        return f"operator #{self.index} ({self.op})"


@dataclass
class Graph:
    """Tensors, operators in execution order, and the graph's input/output tensor indices."""

    tensors: list
    nodes: list
    inputs: list
    outputs: list
    description: str = ""

    def consumers(self, tensor_index):
        return [n for n in self.nodes if tensor_index in n.inputs]

    def producer(self, tensor_index):
        for n in self.nodes:
            if tensor_index in n.outputs:
                return n
        return None


def _schema():
    from ai_edge_litert import schema_py_generated as schema

    return schema


def _builtin_names(schema):
    return {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}


def _options_dict(options):
    if options is None:
        return {}
    out = {}
    for key, value in vars(options).items():
        if isinstance(value, np.ndarray):
            value = value.tolist()
        out[key] = value
    return out


def _custom_options(raw, node_desc):
    if raw is None or len(raw) == 0:
        return {}
    from flatbuffers import flexbuffers

    try:
        value = flexbuffers.Loads(bytes(bytearray(raw)))
    except Exception as err:  # corrupt options: name the node
        raise CodegenError(f"{node_desc}: custom options are not a FlexBuffers map ({err}).") from err
    if not isinstance(value, dict):
        raise CodegenError(f"{node_desc}: custom options are not a FlexBuffers map.")
    return value


def _buffer_data(model, buf, flatbuffer, tensor, dtype):
    if buf is None:
        return None
    raw = None
    if buf.data is not None and len(buf.data):
        raw = np.asarray(buf.data, np.uint8).tobytes()
    elif buf.offset and buf.size:
        raw = flatbuffer[buf.offset: buf.offset + buf.size]
    if raw is None:
        return None
    arr = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<"))
    shape = tuple(int(d) for d in tensor.shape) if tensor.shape is not None else ()
    if arr.size != (int(np.prod(shape)) if shape else 1):
        raise CodegenError(f"Constant tensor {tensor.name!r} holds {arr.size} values for shape {shape}.")
    return arr.reshape(shape).astype(np.dtype(dtype))


def read_graph(flatbuffer):
    """Parse ``flatbuffer`` (bytes of a ``.tflite`` file) into a :class:`Graph`.

    Raises:
        CodegenError: not a TFLite flatbuffer, more than one subgraph, dynamic shapes or a
            tensor type C generation does not handle.
    """
    if isinstance(flatbuffer, (bytearray, memoryview)):
        flatbuffer = bytes(flatbuffer)
    if not isinstance(flatbuffer, bytes):
        raise TypeError(f"Expected the flatbuffer as bytes, got {type(flatbuffer).__name__}.")
    if len(flatbuffer) < 8 or flatbuffer[4:8] != b"TFL3":
        raise CodegenError(f"Not a TFLite flatbuffer ({len(flatbuffer)} bytes without the 'TFL3' "
                           "file identifier).")
    schema = _schema()
    names = _builtin_names(schema)
    option_names = {v: k for k, v in vars(schema.BuiltinOptions).items() if not k.startswith("_")}
    try:
        model = schema.ModelT.InitFromPackedBuf(flatbuffer, 0)
    except Exception as err:
        raise CodegenError(f"Corrupt TFLite flatbuffer: {err}") from err
    if not model.subgraphs:
        raise CodegenError("The flatbuffer has no subgraph.")
    if len(model.subgraphs) > 1:
        raise CodegenError(f"The model has {len(model.subgraphs)} subgraphs (control flow); C "
                           "generation handles single-subgraph models only.")
    g = model.subgraphs[0]
    tensors = []
    for i, t in enumerate(g.tensors or []):
        name = t.name.decode() if isinstance(t.name, bytes) else str(t.name)
        if t.type not in DTYPES:
            raise CodegenError(f"Tensor {name!r} has unsupported type id {t.type}.")
        dtype = DTYPES[t.type]
        shape = tuple(int(d) for d in t.shape) if t.shape is not None else ()
        if t.shapeSignature is not None and any(int(d) < 0 for d in t.shapeSignature):
            # dynamic batch (-1) is fine when the static shape has batch 1
            sig = [int(d) for d in t.shapeSignature]
            if any(d < 0 for d in sig[1:]):
                raise CodegenError(f"Tensor {name!r} has a dynamic shape {sig}; generate C from a "
                                   "model with static shapes.")
        q = t.quantization
        scale = np.asarray(q.scale if q is not None and q.scale is not None else [], np.float32)
        zp = np.asarray(q.zeroPoint if q is not None and q.zeroPoint is not None else [], np.int64)
        qdim = int(q.quantizedDimension) if q is not None else 0
        buf = model.buffers[t.buffer] if t.buffer < len(model.buffers) else None
        data = _buffer_data(model, buf, flatbuffer, t, dtype) if t.buffer > 0 else None
        tensors.append(Tensor(i, name, shape, dtype, scale.reshape(-1), zp.reshape(-1), qdim, data))
    nodes = []
    for i, op in enumerate(g.operators or []):
        oc = model.operatorCodes[op.opcodeIndex]
        code = max(int(oc.builtinCode), int(oc.deprecatedBuiltinCode))
        custom = code == schema.BuiltinOperator.CUSTOM
        if custom:
            cc = oc.customCode
            opname = cc.decode() if isinstance(cc, bytes) else str(cc)
        else:
            opname = names.get(code, f"BUILTIN_{code}")
        node = Node(i, opname, [int(x) for x in (op.inputs if op.inputs is not None else [])],
                    [int(x) for x in (op.outputs if op.outputs is not None else [])], custom=custom)
        if custom:
            node.options = _custom_options(op.customOptions, node.describe())
        else:
            node.options = _options_dict(op.builtinOptions)
            node.options["_type"] = option_names.get(op.builtinOptionsType, "NONE")
        nodes.append(node)
    desc = model.description.decode() if isinstance(model.description, bytes) else (model.description or "")
    return Graph(tensors, nodes, [int(x) for x in g.inputs], [int(x) for x in g.outputs], desc)


__all__ = ["ACTIVATIONS", "CodegenError", "DTYPES", "Graph", "Node", "PADDINGS", "Tensor",
           "read_graph"]
