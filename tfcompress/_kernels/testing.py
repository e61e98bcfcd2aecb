"""Build LCE/TFLite flatbuffers directly (no TensorFlow) for kernel tests, fuzzing and profiles.

LCE's converter needs TensorFlow and seconds per model; the kernel tests and the sanitizer fuzz
(``tools/fuzz_kernels.py``) need hundreds of models with exact control of every shape and
attribute, including ones the converter never writes. :class:`GraphBuilder` writes the same
structures the converter does (checked against converted files): custom ops with a FlexBuffers
map of options (``LceBconv2d``: ``channels_in``, ``stride_height``/``_width``,
``dilation_height_factor``/``_width_factor``, ``padding`` 0 = SAME / 1 = VALID, ``pad_values``,
``fused_activation_function``), a bitpacked OHWI int32 filter (input channel ``c`` in bit
``c % 32`` of word ``c // 32``, bit 1 = -1), inputs ``(input, filter, multiplier, bias,
thresholds)`` with -1 for the absent ones, and builtin ops with their options tables.

Only the object API of the schema that ships with ai-edge-litert is used.
"""

import numpy as np

__all__ = ["GraphBuilder", "conv_output_size", "lce_conv_model", "pack_bits", "random_conv_spec"]

_DTYPES = {"float32": 0, "float16": 1, "int32": 2, "uint8": 3, "int64": 4, "bool": 6,
           "int16": 7, "int8": 9}


def _schema():
    from ai_edge_litert import schema_py_generated as schema

    return schema


def pack_bits(values):
    """Bitpack a ``(..., C)`` array along its last axis the LCE way: ``x < 0`` -> bit 1,
    channel ``c`` in bit ``c % 32`` of int32 word ``c // 32``; unused high bits are 0.

    Returns:
        int32 array ``(..., ceil(C / 32))``.
    """
    v = np.asarray(values)
    c = v.shape[-1]
    words = (c + 31) // 32
    bits = np.zeros(v.shape[:-1] + (words * 32,), np.uint64)
    bits[..., :c] = (v < 0)
    bits = bits.reshape(v.shape[:-1] + (words, 32))
    packed = (bits << np.arange(32, dtype=np.uint64)).sum(axis=-1).astype(np.uint64)
    return packed.astype(np.uint32).view(np.int32)


def conv_output_size(size, kernel, stride, dilation, padding):
    """TFLite's output size: SAME ``ceil(size / stride)``, VALID
    ``ceil((size - (kernel - 1) * dilation) / stride)`` (0 when the filter does not fit)."""
    if padding == "same":
        return -(-size // stride)
    eff = (kernel - 1) * dilation + 1
    return max(0, (size - eff + stride) // stride)


class GraphBuilder:
    """Accumulates tensors, buffers and operators of one subgraph and serializes the model.

    >>> g = GraphBuilder()
    >>> x = g.tensor((1, 4, 4, 8), "float32")
    >>> y = g.tensor((1, 4, 4, 1), "int32")
    >>> g.custom("LceQuantize", [x], [y])
    0
    >>> len(g.finish([x], [y])) > 100
    True
    """

    def __init__(self):
        schema = _schema()
        self.schema = schema
        self.tensors = []
        self.buffers = [schema.BufferT()]  # buffer 0: the empty buffer, by convention
        self.opcodes = []
        self.operators = []

    def tensor(self, shape, dtype, data=None, *, scale=None, zero_point=None, name=None):
        """Add a tensor (constant when ``data`` is given); returns its index."""
        s = self.schema
        t = s.TensorT()
        t.shape = np.asarray(shape, np.int32)
        t.type = _DTYPES[dtype] if isinstance(dtype, str) else int(dtype)
        t.name = name or f"t{len(self.tensors)}"
        t.buffer = 0
        if data is not None:
            b = s.BufferT()
            b.data = np.frombuffer(np.ascontiguousarray(data).tobytes(), np.uint8)
            self.buffers.append(b)
            t.buffer = len(self.buffers) - 1
        if scale is not None:
            q = s.QuantizationParametersT()
            q.scale = [float(scale)]
            q.zeroPoint = [int(zero_point or 0)]
            t.quantization = q
        self.tensors.append(t)
        return len(self.tensors) - 1

    def _opcode(self, builtin, custom=None, version=1):
        key = (builtin, custom, version)
        for i, oc in enumerate(self.opcodes):
            if (oc.builtinCode, oc.customCode, oc.version) == key:
                return i
        oc = self.schema.OperatorCodeT()
        oc.builtinCode = builtin
        oc.deprecatedBuiltinCode = min(builtin, 127)
        oc.customCode = custom
        oc.version = version
        self.opcodes.append(oc)
        return len(self.opcodes) - 1

    def custom(self, name, inputs, outputs, options=None):
        """Add a custom op (``options``: a dict written as a FlexBuffers map, raw ``bytes``, or
        None for no options); returns the operator's index."""
        from flatbuffers import flexbuffers

        op = self.schema.OperatorT()
        op.opcodeIndex = self._opcode(self.schema.BuiltinOperator.CUSTOM, name)
        op.inputs = list(inputs)
        op.outputs = list(outputs)
        if isinstance(options, dict):
            options = bytes(flexbuffers.Dumps(options))
        if options:
            op.customOptions = list(options)
        self.operators.append(op)
        return len(self.operators) - 1

    def builtin(self, name, inputs, outputs, options=None, *, version=1):
        """Add a builtin op by name (e.g. ``"ADD"``); ``options`` is the matching
        ``<Name>OptionsT`` object of the schema, or None."""
        s = self.schema
        op = s.OperatorT()
        op.opcodeIndex = self._opcode(getattr(s.BuiltinOperator, name), None, version)
        op.inputs = list(inputs)
        op.outputs = list(outputs)
        if options is not None:
            op.builtinOptionsType = getattr(s.BuiltinOptions, type(options).__name__[:-1])
            op.builtinOptions = options
        self.operators.append(op)
        return len(self.operators) - 1

    def finish(self, inputs, outputs):
        """The model as flatbuffer bytes (file identifier ``TFL3``)."""
        import flatbuffers

        s = self.schema
        g = s.SubGraphT()
        g.tensors = self.tensors
        g.operators = self.operators
        g.inputs = list(inputs)
        g.outputs = list(outputs)
        g.name = "main"
        m = s.ModelT()
        m.version = 3
        m.description = "tfcompress._kernels.testing"
        m.operatorCodes = self.opcodes
        m.subgraphs = [g]
        m.buffers = self.buffers
        builder = flatbuffers.Builder(1024)
        builder.Finish(m.Pack(builder), file_identifier=b"TFL3")
        return bytes(builder.Output())


def random_conv_spec(rng, *, max_size=12):
    """Random attributes of one LceBconv2d that LCE's reference kernels support.

    Keys: ``n, h, w, cin, cout, kh, kw, sh, sw, dh, dw, padding ("same"/"valid"),
    pad_values (0/1), activation (0 NONE, 1 RELU, 2 RELU_N1_TO_1, 3 RELU6), input ("float" /
    "int8"), output ("float", "int8", "bits", "pool"), depth (1 or 2 binary convs)``.
    """
    while True:
        kh, kw = int(rng.choice([1, 2, 3, 5])), int(rng.choice([1, 2, 3, 5]))
        spec = dict(
            n=int(rng.choice([1, 1, 2])), h=int(rng.integers(1, max_size + 1)),
            w=int(rng.integers(1, max_size + 1)),
            cin=int(rng.choice([1, 3, 17, 31, 32, 33, 64, 65, 100, 130])),
            cout=int(rng.choice([1, 5, 8, 13, 32, 33, 40, 70])), kh=kh, kw=kw,
            sh=int(rng.integers(1, 4)), sw=int(rng.integers(1, 4)),
            dh=int(rng.choice([1, 1, 2, 3])), dw=int(rng.choice([1, 1, 2, 3])),
            padding=str(rng.choice(["same", "valid"])), pad_values=int(rng.integers(0, 2)),
            activation=int(rng.integers(0, 4)), input=str(rng.choice(["float", "float", "int8"])),
            output=str(rng.choice(["float", "float", "int8", "bits", "pool"])),
            depth=int(rng.choice([1, 1, 2])),
        )
        if spec["output"] in ("bits", "pool") or spec["depth"] == 2:
            # LCE writes bitpacked output only without zero padding.
            spec["pad_values"] = 1 if spec["padding"] == "same" else spec["pad_values"]
        if (spec["padding"] == "same" and spec["pad_values"] == 0 and spec["cin"] % 2 and
                (spec["output"] != "float" or spec["activation"])):
            # LCE 0.16 refuses zero padding with an odd channel count unless the output is
            # float without activation ("Zero-padding is only supported by the reference
            # kernel with an even number of input channels, ...").
            spec["pad_values"] = 1
        oh = conv_output_size(spec["h"], kh, spec["sh"], spec["dh"], spec["padding"])
        ow = conv_output_size(spec["w"], kw, spec["sw"], spec["dw"], spec["padding"])
        # the second conv of depth 2 has stride 1
        oh2 = conv_output_size(oh, kh, 1, spec["dh"], spec["padding"])
        ow2 = conv_output_size(ow, kw, 1, spec["dw"], spec["padding"])
        if oh > 0 and ow > 0 and (spec["depth"] == 1 or (oh2 > 0 and ow2 > 0)):
            return spec


def _bconv(g, rng, x, spec, h, w, cin, cout, out_kind, strides):
    """Append one LceBconv2d on bitpacked ``x`` (h x w x cin); returns (tensor, oh, ow)."""
    kh, kw = spec["kh"], spec["kw"]
    sh, sw = strides
    oh = conv_output_size(h, kh, sh, spec["dh"], spec["padding"])
    ow = conv_output_size(w, kw, sw, spec["dw"], spec["padding"])
    words = (cin + 31) // 32
    filt = pack_bits(rng.choice([-1.0, 1.0], (cout, kh, kw, cin)))
    f = g.tensor((cout, kh, kw, words), "int32", filt)
    n = spec["n"]
    k = kh * kw * cin
    options = dict(channels_in=cin, dilation_height_factor=spec["dh"],
                   dilation_width_factor=spec["dw"], fused_activation_function=spec["activation"],
                   pad_values=spec["pad_values"], padding=0 if spec["padding"] == "same" else 1,
                   stride_height=sh, stride_width=sw)
    if out_kind == "bits":
        thr = rng.integers(-k // 2, k // 2 + 1, cout).astype(np.int32)
        t = g.tensor((cout,), "int32", thr)
        y = g.tensor((n, oh, ow, (cout + 31) // 32), "int32")
        options["fused_activation_function"] = 0
        g.custom("LceBconv2d", [x, f, -1, -1, t], [y], options)
    else:
        mul = (rng.uniform(0.2, 1.5, cout) * rng.choice([-1.0, 1.0], cout)).astype(np.float32)
        bias = rng.normal(0, 3.0, cout).astype(np.float32)
        m = g.tensor((cout,), "float32", mul)
        b = g.tensor((cout,), "float32", bias)
        if out_kind == "int8":
            y = g.tensor((n, oh, ow, cout), "int8", scale=float(rng.uniform(0.05, 0.5)),
                         zero_point=int(rng.integers(-20, 21)))
        else:
            y = g.tensor((n, oh, ow, cout), "float32")
        g.custom("LceBconv2d", [x, f, m, b, -1], [y], options)
    return y, oh, ow


def lce_conv_model(spec, seed=0):
    """A flatbuffer for ``spec`` (see :func:`random_conv_spec`): LceQuantize -> LceBconv2d
    [-> LceBconv2d] -> (float/int8 output | bitpacked -> [LceBMaxPool2d] -> LceDequantize).

    Returns:
        ``(flatbuffer bytes, input shape, input dtype)``.
    """
    rng = np.random.default_rng(seed)
    g = GraphBuilder()
    n, h, w, cin = spec["n"], spec["h"], spec["w"], spec["cin"]
    if spec["input"] == "int8":
        x = g.tensor((n, h, w, cin), "int8", scale=0.05, zero_point=int(rng.integers(-10, 11)))
    else:
        x = g.tensor((n, h, w, cin), "float32")
    q = g.tensor((n, h, w, (cin + 31) // 32), "int32")
    g.custom("LceQuantize", [x], [q])
    cur, ch, cw, cc = q, h, w, cin
    for i in range(spec["depth"]):
        last = i == spec["depth"] - 1
        kind = spec["output"] if last else "bits"
        cout = spec["cout"] if last else int(rng.choice([16, 33, 64]))
        strides = (spec["sh"], spec["sw"]) if i == 0 else (1, 1)
        cur, ch, cw = _bconv(g, rng, cur, spec, ch, cw, cc, cout,
                             "bits" if kind == "pool" else kind, strides)
        cc = cout
    if spec["output"] == "pool":
        ph, pw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
        ps = int(rng.integers(1, 3))
        pad = str(rng.choice(["same", "valid"]))
        oh, ow = conv_output_size(ch, ph, ps, 1, pad), conv_output_size(cw, pw, ps, 1, pad)
        if oh > 0 and ow > 0:
            p = g.tensor((n, oh, ow, (cc + 31) // 32), "int32")
            g.custom("LceBMaxPool2d", [cur], [p], dict(
                filter_height=ph, filter_width=pw, padding=0 if pad == "same" else 1,
                stride_height=ps, stride_width=ps))
            cur, ch, cw = p, oh, ow
    if spec["output"] in ("bits", "pool"):
        y = g.tensor((n, ch, cw, cc), "float32")
        g.custom("LceDequantize", [cur], [y])
        cur = y
    return g.finish([x], [cur]), (n, h, w, cin), spec["input"]


# --------------------------------------------------------------------------------------
# Graphs with the float ops around binary convolutions (fusion tests and fuzzing)

_ACT = {"none": 0, "relu": 1, "relu_n1_to_1": 2, "relu6": 3}


class Net:
    """A :class:`GraphBuilder` that tracks shapes: LCE ops and the float builtin ops the
    kernels fuse with them (ADD, SUB, MUL, PRELU, RELU*, LOGISTIC, CONCATENATION,
    MAX_POOL_2D, AVERAGE_POOL_2D, FULLY_CONNECTED, RESHAPE), NHWC float32."""

    def __init__(self, seed=0):
        self.g = GraphBuilder()
        self.rng = np.random.default_rng(seed)
        self.shape = {}
        self.inputs = []

    def _t(self, shape, dtype="float32", data=None, **q):
        t = self.g.tensor(shape, dtype, data, **q)
        self.shape[t] = tuple(int(d) for d in shape)
        return t

    def input(self, shape):
        t = self._t(shape)
        self.inputs.append(t)
        return t

    def const(self, values):
        v = np.asarray(values, np.float32)
        return self._t(v.shape, "float32", v)

    def quantize(self, x):
        s = self.shape[x]
        y = self._t(s[:-1] + ((s[-1] + 31) // 32,), "int32")
        self.g.custom("LceQuantize", [x], [y])
        return y

    def bconv(self, x, cout, *, k=3, stride=1, dilation=1, padding="same", pad_values=1,
              activation=0, output="float", channels_in=None):
        """LceBconv2d on the float tensor ``x`` (quantized first) or on bitpacked ``x`` (then
        give ``channels_in``); ``output`` "float" or "bits"."""
        if channels_in is None:
            channels_in = self.shape[x][-1]
            x = self.quantize(x)
        n, h, w, _ = self.shape[x]
        oh = conv_output_size(h, k, stride, dilation, padding)
        ow = conv_output_size(w, k, stride, dilation, padding)
        words = (channels_in + 31) // 32
        f = self._t((cout, k, k, words), "int32",
                    pack_bits(self.rng.choice([-1.0, 1.0], (cout, k, k, channels_in))))
        opts = dict(channels_in=channels_in, dilation_height_factor=dilation,
                    dilation_width_factor=dilation, fused_activation_function=activation,
                    pad_values=pad_values, padding=0 if padding == "same" else 1,
                    stride_height=stride, stride_width=stride)
        if output == "bits":
            kk = k * k * channels_in
            thr = self._t((cout,), "int32", self.rng.integers(-kk // 4, kk // 4 + 1, cout)
                          .astype(np.int32) + kk // 2)
            y = self._t((n, oh, ow, (cout + 31) // 32), "int32")
            opts["fused_activation_function"] = 0
            self.g.custom("LceBconv2d", [x, f, -1, -1, thr], [y], opts)
            return y
        mul = self.const(self.rng.uniform(0.05, 0.3, cout) * self.rng.choice([-1.0, 1.0], cout))
        bias = self.const(self.rng.normal(0.0, 1.0, cout))
        y = self._t((n, oh, ow, cout))
        self.g.custom("LceBconv2d", [x, f, mul, bias, -1], [y], opts)
        return y

    def _binary(self, op, a, b, activation="none"):
        s = self.g.schema
        opts = {"ADD": s.AddOptionsT, "SUB": s.SubOptionsT, "MUL": s.MulOptionsT}[op]()
        opts.fusedActivationFunction = _ACT[activation]
        full = self.shape[a] if np.prod(self.shape[a]) >= np.prod(self.shape[b]) else self.shape[b]
        y = self._t(full)
        self.g.builtin(op, [a, b], [y], opts)
        return y

    def add(self, a, b, activation="none"):
        return self._binary("ADD", a, b, activation)

    def sub(self, a, b, activation="none"):
        return self._binary("SUB", a, b, activation)

    def mul(self, a, b, activation="none"):
        return self._binary("MUL", a, b, activation)

    def prelu(self, x, alpha):
        y = self._t(self.shape[x])
        self.g.builtin("PRELU", [x, alpha], [y])
        return y

    def unary(self, op, x):
        """``op``: "RELU", "RELU6", "RELU_N1_TO_1" or "LOGISTIC"."""
        y = self._t(self.shape[x])
        self.g.builtin(op, [x], [y])
        return y

    def concat(self, xs, activation="none"):
        s = self.shape[xs[0]]
        y = self._t(s[:-1] + (sum(self.shape[x][-1] for x in xs),))
        o = self.g.schema.ConcatenationOptionsT()
        o.axis = len(s) - 1
        o.fusedActivationFunction = _ACT[activation]
        self.g.builtin("CONCATENATION", xs, [y], o)
        return y

    def pool(self, x, kind, k, stride, padding="valid", activation="none"):
        """``k`` and ``stride``: an int or (height, width)."""
        n, h, w, c = self.shape[x]
        (kh, kw), (sh, sw) = ((k, k) if np.isscalar(k) else k), \
            ((stride, stride) if np.isscalar(stride) else stride)
        oh = conv_output_size(h, kh, sh, 1, padding)
        ow = conv_output_size(w, kw, sw, 1, padding)
        y = self._t((n, oh, ow, c))
        s = self.g.schema
        o = s.Pool2DOptionsT()
        o.padding = s.Padding.SAME if padding == "same" else s.Padding.VALID
        o.strideH, o.strideW = int(sh), int(sw)
        o.filterHeight, o.filterWidth = int(kh), int(kw)
        o.fusedActivationFunction = _ACT[activation]
        self.g.builtin("MAX_POOL_2D" if kind == "max" else "AVERAGE_POOL_2D", [x], [y], o)
        return y

    def fc(self, x, units, activation="none", bias=True):
        depth = self.shape[x][-1]
        rows = int(np.prod(self.shape[x])) // depth
        w = self.const(self.rng.normal(0, 1.0 / np.sqrt(depth), (units, depth)))
        b = self.const(self.rng.normal(0, 0.5, units)) if bias else -1
        y = self._t((rows, units))
        o = self.g.schema.FullyConnectedOptionsT()
        o.fusedActivationFunction = _ACT[activation]
        self.g.builtin("FULLY_CONNECTED", [x, w, b], [y], o)
        return y

    def reshape(self, x, shape):
        y = self._t(tuple(shape))
        o = self.g.schema.ReshapeOptionsT()
        o.newShape = list(shape)
        self.g.builtin("RESHAPE", [x], [y], o)
        return y

    def finish(self, outputs):
        return self.g.finish(self.inputs, outputs)


FUSION_PATTERNS = ("residual", "bn_chain", "r2b", "dense", "pool_se", "sub_prelu", "bits_chain")


def fusion_model(pattern, seed=0, *, size=None, channels=None):
    """A small random network exercising one fusion of the kernels (see :data:`FUSION_PATTERNS`):

    - ``residual``: QuickNet/ResNet-E block, ``x + bconv(sign(x))`` twice (ADD and
      LceQuantize fold into the conv), the second ADD with a fused ReLU;
    - ``bn_chain``: ``bconv(sign(x * a + b))`` (BatchNorm as MUL/ADD before the sign);
    - ``r2b``: Real-to-Binary half block, ``PReLU(bconv(sign(BN(x))) * scale(x)) + x`` with the
      scale from AVERAGE_POOL_2D -> FULLY_CONNECTED -> LOGISTIC -> RESHAPE;
    - ``dense``: BinaryDenseNet layers, ``concat(x, bconv(sign(BN(x))))`` twice;
    - ``pool_se``: bconv -> MAX_POOL_2D -> ADD; average pool -> FC(relu) -> FC;
    - ``sub_prelu``: SUB with the conv output second (``c - y``), scalar MUL, PRELU, RELU6;
    - ``bits_chain``: bitpacked bconv -> bconv (float) -> ADD, with zero padding.

    Returns:
        ``(flatbuffer, [input shapes])``.
    """
    rng = np.random.default_rng(seed)
    n = int(rng.choice([1, 1, 2]))
    h = size or int(rng.integers(5, 13))
    w = size or int(rng.integers(5, 13))
    c = channels or int(rng.choice([8, 16, 32, 40, 64, 70]))
    net = Net(seed)
    x = net.input((n, h, w, c))
    pad = int(rng.integers(0, 2))
    act = int(rng.integers(0, 4))
    ch = lambda: net.const(rng.uniform(0.5, 1.5, c) * rng.choice([-1, 1], c))  # noqa: E731
    outs = []
    if pattern == "residual":
        y = net.add(net.bconv(x, c, pad_values=pad, activation=act), x)
        z = net.add(net.bconv(y, c, pad_values=1), y, activation="relu")
        outs = [z, y]
    elif pattern == "bn_chain":
        y = net.add(net.mul(x, ch()), net.const(rng.normal(0, 0.5, c)))
        outs = [net.bconv(y, int(rng.choice([16, 33])), pad_values=pad, activation=act)]
    elif pattern == "r2b":
        scale_in = net.input((n, 1, 1, c))
        bn = net.add(net.mul(x, ch()), net.const(rng.normal(0, 0.5, c)))
        conv = net.bconv(bn, c, pad_values=0)
        pooled = net.pool(bn, "avg", (h, w), (h, w))  # global average pool
        se = net.fc(net.fc(net.reshape(pooled, (n, c)), max(c // 8, 1), "relu",
                           bias=False), c, bias=False)
        scale = net.reshape(net.unary("LOGISTIC", se), (n, 1, 1, c))
        y = net.prelu(net.mul(net.mul(conv, scale), scale_in),
                      net.const(rng.uniform(0.05, 0.3, (1, 1, c))))
        outs = [net.add(y, x)]
    elif pattern == "dense":
        cur = x
        for _ in range(2):
            bn = net.add(net.mul(cur, net.const(rng.uniform(0.5, 1.5, net.shape[cur][-1]))),
                         net.const(rng.normal(0, 0.5, net.shape[cur][-1])))
            cur = net.concat([cur, net.bconv(bn, 16, pad_values=0)])
        outs = [cur]
    elif pattern == "pool_se":
        y = net.bconv(x, c, pad_values=1, activation=act)
        p = net.pool(y, "max", 2, int(rng.integers(1, 3)), str(rng.choice(["same", "valid"])))
        q = net.pool(x, "max", 2, 1, "same") if net.shape[p] == net.shape[x] else p
        outs = [net.add(p, q, activation="relu6")]
        g = net.pool(y, "avg", 3, 2, "same", activation="relu")
        flat = net.reshape(g, (n, int(np.prod(net.shape[g][1:]))))
        outs.append(net.fc(net.fc(flat, 12, "relu"), 5))
    elif pattern == "sub_prelu":
        y = net.bconv(x, c, pad_values=pad)
        z = net.sub(net.const(rng.normal(0, 1, c)), y)          # c - y: the conv output second
        z = net.mul(z, net.const([float(rng.uniform(0.5, 2.0))]))  # scalar
        z = net.prelu(z, net.const(rng.uniform(0.05, 0.3, c)))
        outs = [net.unary("RELU6", z), net.bconv(z, 16, pad_values=1)]
    elif pattern == "bits_chain":
        b = net.bconv(x, 40, pad_values=1, output="bits")
        y = net.bconv(b, c, channels_in=40, pad_values=0)
        outs = [net.add(y, x, activation="relu_n1_to_1")]
    else:
        raise ValueError(f"unknown pattern {pattern!r}; valid: {', '.join(FUSION_PATTERNS)}")
    return net.finish(outs), [net.shape[t] for t in net.inputs]
