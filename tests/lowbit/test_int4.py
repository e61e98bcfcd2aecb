"""Packed INT4/INT2 storage: bytes decode to the trained integers, and the op-by-op table of
which operators run packed filters is re-measured in LiteRT and TFLite Micro."""

import numpy as np
import pytest

import tfcompress
from tfcompress import layers as QL
from tfcompress import quantizers as Q
from tfcompress._keras import keras
from tfcompress.conversion import int4
from tfcompress.conversion.fbwriter import read_model
from tfcompress.quantizers.grid import integer_grid


def test_pack_round_trip(rng):
    for bits, (lo, hi) in ((4, (-8, 7)), (2, (-2, 1))):
        for n in (1, 7, 64, 99):
            q = rng.integers(lo, hi + 1, n)
            packed = int4.pack(q, bits)
            assert len(packed) == -(-n * bits // 8)
            np.testing.assert_array_equal(int4.unpack(packed, n, bits), q)
    # the layout TFLite documents: first element in the low nibble
    assert int4.pack([1, -2], 4) == bytes([0xE1])
    assert int4.pack([1, -2, 0, -1], 2) == bytes([0b11001001])
    with pytest.raises(ValueError, match="INT4 holds"):
        int4.pack([8], 4)


def _one_op_model(kind, x):
    """input LSQ 4-bit -> one layer with a 4-bit LSQ kernel (no BatchNorm: integers as trained)."""
    inp = keras.Input(x.shape[1:])
    iq = Q.LSQ(bits=4, signed=True)
    if kind == "CONV_2D":
        layer = QL.QuantConv2D(6, 3, padding="same", input_quantizer=iq,
                               kernel_quantizer=Q.LSQ(bits=4, per_channel=True), name="op")
        out = layer(inp)
    elif kind == "DEPTHWISE_CONV_2D":
        layer = QL.QuantDepthwiseConv2D(3, padding="same", depth_multiplier=2, input_quantizer=iq,
                                        depthwise_quantizer=Q.LSQ(bits=4), name="op")
        out = layer(inp)
    else:
        layer = QL.QuantDense(6, input_quantizer=iq, kernel_quantizer=Q.LSQ(bits=4, per_channel=True),
                              name="op")
        out = layer(keras.layers.Flatten()(inp))
    model = keras.Model(inp, out)
    model(x[:64], training=True)
    return model


def _weight(flatbuffer, name):
    m = read_model(flatbuffer)
    g = m.subgraphs[0]
    t = next(t for t in g.tensors if t.name.decode() == name)
    raw = bytes(m.buffers[t.buffer].data)
    n = int(np.prod(t.shape))
    kind = {17: 4, 18: 2, 9: 8}[t.type]
    ints = np.frombuffer(raw, np.int8) if kind == 8 else int4.unpack(raw, n, kind)
    return kind, ints.reshape(t.shape).astype(np.int64), np.asarray(t.quantization.scale)


def _int8_twin(flatbuffer):
    """The file with every packed tensor rewritten as int8 (same integers, same scales)."""
    import flatbuffers

    m = read_model(flatbuffer)
    for t in m.subgraphs[0].tensors:
        if t.type in (17, 18):
            bits = 4 if t.type == 17 else 2
            n = int(np.prod(t.shape))
            m.buffers[t.buffer].data = int4.unpack(bytes(m.buffers[t.buffer].data), n, bits).view(np.uint8)
            t.type = 9
    b = flatbuffers.Builder(1024)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def _outputs(flatbuffer, x, runtime):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    if runtime == "micro":
        return tfcompress.runtime.Interpreter(flatbuffer, runtime="micro").predict(x)
    kind = OpResolverType.AUTO if runtime == "xnnpack" else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    it = Interpreter(model_content=flatbuffer, experimental_op_resolver_type=kind)
    it.allocate_tensors()
    wrap = tfcompress.runtime.Interpreter(flatbuffer, runtime="litert")
    outs = []
    for i in range(len(x)):
        it.set_tensor(it.get_input_details()[0]["index"], wrap._prepare(x[i: i + 1])[0])
        it.invoke()
        outs.append(it.get_tensor(it.get_output_details()[0]["index"])[0])
    return np.array(outs)


@pytest.mark.parametrize("op", ["CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"])
def test_packed_op_support_in_both_runtimes(op, mnist_lowbit):
    (x, _), _ = mnist_lowbit
    x = x[:, 8:20, 8:20, :]                     # 12x12 crops of real digits
    model = _one_op_model(op, x)
    packed = tfcompress.convert(model, target="int8", representative_data=x[:100],
                                pack_weights="always").flatbuffer
    plain = _int8_twin(packed)          # the same integers, stored one per byte
    # the packed bytes decode to the trained integers: scale * integer == the quantized kernel
    kernel = model.get_layer("op").depthwise_kernel if op == "DEPTHWISE_CONV_2D" else model.get_layer("op").kernel
    quantizer = model.get_layer("op").depthwise_quantizer if op == "DEPTHWISE_CONV_2D" else model.get_layer("op").kernel_quantizer
    wq = quantizer(kernel).numpy()
    trained = integer_grid(quantizer, kernel).integers(wq)
    bits, ints, scale = _weight(packed, "op/" + ("depthwise_kernel" if op == "DEPTHWISE_CONV_2D" else "kernel"))
    assert bits == 4
    if op == "CONV_2D":
        layout = np.transpose(ints, (1, 2, 3, 0)) * scale             # (kh, kw, cin, cout)
        np.testing.assert_allclose(layout, wq, rtol=1e-6, atol=1e-7)
        stored = ints.reshape(len(scale), -1)
        per_channel = np.transpose(trained, (3, 0, 1, 2)).reshape(len(scale), -1)
        assert np.all(stored[per_channel == 0] == 0)                 # zero stays zero
        nonzero = per_channel != 0
        k = stored[nonzero] / per_channel[nonzero]
        assert np.all(k == np.round(k))                              # integer multiples (k_c)
    elif op == "DEPTHWISE_CONV_2D":
        np.testing.assert_allclose(ints[0] * scale, wq.reshape(wq.shape[0], wq.shape[1], -1),
                                   rtol=1e-6, atol=1e-7)
    else:
        np.testing.assert_allclose(ints.T * scale, wq, rtol=1e-6, atol=1e-7)
    xs = x[:40]
    for runtime in ("xnnpack", "builtin", "micro"):
        supported = op in int4.PACKED_SUPPORT["micro" if runtime == "micro" else "int8"]
        if supported:
            out = _outputs(packed, xs, runtime)
            if runtime == "xnnpack":
                # XNNPACK runs packed FULLY_CONNECTED itself but leaves packed convolutions to
                # LiteRT's builtin kernels: the twin must match in one of the two (XNNPACK
                # requantizes with one rounding, the builtin kernels with two)
                refs = [_outputs(plain, xs, "xnnpack"), _outputs(plain, xs, "builtin")]
                assert any(np.array_equal(out, r) for r in refs), runtime
            else:
                np.testing.assert_array_equal(out, _outputs(plain, xs, runtime), err_msg=runtime)
        else:   # the table says this runtime refuses packed filters for the op: check it does
            with pytest.raises(Exception, match="(?i)int4|failed|allocate|prepare"):
                _outputs(packed, xs, runtime)


def test_edgetpu_and_micro_storage(mnist_lowbit):
    (x, _), _ = mnist_lowbit
    x = x[:, 8:20, 8:20, :]
    model = _one_op_model("FULLY_CONNECTED", x)
    micro = tfcompress.convert(model, target="micro", representative_data=x[:100], allow_low_bit=True)
    row = next(r for r in micro.report()["layers"] if r["layer"] == "op" and r["role"] == "kernel")
    assert row["stored_bits"] == 8 and "TFLite Micro does not run FULLY_CONNECTED" in row["notes"][0]
    conv = _one_op_model("CONV_2D", x)
    tpu = tfcompress.convert(conv, target="edgetpu", representative_data=x[:100], allow_low_bit=True)
    assert all(r.get("stored_bits", 8) == 8 for r in tpu.report()["layers"])
    assert tpu.extras["edgetpu"]["fully_mapped"], tpu.extras["edgetpu"]["text"]
