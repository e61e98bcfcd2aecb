"""Small models for the pruning tests (28x28x1 MNIST inputs)."""

from tfcompress._keras import keras

L = keras.layers


def sequential_cnn():
    return keras.Sequential([
        keras.Input((28, 28, 1)), L.Conv2D(8, 3), L.BatchNormalization(), L.ReLU(),
        L.MaxPool2D(2), L.Conv2D(16, 3, activation="relu"), L.MaxPool2D(2), L.Flatten(),
        L.Dense(32, activation="relu"), L.Dropout(0.1), L.Dense(10), L.Softmax(),
    ], name="seq_cnn")


def concat_cnn():
    i = keras.Input((28, 28, 1))
    a = L.Conv2D(8, 3, padding="same", activation="relu", name="branch_a")(i)
    b = L.Conv2D(8, 5, padding="same", name="branch_b")(i)
    b = L.Activation("relu")(L.BatchNormalization()(b))
    c = L.Concatenate()([a, b])
    c = L.DepthwiseConv2D(3, depth_multiplier=2, name="dw")(c)
    c = L.MaxPool2D(2)(c)
    d = L.Conv2D(16, 3, activation="relu", name="head")(c)
    o = L.Dense(10, name="logits")(L.GlobalAveragePooling2D()(d))
    return keras.Model(i, o, name="concat_cnn")


def residual_cnn(preact_bn=False):
    """Two residual blocks (identity, then projection); ``preact_bn`` puts a BN after an Add."""
    i = keras.Input((28, 28, 1))
    s = L.ReLU()(L.BatchNormalization()(L.Conv2D(16, 3, padding="same", name="stem")(i)))
    h = L.ReLU()(L.BatchNormalization()(L.Conv2D(16, 3, padding="same", name="b1_c1")(s)))
    h = L.BatchNormalization()(L.Conv2D(16, 3, padding="same", name="b1_c2")(h))
    a = L.Add(name="add1")([s, h])
    if preact_bn:
        a = L.BatchNormalization(name="post_add_bn")(a)
    a = L.ReLU()(a)
    h = L.ReLU()(L.BatchNormalization()(L.Conv2D(32, 3, strides=2, padding="same",
                                                 name="b2_c1")(a)))
    h = L.BatchNormalization()(L.Conv2D(32, 3, padding="same", name="b2_c2")(h))
    sc = L.BatchNormalization()(L.Conv2D(32, 1, strides=2, name="b2_proj")(a))
    a = L.ReLU()(L.Add(name="add2")([sc, h]))
    o = L.Dense(10, name="logits")(L.GlobalAveragePooling2D()(a))
    return keras.Model(i, o, name="residual_cnn")


MODELS = {"sequential": sequential_cnn, "concat": concat_cnn, "residual": residual_cnn,
          "residual_preact_bn": lambda: residual_cnn(preact_bn=True)}
