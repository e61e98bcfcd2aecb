"""Small LCE-converted Keras models for the kernel tests, and the comparison against LCE.

Every model is converted by LCE's own converter, so the tests see exactly the op attributes,
filter packing and thresholds that real binarized models produce. The reference is LCE's
interpreter with its reference kernels (``lce_kernel="reference"``: the only LCE kernel that
supports every attribute combination, e.g. zero padding with int8 output).
"""

import functools

import numpy as np

import larq as lq
from tfcompress._keras import keras, tf

L = keras.layers
BINARY = dict(input_quantizer="ste_sign", kernel_quantizer="ste_sign",
              kernel_constraint="weight_clip", use_bias=False)


def kernels_or_skip():
    import pytest

    from tfcompress import _kernels

    if not _kernels.available():
        pytest.skip(f"tfcompress kernels unavailable: {_kernels.unavailable_reason()}")
    return _kernels


def randomize_bn(model, rng):
    """Random BatchNorm statistics (including negative gammas) so thresholds and multipliers
    take both signs."""
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):
            weights = []
            for i, w in enumerate(layer.get_weights()):
                if i == 0:      # gamma: both signs
                    v = rng.uniform(0.3, 1.5, w.shape) * rng.choice([-1.0, 1.0], w.shape)
                elif i == 3:    # moving variance
                    v = rng.uniform(0.5, 2.0, w.shape)
                else:           # beta, moving mean
                    v = rng.normal(0.0, 3.0, w.shape)
                weights.append(v.astype("float32"))
            layer.set_weights(weights)
    return model


def randomize_kernels(model, rng):
    for layer in model.layers:
        if isinstance(layer, lq.layers.QuantConv2D):
            layer.set_weights([rng.uniform(-1, 1, w.shape).astype("float32")
                               for w in layer.get_weights()])
    return model


def fake_quant():
    return L.Lambda(lambda x: tf.quantization.fake_quant_with_min_max_args(x, -3.0, 3.0))


def conv_model(cfg, *, output="float", int8=False):
    """One binary conv (``cfg``: h, w, cin, cout, k, stride, dilation, padding, pad_values,
    activation) followed by BatchNorm; ``output`` = "float" (BN fused into the conv's float
    output), "sign" (a sign activation after BN: the conv writes bitpacked output, then
    LceDequantize) or "pool" (BN, max-pool, sign: LceBMaxPool2d on the bitpacked output)."""
    layers = [keras.Input((cfg["h"], cfg["w"], cfg["cin"]))]
    if int8:
        layers.append(fake_quant())
    layers += [
        lq.layers.QuantConv2D(cfg["cout"], cfg["k"], strides=cfg["stride"],
                              dilation_rate=cfg["dilation"], padding=cfg["padding"],
                              pad_values=float(cfg["pad_values"]),
                              activation=cfg.get("activation"), groups=cfg.get("groups", 1),
                              **BINARY),
        L.BatchNormalization(),
    ]
    if output == "pool":
        layers.append(L.MaxPool2D(cfg["pool"], strides=cfg["pool_stride"],
                                  padding=cfg["pool_padding"]))
    if output in ("sign", "pool"):
        layers.append(L.Activation(lq.quantizers.SteSign()))
    if int8:
        layers.append(fake_quant())
    return keras.Sequential(layers)


def convert(model, *, int8=False):
    import larq_compute_engine as lce

    if int8:
        return lce.convert_keras_model(model, inference_input_type=tf.int8,
                                       inference_output_type=tf.int8)
    return lce.convert_keras_model(model)


@functools.lru_cache(maxsize=None)
def _cached(key):
    cfg, output, int8, seed = key
    cfg = dict(cfg)
    rng = np.random.default_rng(seed)
    keras.utils.set_random_seed(seed)
    model = randomize_kernels(randomize_bn(conv_model(cfg, output=output, int8=int8), rng), rng)
    return convert(model, int8=int8), model


def build(cfg, *, output="float", int8=False, seed=0):
    """(flatbuffer, keras model), cached per configuration."""
    return _cached((tuple(sorted(cfg.items())), output, int8, seed))


def inputs(shape, n, rng, scale=2.0):
    x = rng.normal(0.0, scale, (n,) + tuple(shape)).astype("float32")
    x.reshape(-1)[:: 7] = 0.0   # exact zeros: LCE maps 0 to +1
    return x


def run_both(fb, x, **kwargs):
    from tfcompress.runtime import Interpreter

    ref = Interpreter(fb, runtime="lce", lce_kernel="reference").predict(x)
    ours = Interpreter(fb, runtime="tfcompress", **kwargs).predict(x)
    return ours, ref
