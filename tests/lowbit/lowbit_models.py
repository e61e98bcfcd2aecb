"""Small real-data models for the low-bit export tests (28x28x1 MNIST inputs).

A float CNN is trained once; a quantized copy per method takes its weights and is fine-tuned for
a few steps (the LSQ recipe: start from the float model). First and last layers are quantized
at 8 bits (LSQ), so every tensor of the file is on a trained grid.
"""

import larq as lq
import numpy as np

from tfcompress import layers as QL
from tfcompress import quantizers as Q
from tfcompress._keras import keras

L = keras.layers
RELU_METHODS = ("float", "pact", "dorefa", "affine", "power_of_two", "ste_tern", "trq")


def method_quantizers(method, bits):
    """(kernel quantizer, input quantizer) of a hidden layer for ``method`` at ``bits``."""
    a8 = Q.LSQ(bits=8, signed=True)
    return {
        "uniform": lambda: (Q.Uniform(bits=bits, per_channel=True), Q.Uniform(bits=bits, ema_decay=0.9)),
        "affine": lambda: (Q.Uniform(bits=bits, symmetric=False, per_channel=True),
                           Q.Uniform(bits=bits, symmetric=False, ema_decay=0.9)),
        "power_of_two": lambda: (Q.PowerOfTwo(bits=bits, per_channel=True), a8),
        "dorefa": lambda: (lq.quantizers.DoReFa(k_bit=bits, mode="weights"),
                           lq.quantizers.DoReFa(k_bit=bits, mode="activations")),
        "pact": lambda: (lq.quantizers.DoReFa(k_bit=bits, mode="weights"), Q.PACT(bits=bits, init=3.0)),
        "lsq": lambda: (Q.LSQ(bits=bits, per_channel=True), Q.LSQ(bits=bits, signed=True)),
        "lsq_plus": lambda: (Q.LSQ(bits=bits, per_channel=True), Q.LSQPlus(bits=bits)),
        "ste_tern": lambda: (Q.ste_tern(), a8),
        "trq": lambda: (Q.TRQ(residuals=1, per_channel=True), a8),
    }[method]()


def build(method="float", bits=(4, 4), widths=(8, 16, 16)):
    """Stem (8-bit LSQ) -> two hidden convs at ``bits`` -> 8-bit LSQ Dense head -> softmax."""
    q = method != "float"
    relu = method in RELU_METHODS
    inp = keras.Input((28, 28, 1))

    def conv(f, spec, name):
        if not q:
            return L.Conv2D(f, 3, padding="same", use_bias=False, name=name)
        kq, iq = spec
        return QL.QuantConv2D(f, 3, padding="same", use_bias=False, kernel_quantizer=kq,
                              input_quantizer=iq, name=name)

    h = conv(widths[0], (Q.LSQ(bits=8, per_channel=True), Q.LSQ(bits=8, signed=True)), "stem")(inp)
    h = L.BatchNormalization(momentum=0.9, name="stem_bn")(h)
    h = L.ReLU(name="stem_relu")(h)
    h = L.MaxPool2D(2)(h)
    for i, (f, b) in enumerate(zip(widths[1:], bits)):
        spec = method_quantizers(method, b) if q else None
        h = conv(f, spec, f"hidden{i}")(h)
        h = L.BatchNormalization(momentum=0.9, name=f"hidden{i}_bn")(h)
        if relu:
            h = L.ReLU(name=f"hidden{i}_relu")(h)
        h = L.MaxPool2D(2)(h)
    h = L.Flatten()(h)
    dense = QL.QuantDense(10, kernel_quantizer=Q.LSQ(bits=8, per_channel=True),
                          input_quantizer=Q.LSQ(bits=8, signed=True), name="head") if q \
        else L.Dense(10, name="head")
    return keras.Model(inp, L.Softmax(name="probs")(dense(h)), name=f"{method}_{'_'.join(map(str, bits))}")


def transfer(src, dst):
    """Copy the float weights of ``src`` into the same-named layers of ``dst``."""
    for layer in dst.layers:
        try:
            other = src.get_layer(layer.name)
        except ValueError:
            continue
        own = {w.name.split("/")[-1]: w for w in layer.weights if "quantizer" not in w.name}
        for w in other.weights:
            key = w.name.split("/")[-1]
            if key in own and tuple(own[key].shape) == tuple(w.shape):
                own[key].assign(w)


def train_float(x, y, epochs=2, seed=0):
    keras.utils.set_random_seed(seed)
    model = build("float")
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy", ["accuracy"])
    model.fit(x, y, batch_size=64, epochs=epochs, verbose=0)
    return model


def quantized(float_model, method, bits, x, y, steps=40, seed=0):
    """The float model's quantized copy, fine-tuned ``steps`` steps on real data."""
    keras.utils.set_random_seed(seed)
    model = build(method, bits)
    model(x[:256], training=True)            # build and initialize every quantizer
    transfer(float_model, model)
    model(x[:256], training=False)
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", ["accuracy"])
    idx = np.arange(min(len(x), steps * 64))
    model.fit(x[idx], y[idx], batch_size=64, epochs=1, verbose=0)
    return model
