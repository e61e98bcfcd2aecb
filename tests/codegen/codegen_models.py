"""Random single-op models (float32 and int8) for the builtin-op tests, built as flatbuffers.

Every function takes a numpy Generator and a dtype and returns ``(flatbuffer, input_shape)``;
int8 models get random scales and zero points on every tensor, per-channel weight scales and
int32 biases at the scale TFLite's quantizer uses (input scale x weight scale).
"""

import numpy as np

from codegen_fbuild import ACT, PAD, Builder, options

from tfcompress.codegen.steps import compute_padding


def _q(rng):
    return float(rng.uniform(0.01, 0.1)), int(rng.integers(-20, 21))


def _act(rng, choices=("NONE", "RELU", "RELU6", "RELU_N1_TO_1")):
    return str(rng.choice(choices))


def _io(b, rng, shape, dtype, name):
    if dtype == "int8":
        s, z = _q(rng)
        return b.tensor(shape, "int8", scale=s, zero_point=z, name=name), s
    return b.tensor(shape, "float32", name=name), 1.0


def _weights(b, rng, shape, dtype, in_scale, qdim, channels, k_elems):
    """Weights (+ their scales) for a conv/fc: float32 normal or int8 per-channel."""
    if dtype == "float32":
        return b.tensor(shape, "float32", rng.normal(0, 1, shape).astype(np.float32)), None
    w = rng.integers(-127, 128, size=shape).astype(np.int8)
    ws = rng.uniform(0.002, 0.02, channels).astype(np.float32)
    return b.tensor(shape, "int8", w, scale=ws, zero_point=np.zeros(channels, np.int64), qdim=qdim), ws


def _bias(b, rng, n, dtype, in_scale, ws):
    if dtype == "float32":
        return b.tensor([n], "float32", rng.normal(0, 1, n).astype(np.float32))
    return b.tensor([n], "int32", rng.integers(-3000, 3000, n).astype(np.int32),
                    scale=(in_scale * ws).astype(np.float32), zero_point=np.zeros(n, np.int64))


def _out_scale(in_scale, ws, k):
    return float(in_scale * float(np.mean(ws)) * np.sqrt(k) * 74 * 73 / 40)


def conv2d(rng, dtype, depthwise=False):
    h, w = int(rng.integers(3, 10)), int(rng.integers(3, 10))
    cin = int(rng.choice([1, 2, 3, 8, 13]))
    k_h, k_w = int(rng.choice([1, 2, 3])), int(rng.choice([1, 2, 3, 5]))
    k_w = min(k_w, w)
    k_h = min(k_h, h)
    stride = int(rng.choice([1, 2]))
    dil = int(rng.choice([1, 2])) if stride == 1 else 1
    if (k_h - 1) * dil + 1 > h or (k_w - 1) * dil + 1 > w:
        dil = 1
    pad = str(rng.choice(["SAME", "VALID"]))
    act = _act(rng)
    oh, _ = compute_padding(pad, h, k_h, stride, dil)
    ow, _ = compute_padding(pad, w, k_w, stride, dil)
    b = Builder()
    x, s_in = _io(b, rng, [1, h, w, cin], dtype, "input")
    if depthwise:
        mult = int(rng.choice([1, 2]))
        cout = cin * mult
        wt, ws = _weights(b, rng, [1, k_h, k_w, cout], dtype, s_in, 3, cout, k_h * k_w)
        k = k_h * k_w
    else:
        groups = 1
        cout = int(rng.integers(1, 13))
        wt, ws = _weights(b, rng, [cout, k_h, k_w, cin // groups], dtype, s_in, 0, cout,
                          k_h * k_w * cin)
        k = k_h * k_w * cin
    bias = _bias(b, rng, cout, dtype, s_in, ws)  # litert's convolutions require a bias
    if dtype == "int8":
        y = b.tensor([1, oh, ow, cout], "int8", scale=_out_scale(s_in, ws, k),
                     zero_point=int(rng.integers(-20, 21)), name="output")
    else:
        y = b.tensor([1, oh, ow, cout], "float32", name="output")
    if depthwise:
        b.op("DEPTHWISE_CONV_2D", [x, wt, bias], [y], options(
            "DepthwiseConv2DOptions", padding=PAD[pad], strideW=stride, strideH=stride,
            depthMultiplier=mult, fusedActivationFunction=ACT[act], dilationWFactor=dil,
            dilationHFactor=dil), version=3 if dtype == "int8" else 1)
    else:
        b.op("CONV_2D", [x, wt, bias], [y], options(
            "Conv2DOptions", padding=PAD[pad], strideW=stride, strideH=stride,
            fusedActivationFunction=ACT[act], dilationWFactor=dil, dilationHFactor=dil),
            version=3 if dtype == "int8" else 1)
    return b.finish([x], [y]), (1, h, w, cin)


def depthwise_conv2d(rng, dtype):
    return conv2d(rng, dtype, depthwise=True)


def fully_connected(rng, dtype):
    fin, fout = int(rng.integers(1, 48)), int(rng.integers(1, 20))
    shape = [1, fin] if rng.random() < 0.5 else [1, 1, 1, fin]
    b = Builder()
    x, s_in = _io(b, rng, shape, dtype, "input")
    if dtype == "int8":
        w = rng.integers(-127, 128, size=(fout, fin)).astype(np.int8)
        ws = np.full(1, rng.uniform(0.002, 0.02), np.float32)
        wt = b.tensor([fout, fin], "int8", w, scale=ws, zero_point=[0])
        wsb = np.full(fout, ws[0], np.float32)
    else:
        wt, wsb = _weights(b, rng, [fout, fin], dtype, s_in, 0, fout, fin)
    bias = _bias(b, rng, fout, dtype, s_in, wsb) if rng.random() < 0.8 else -1
    act = _act(rng, ("NONE", "RELU", "RELU6"))
    if dtype == "int8":
        y = b.tensor([1, fout], "int8", scale=_out_scale(s_in, wsb, fin),
                     zero_point=int(rng.integers(-20, 21)), name="output")
    else:
        y = b.tensor([1, fout], "float32", name="output")
    b.op("FULLY_CONNECTED", [x, wt, bias], [y], options(
        "FullyConnectedOptions", fusedActivationFunction=ACT[act]),
        version=4 if dtype == "int8" else 1)
    return b.finish([x], [y]), tuple(shape)


def pool(rng, dtype, kind):
    h, w, c = int(rng.integers(2, 10)), int(rng.integers(2, 10)), int(rng.integers(1, 9))
    fh, fw = int(rng.integers(1, min(h, 3) + 1)), int(rng.integers(1, min(w, 3) + 1))
    stride = int(rng.integers(1, 3))
    pad = str(rng.choice(["SAME", "VALID"]))
    oh, _ = compute_padding(pad, h, fh, stride, 1)
    ow, _ = compute_padding(pad, w, fw, stride, 1)
    act = _act(rng, ("NONE", "RELU"))
    b = Builder()
    if dtype == "int8":
        s, z = _q(rng)
        x = b.tensor([1, h, w, c], "int8", scale=s, zero_point=z)
        y = b.tensor([1, oh, ow, c], "int8", scale=s, zero_point=z)
    else:
        x = b.tensor([1, h, w, c], "float32")
        y = b.tensor([1, oh, ow, c], "float32")
    b.op(kind, [x], [y], options("Pool2DOptions", padding=PAD[pad], strideW=stride,
                                 strideH=stride, filterWidth=fw, filterHeight=fh,
                                 fusedActivationFunction=ACT[act]), version=2 if dtype == "int8" else 1)
    return b.finish([x], [y]), (1, h, w, c)


def max_pool(rng, dtype):
    return pool(rng, dtype, "MAX_POOL_2D")


def average_pool(rng, dtype):
    return pool(rng, dtype, "AVERAGE_POOL_2D")


def mean(rng, dtype):
    h, w, c = int(rng.integers(1, 8)), int(rng.integers(1, 8)), int(rng.integers(1, 9))
    axes = [[1, 2], [1], [2], [3], [2, 3]][int(rng.integers(0, 5))]
    keep = bool(rng.random() < 0.5)
    shape = [1, h, w, c]
    out = [1 if i in axes else d for i, d in enumerate(shape)] if keep else \
        [d for i, d in enumerate(shape) if i not in axes]
    b = Builder()
    x, _ = _io(b, rng, shape, dtype, "input")
    y, _ = _io(b, rng, out, dtype, "output")
    ax = b.tensor([len(axes)], "int32", np.asarray(axes, np.int32))
    b.op("MEAN", [x, ax], [y], options("ReducerOptions", keepDims=keep),
         version=2 if dtype == "int8" else 1)
    return b.finish([x], [y]), tuple(shape)


def _binary(rng, dtype, kind):
    h, w, c = int(rng.integers(1, 6)), int(rng.integers(1, 6)), int(rng.integers(1, 7))
    full = [1, h, w, c]
    other = [full, [c], [1, 1, 1, c], [1, h, 1, 1], [1, 1, w, c], []][int(rng.integers(0, 6))]
    const = bool(rng.random() < 0.5) or other == []
    act = _act(rng, ("NONE", "RELU", "RELU6"))
    b = Builder()
    x, _ = _io(b, rng, full, dtype, "input")
    if const:
        if dtype == "int8":
            s, z = _q(rng)
            o = b.tensor(other, "int8", rng.integers(-128, 128, other).astype(np.int8), scale=s,
                         zero_point=z)
        else:
            o = b.tensor(other, "float32", rng.normal(0, 1, other).astype(np.float32))
        inputs = [x, o] if rng.random() < 0.5 else [o, x]
    else:
        inputs = [x, x]
    y, _ = _io(b, rng, full, dtype, "output")
    opts = options("AddOptions" if kind == "ADD" else "MulOptions", fusedActivationFunction=ACT[act])
    b.op(kind, inputs, [y], opts, version=2 if dtype == "int8" else 1)
    return b.finish([x], [y]), tuple(full)


def add(rng, dtype):
    return _binary(rng, dtype, "ADD")


def mul(rng, dtype):
    return _binary(rng, dtype, "MUL")


def pad(rng, dtype):
    h, w, c = int(rng.integers(1, 6)), int(rng.integers(1, 6)), int(rng.integers(1, 5))
    pads = rng.integers(0, 3, size=(4, 2))
    pads[0] = 0
    out = [d + int(p.sum()) for d, p in zip([1, h, w, c], pads)]
    v2 = bool(rng.random() < 0.5)
    b = Builder()
    if dtype == "int8":
        s, z = _q(rng)
        x = b.tensor([1, h, w, c], "int8", scale=s, zero_point=z)
        y = b.tensor(out, "int8", scale=s, zero_point=z)
    else:
        x = b.tensor([1, h, w, c], "float32")
        y = b.tensor(out, "float32")
    p = b.tensor([4, 2], "int32", pads.astype(np.int32))
    if v2:
        val = (b.tensor([1], "int8", np.array([rng.integers(-128, 128)], np.int8), scale=s, zero_point=z)
               if dtype == "int8" else b.tensor([1], "float32", np.array([rng.normal()], np.float32)))
        b.op("PADV2", [x, p, val], [y], options("PadV2Options"))
    else:
        b.op("PAD", [x, p], [y], options("PadOptions"), version=2 if dtype == "int8" else 1)
    return b.finish([x], [y]), (1, h, w, c)


def reshape(rng, dtype):
    h, w, c = int(rng.integers(1, 6)), int(rng.integers(1, 6)), int(rng.integers(1, 6))
    b = Builder()
    if dtype == "int8":
        s, z = _q(rng)
        x = b.tensor([1, h, w, c], "int8", scale=s, zero_point=z)
        y = b.tensor([1, h * w * c], "int8", scale=s, zero_point=z)
    else:
        x = b.tensor([1, h, w, c], "float32")
        y = b.tensor([1, h * w * c], "float32")
    shp = b.tensor([2], "int32", np.array([1, h * w * c], np.int32))
    # a RELU after the reshape so the reshape is not the whole graph
    z2 = b.tensor([1, h * w * c], dtype, scale=b.tensors[y].quantization.scale if dtype == "int8" else None,
                  zero_point=b.tensors[y].quantization.zeroPoint if dtype == "int8" else None)
    b.op("RESHAPE", [x, shp], [y], options("ReshapeOptions", newShape=np.array([1, h * w * c], np.int32)))
    b.op("RELU", [y], [z2])
    return b.finish([x], [z2]), (1, h, w, c)


def softmax(rng, dtype):
    shape = [1, int(rng.integers(1, 20))] if rng.random() < 0.5 else \
        [1, int(rng.integers(1, 4)), int(rng.integers(1, 4)), int(rng.integers(1, 12))]
    beta = float(rng.choice([1.0, 0.5, 2.0]))
    b = Builder()
    if dtype == "int8":
        x = b.tensor(shape, "int8", scale=float(rng.uniform(0.02, 0.3)), zero_point=int(rng.integers(-20, 21)))
        y = b.tensor(shape, "int8", scale=1 / 256, zero_point=-128)
    else:
        x = b.tensor(shape, "float32")
        y = b.tensor(shape, "float32")
    b.op("SOFTMAX", [x], [y], options("SoftmaxOptions", beta=beta), version=2 if dtype == "int8" else 1)
    return b.finish([x], [y]), tuple(shape)


def concatenation(rng, dtype):
    h, w = int(rng.integers(1, 5)), int(rng.integers(1, 5))
    axis = int(rng.choice([1, 2, 3, -1]))
    n = int(rng.integers(2, 4))
    b = Builder()
    s, z = _q(rng)
    ins = []
    x = b.tensor([1, h, w, 3], dtype, scale=s if dtype == "int8" else None, zero_point=z if dtype == "int8" else None)
    shapes = []
    for i in range(n):
        d = int(rng.integers(1, 5))
        shp = [1, h, w, 3]
        shp[axis] = d
        shapes.append(shp)
    # input 0 is the graph input; the others are constants
    shapes[0] = [1, h, w, 3]
    ins.append(x)
    for shp in shapes[1:]:
        data = (rng.integers(-128, 128, shp).astype(np.int8) if dtype == "int8"
                else rng.normal(0, 1, shp).astype(np.float32))
        ins.append(b.tensor(shp, dtype, data, scale=s if dtype == "int8" else None,
                            zero_point=z if dtype == "int8" else None))
    out = list(shapes[0])
    out[axis] = sum(sh[axis] for sh in shapes)
    y = b.tensor(out, dtype, scale=s if dtype == "int8" else None, zero_point=z if dtype == "int8" else None)
    b.op("CONCATENATION", ins, [y], options("ConcatenationOptions", axis=axis), version=2 if dtype == "int8" else 1)
    return b.finish([x], [y]), (1, h, w, 3)


def quantize(rng, dtype):
    shape = [1, int(rng.integers(1, 6)), int(rng.integers(1, 6)), int(rng.integers(1, 6))]
    b = Builder()
    x, _ = _io(b, rng, shape, dtype, "input")
    s, z = _q(rng)
    y = b.tensor(shape, "int8", scale=s, zero_point=z)
    b.op("QUANTIZE", [x], [y], version=2 if dtype == "int8" else 1)
    return b.finish([x], [y]), tuple(shape)


def dequantize(rng, dtype):
    shape = [1, int(rng.integers(1, 6)), int(rng.integers(1, 6)), int(rng.integers(1, 6))]
    b = Builder()
    s, z = _q(rng)
    x = b.tensor(shape, "int8", scale=s, zero_point=z)
    y = b.tensor(shape, "float32")
    b.op("DEQUANTIZE", [x], [y], version=2)
    return b.finish([x], [y]), tuple(shape)


def _activation(rng, dtype, kind):
    shape = [1, int(rng.integers(1, 6)), int(rng.integers(1, 6)), int(rng.integers(1, 6))]
    b = Builder()
    if dtype == "int8":
        s, z = float(rng.uniform(0.02, 0.2)), int(rng.integers(-30, 31))
        x = b.tensor(shape, "int8", scale=s, zero_point=z)
        if kind == "LOGISTIC":
            y = b.tensor(shape, "int8", scale=1 / 256, zero_point=-128)
        elif kind == "TANH":
            y = b.tensor(shape, "int8", scale=1 / 128, zero_point=0)
        else:
            so, zo = _q(rng)
            y = b.tensor(shape, "int8", scale=so, zero_point=zo)
    else:
        x = b.tensor(shape, "float32")
        y = b.tensor(shape, "float32")
    b.op(kind, [x], [y], version=2 if dtype == "int8" else 1)
    return b.finish([x], [y]), tuple(shape)


def relu(rng, dtype):
    return _activation(rng, dtype, "RELU")


def relu6(rng, dtype):
    return _activation(rng, dtype, "RELU6")


def logistic(rng, dtype):
    return _activation(rng, dtype, "LOGISTIC")


def tanh(rng, dtype):
    return _activation(rng, dtype, "TANH")


BUILTINS = {
    "CONV_2D": conv2d, "DEPTHWISE_CONV_2D": depthwise_conv2d,
    "FULLY_CONNECTED": fully_connected, "MAX_POOL_2D": max_pool,
    "AVERAGE_POOL_2D": average_pool, "MEAN": mean, "ADD": add, "MUL": mul, "PAD": pad,
    "RESHAPE": reshape, "SOFTMAX": softmax, "CONCATENATION": concatenation,
    "QUANTIZE": quantize, "DEQUANTIZE": dequantize, "RELU": relu, "RELU6": relu6,
    "LOGISTIC": logistic, "TANH": tanh,
}
