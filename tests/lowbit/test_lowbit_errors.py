"""Bad input to the exact-grid exporter: each refusal is a ConversionError naming the layer."""

import larq as lq
import numpy as np
import pytest

import tfcompress
from tfcompress import layers as QL
from tfcompress import quantizers as Q
from tfcompress._keras import keras
from tfcompress.errors import ConversionError
from tfcompress.mixed_precision import apply, uniform_plan


def _model(layer, shape=(8, 8, 3), flatten=False):
    inp = keras.Input(shape)
    h = keras.layers.Flatten()(inp) if flatten else inp
    out = layer(h)
    m = keras.Model(inp, out)
    m(np.random.default_rng(0).normal(size=(16,) + shape).astype(np.float32), training=True)
    return m


X = np.random.default_rng(1).normal(size=(32, 8, 8, 3)).astype(np.float32)


@pytest.mark.parametrize("target", ["int8", "micro", "edgetpu"])
def test_one_bit_quantizer_refused(target):
    m = _model(QL.QuantConv2D(4, 3, input_quantizer="ste_sign",
                              kernel_quantizer=Q.LSQ(bits=4, per_channel=True), name="binary_in"))
    with pytest.raises(ConversionError, match=r"'binary_in'.*1-bit.*target='lce'"):
        tfcompress.convert(m, target=target, representative_data=X)
    m = _model(QL.QuantConv2D(4, 3, input_quantizer=Q.LSQ(bits=4), kernel_quantizer="ste_sign",
                              name="binary_w"))
    with pytest.raises(ConversionError, match=r"'binary_w'.*1-bit"):
        tfcompress.convert(m, target=target, representative_data=X)


@pytest.mark.parametrize("quantizer,match", [
    (lambda: Q.PowerOfTwo(bits=6, per_channel=True), r"'wide'.*integers span.*more than int8"),
    (lambda: lq.quantizers.DoReFa(k_bit=8, mode="weights"), r"'wide'.*integers span \[-255"),
    (lambda: Q.LSQ(bits=16, per_channel=True), r"'wide'.*more than int8"),
])
def test_bit_width_the_runtime_cannot_store(quantizer, match):
    m = _model(QL.QuantConv2D(4, 3, input_quantizer=Q.LSQ(bits=8), kernel_quantizer=quantizer(),
                              name="wide"))
    with pytest.raises(ConversionError, match=match):
        tfcompress.convert(m, target="int8", representative_data=X, allow_low_bit=True)


def test_packed_storage_refused_where_the_runtime_cannot_run_it():
    m = _model(QL.QuantDense(5, input_quantizer=Q.LSQ(bits=4),
                             kernel_quantizer=Q.LSQ(bits=4, per_channel=True), name="fc4"), flatten=True)
    with pytest.raises(ConversionError, match=r"'fc4' kernel=4 bits \(TFLite Micro does not run "
                                              r"FULLY_CONNECTED with packed.*allow_low_bit=True"):
        tfcompress.convert(m, target="micro", representative_data=X)
    res = tfcompress.convert(m, target="micro", representative_data=X, allow_low_bit=True)
    assert next(r for r in res.report()["layers"] if r["role"] == "kernel")["stored_bits"] == 8
    res = tfcompress.convert(m, target="int8", representative_data=X, pack_weights="always")
    assert next(r for r in res.report()["layers"] if r["role"] == "kernel")["stored_bits"] == 4
    res = tfcompress.convert(m, target="int8", representative_data=X)    # LiteRT runs INT4 FC
    row = next(r for r in res.report()["layers"] if r["role"] == "kernel")
    assert row["stored_bits"] == 4 or any("kept int8 for exactness" in n for n in row["notes"])


def test_activation_grids_that_cannot_be_exported():
    m = _model(QL.QuantConv2D(4, 3, input_quantizer=Q.Uniform(bits=4),
                              kernel_quantizer=Q.LSQ(bits=4), name="dyn"))
    with pytest.raises(ConversionError, match=r"'dyn'.*ema_decay"):
        tfcompress.convert(m, target="int8", representative_data=X)
    m = _model(QL.QuantConv2D(4, 3, input_quantizer=Q.LSQ(bits=4, per_channel=True),
                              kernel_quantizer=Q.LSQ(bits=4), name="perch"))
    with pytest.raises(ConversionError, match=r"'perch'.*per-channel.*per tensor"):
        tfcompress.convert(m, target="int8", representative_data=X)


def test_unsupported_layer_named():
    inp = keras.Input((8, 8, 3))
    h = QL.QuantConv2D(4, 3, input_quantizer=Q.LSQ(bits=4), kernel_quantizer=Q.LSQ(bits=4))(inp)
    h = keras.layers.Conv2DTranspose(2, 3, name="upsample")(h)
    m = keras.Model(inp, h)
    m(X, training=True)
    with pytest.raises(ConversionError, match=r"'upsample' \(Conv2DTranspose\).*supports"):
        tfcompress.convert(m, target="int8", representative_data=X)


def test_plan_that_does_not_match_the_model():
    base = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, name="c1"),
                             keras.layers.Conv2D(4, 3, name="c2"), keras.layers.Flatten(),
                             keras.layers.Dense(3, name="d")])
    plan = uniform_plan(base, 4, keep_first_last=None)
    qmodel = apply(base, plan)
    tfcompress.convert(qmodel, target="int8", representative_data=X, plan=plan)   # matches
    with pytest.raises(ConversionError, match=r"'c1'.*kernel is not quantized.*apply"):
        tfcompress.convert(base, target="int8", representative_data=X, plan=plan)
    other = uniform_plan(base, 2, keep_first_last=None)
    with pytest.raises(ConversionError, match=r"'c1'.*plan says 2 bits.*has 4"):
        tfcompress.convert(qmodel, target="int8", representative_data=X, plan=other)
    other = uniform_plan(base, 4, keep_first_last=None)
    other.layers.append(dict(other.layers[0], name="ghost"))
    with pytest.raises(ConversionError, match=r"'ghost'.*does not have"):
        tfcompress.convert(qmodel, target="int8", representative_data=X, plan=other)
    partial = uniform_plan(base, 4, keep_first_last=None)
    partial.layers = partial.layers[:2]
    with pytest.raises(ConversionError, match=r"'d' has a 4-bit kernel but is not in the"):
        tfcompress.convert(qmodel, target="int8", representative_data=X, plan=partial)
    with pytest.raises(ConversionError, match="plan= applies"):
        tfcompress.convert(qmodel, target="float32", plan=plan)


def test_pack_weights_option_validated():
    m = _model(QL.QuantConv2D(4, 3, input_quantizer=Q.LSQ(bits=4), kernel_quantizer=Q.LSQ(bits=4)))
    with pytest.raises(ConversionError, match="pack_weights"):
        tfcompress.convert(m, target="int8", representative_data=X, pack_weights="yes")


def test_grid_beyond_the_int8_container_is_refused():
    """An LSQ+ offset of several steps moves the grid's zero point outside int8: refused with
    the tensor named, instead of a file LiteRT cannot load."""
    import numpy as np
    import pytest

    import tfcompress
    from tfcompress import layers as QL
    from tfcompress import quantizers as Q
    from tfcompress._keras import keras
    from tfcompress.errors import ConversionError

    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 3))
    h = QL.QuantConv2D(8, 3, padding="same", input_quantizer=Q.LSQ(bits=8, signed=True),
                       kernel_quantizer=Q.LSQ(bits=8, per_channel=True), name="stem")(inp)
    h = QL.QuantConv2D(8, 3, padding="same", input_quantizer=Q.LSQPlus(bits=4),
                       kernel_quantizer=Q.LSQ(bits=4, per_channel=True), name="c")(h)
    m = keras.Model(inp, keras.layers.Flatten()(h))
    x = np.random.default_rng(0).normal(size=(64, 8, 8, 3)).astype("float32")
    m(x, training=True)
    offset = [w for w in m.get_layer("c").weights if "offset" in w.name][0]
    offset.assign(np.full(offset.shape, 5.0, np.float32))      # many steps
    with pytest.raises(ConversionError, match="zero point .* outside int8"):
        tfcompress.convert(m, target="int8", representative_data=x, allow_low_bit=True)
