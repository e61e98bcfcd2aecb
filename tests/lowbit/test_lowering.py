"""Lowering details of the exact-grid exporter checked against Keras on small models."""

import numpy as np

import tfcompress
from tfcompress import layers as QL
from tfcompress import quantizers as Q
from tfcompress._keras import keras
from tfcompress.conversion.lowbit import grid_agreement


def _gap_model(rng):
    inp = keras.Input((8, 8, 3))
    h = QL.QuantConv2D(16, 3, padding="same", input_quantizer=Q.LSQ(bits=8, signed=True),
                       kernel_quantizer=Q.LSQ(bits=4, per_channel=True), name="c")(inp)
    h = keras.layers.BatchNormalization(name="bn")(h)
    h = Q.LSQ(bits=8, signed=True, name="preq")(h)            # a quantizer used as a layer
    h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
    out = QL.QuantDense(5, input_quantizer=Q.LSQ(bits=8, signed=True),
                        kernel_quantizer=Q.LSQ(bits=8, per_channel=True), name="d")(h)
    m = keras.Model(inp, out)
    x = rng.normal(size=(64, 8, 8, 3)).astype("float32")
    m(x, training=True)
    m.get_layer("bn").set_weights([rng.uniform(0.5, 2, 16).astype("float32"),
                                   rng.normal(0, .3, 16).astype("float32"),
                                   rng.normal(0, .3, 16).astype("float32"),
                                   rng.uniform(.5, 2, 16).astype("float32")])
    return m, x


def test_global_average_is_one_exact_requantization(rng):
    """GAP becomes a depthwise conv with weights 1/N (held exactly as 127 x 1/(127 N)), so the
    Dense's input quantizer rounds the exact integer sum once (MEAN's kernels round twice)."""
    m, x = _gap_model(rng)
    res = tfcompress.convert(m, target="int8", representative_data=x, io_type="float32")
    assert "MEAN" not in res.info.op_counts and res.info.op_counts["DEPTHWISE_CONV_2D"] == 1
    rows = {(r["layer"], r["role"]): r for r in res.report()["layers"]}
    assert rows[("gap", "average")]["exact"] and rows[("preq", "output")]["exact"]
    grids = {g["layer"]: g for g in grid_agreement(res, x[:16])}
    # 'c' reads an 8-bit grid (no room to widen), so it runs in 16x8: its output integers and
    # the pooled ones (exact sum, one rounding) equal Keras's
    assert rows[("c", "kernel")]["compute_bits"] == "8x16"
    assert grids["preq"]["agreement"] >= 0.999 and grids["d"]["agreement"] >= 0.99
    rep = res.verify(x, latency_runs=0)
    assert rep.agreement >= 0.98 and rep.max_abs_diff < 0.05, rep


def test_relu_layers_and_clamps(rng):
    """A Uniform affine grid on a ReLU output shared with an Add (requantized), and an LSQ
    signed grid fed by the Add (clamped by an explicit MAXIMUM, since ADD has no gauge)."""
    inp = keras.Input((6, 6, 4))
    a = QL.QuantConv2D(8, 3, padding="same", input_quantizer=Q.LSQ(bits=8, signed=True),
                       kernel_quantizer=Q.LSQ(bits=4, per_channel=True), name="a")(inp)
    a = keras.layers.ReLU()(a)
    b = QL.QuantConv2D(8, 3, padding="same", input_quantizer=Q.Uniform(bits=3, symmetric=False, ema_decay=0.9),
                       kernel_quantizer=Q.LSQ(bits=4, per_channel=True), name="b")(a)
    s = keras.layers.Add()([a, b])
    c = QL.QuantConv2D(4, 1, input_quantizer=Q.LSQ(bits=3, signed=True),
                       kernel_quantizer=Q.LSQ(bits=4, per_channel=True), name="c")(s)
    m = keras.Model(inp, keras.layers.Flatten()(c))
    x = rng.normal(size=(64, 6, 6, 4)).astype("float32")
    m(x, training=True)
    res = tfcompress.convert(m, target="int8", representative_data=x, io_type="float32")
    folds = {(r["layer"], r["role"]): r.get("fold") for r in res.report()["layers"]}
    assert "RELU" in folds[("b", "input")] or "requantize" in folds[("b", "input")]
    assert "MAXIMUM" in folds[("c", "input")]
    grids = {g["layer"]: g for g in grid_agreement(res, x[:16])}
    # 'a' feeds both b's quantizer and the Add, so it stays a calibrated int8 tensor and the
    # sum the Add rounds to c's grid is only as exact as 8-bit post-training quantization
    assert grids["c"]["agreement"] >= 0.9 and grids["c"]["max_steps"] <= 1


def test_unquantized_tensor_before_global_average_stays_int16(rng):
    """No quantizer between BatchNorm and the global average (the usual classifier end): that
    tensor is float in Keras. An 8-bit calibrated copy of it would put the pooled value up to
    several levels of the next grid off; kept int16 (the conv in 16x8), the pooled integers
    equal Keras's."""
    inp = keras.Input((8, 8, 3))
    h = QL.QuantConv2D(16, 3, padding="same", input_quantizer=Q.LSQ(bits=4, signed=True),
                       kernel_quantizer=Q.LSQ(bits=4, per_channel=True), name="c")(inp)
    h = keras.layers.BatchNormalization(name="bn")(h)
    h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
    out = QL.QuantDense(5, input_quantizer=Q.LSQ(bits=8, signed=True),
                        kernel_quantizer=Q.LSQ(bits=8, per_channel=True), name="d")(h)
    m = keras.Model(inp, out)
    x = rng.normal(size=(64, 8, 8, 3)).astype("float32")
    m(x, training=True)
    m.get_layer("bn").set_weights([rng.uniform(0.5, 2, 16).astype("float32"),
                                   rng.normal(0, .3, 16).astype("float32"),
                                   rng.normal(0, .3, 16).astype("float32"),
                                   rng.uniform(.5, 2, 16).astype("float32")])
    res = tfcompress.convert(m, target="int8", representative_data=x, io_type="float32")
    rows = {(r["layer"], r["role"]): r for r in res.report()["layers"]}
    assert rows[("c", "kernel")]["compute_bits"] == "8x16"
    assert rows[("c", "kernel")]["stored_bits"] == 8          # 16x8 kernels take int8 filters
    grids = {g["layer"]: g for g in grid_agreement(res, x)}
    assert grids["d"]["agreement"] >= 0.999, grids["d"]
    for runtime in ("litert", "micro"):
        rep = res.verify(x, runtime=runtime, latency_runs=0)
        assert rep.max_abs_diff < 0.02, (runtime, rep)
    # the edgetpu target (no int16) keeps the 8-bit calibrated tensor
    tpu = tfcompress.convert(m, target="edgetpu", representative_data=x, allow_low_bit=True)
    assert {(r["layer"], r["role"]): r for r in tpu.report()["layers"]}[("c", "kernel")][
        "compute_bits"] != "8x16"


def test_compute_16x8_makes_every_grid_exact(rng):
    """compute='16x8': each quantized layer reads its input grid spread over int16 (int64 bias,
    int8 weights), so the file's integers equal Keras's on every grid, in LiteRT and Micro."""
    import pytest

    from tfcompress.errors import ConversionError

    inp = keras.Input((8, 8, 3))
    h = QL.QuantConv2D(16, 3, padding="same", input_quantizer=Q.LSQ(bits=8, signed=True),
                       kernel_quantizer=Q.LSQ(bits=8, per_channel=True), name="stem")(inp)
    h = keras.layers.BatchNormalization(name="bn0")(h)
    for i in range(2):
        h = QL.QuantConv2D(16, 3, padding="same", input_quantizer=Q.LSQ(bits=3, signed=True),
                           kernel_quantizer=Q.LSQ(bits=3, per_channel=True), name=f"h{i}")(h)
        h = keras.layers.BatchNormalization(name=f"bn{i + 1}")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    out = QL.QuantDense(5, input_quantizer=Q.LSQ(bits=8, signed=True),
                        kernel_quantizer=Q.LSQ(bits=8, per_channel=True), name="d")(h)
    m = keras.Model(inp, keras.layers.Softmax()(out))
    x = rng.normal(size=(128, 8, 8, 3)).astype("float32")
    m(x, training=True)
    for layer in m.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.set_weights([rng.uniform(0.5, 2, 16).astype("float32"),
                               rng.normal(0, .3, 16).astype("float32"),
                               rng.normal(0, .3, 16).astype("float32"),
                               rng.uniform(.5, 2, 16).astype("float32")])
    res = tfcompress.convert(m, target="int8", representative_data=x, io_type="float32",
                             compute="16x8")
    rows = [r for r in res.report()["layers"] if r["role"] == "kernel"]
    assert rows and all(r["compute_bits"] == "8x16" and r["stored_bits"] == 8 for r in rows), rows
    grids = {g["layer"]: g["agreement"] for g in grid_agreement(res, x)}
    # grid to grid: exact; the Dense reads a global average of a tensor Keras keeps float
    # (rounded to int16 in the file), so a value on a rounding boundary may still move
    assert [grids[k] for k in ("stem", "h0", "h1")] == [1.0, 1.0, 1.0], grids
    assert grids["d"] >= 0.99, grids
    for runtime in ("litert", "micro"):
        assert res.verify(x, runtime=runtime, latency_runs=0).agreement >= 0.99, runtime
    default = {g["layer"]: g["agreement"] for g in grid_agreement(
        tfcompress.convert(m, target="int8", representative_data=x, io_type="float32"), x)}
    assert min(default[k] for k in ("h0", "h1")) < 1.0, default    # what 16x8 removes
    for bad, match in (({"compute": "int4"}, "compute must be"),
                       ({"compute": "16x8", "pack_weights": "always"}, "int8 filters only"),
                       ({"compute": "16x8", "target": "edgetpu"}, "int8 or micro target")):
        kwargs = {"target": "int8", "representative_data": x, **bad}
        with pytest.raises(ConversionError, match=match):
            tfcompress.convert(m, **kwargs)
