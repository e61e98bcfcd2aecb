"""ImageNet binary networks of larq-zoo, written from their published definitions.

The architectures (not the weights) of `larq-zoo <https://github.com/larq/zoo>`_ v2
(``larq_zoo/sota/quicknet.py``, ``larq_zoo/literature/resnet_e.py``, ``densenet.py``,
``real_to_bin_nets.py``), rebuilt layer for layer with the same quantizers, padding, BatchNorm
settings and heads, so that the parameter counts equal the published ones
(:data:`PUBLISHED_PARAMETERS`, checked by the tests). tfcompress cannot depend on larq-zoo (it
pins an old protobuf); the models here are randomly initialised (there is no ``weights``
argument) and are meant for conversion and latency work (``tools/bench_zoo.py``).

- :func:`QuickNet`, :func:`QuickNetSmall`, :func:`QuickNetLarge` (Bannink et al., "Larq
  Compute Engine", MLSys 2021, arXiv 2011.09398): float stem (conv3x3/2, depthwise3x3/2,
  conv1x1), residual blocks ``x + BN(relu(bconv3x3(sign(x))))`` with ``pad_values=1``,
  transitions ``relu -> maxpool2/1 -> blurpool depthwise3x3/2 -> conv1x1 -> BN``.
- :func:`BinaryResNetE18` (Bethge et al., "Back to Simplicity", arXiv 1906.08637): one real
  shortcut per binary 3x3 conv, downsampling shortcut ``avgpool2/2 -> conv1x1 -> BN``.
- :func:`BinaryDenseNet28`, :func:`BinaryDenseNet37` (same paper): ``concat(x,
  bconv3x3(sign(BN(x))))`` with growth rate 64; transitions ``BN -> maxpool2/2 -> relu ->
  conv1x1`` reducing channels by 2.7/2.7/2.2 (28) or 3.3/3.3/4 (37).
- :func:`RealToBinaryNet` (Martinez et al., "Training binary neural networks with
  real-to-binary convolutions", ICLR 2020, arXiv 2003.11535): ``PReLU(bconv(sign(BN(x))) *
  sigmoid(W2 relu(W1 avgpool(BN(x))))) + shortcut``, two such halves per block.

All take ``input_shape`` (default ``(224, 224, 3)``), ``num_classes`` (1000) and
``include_top`` (True: ReLU where the original has it, global average pool as larq-zoo's
``AveragePooling2D(H, W) + Flatten``, Dense, softmax).
"""

import larq as lq
import numpy as np

from tfcompress._keras import keras

L = keras.layers

# Parameters at 224x224x3 / 1000 classes, from the model docstrings of larq-zoo (the
# "Parameters" column), with how larq-zoo counted them: "keras" = ``model.count_params()``
# (every weight, BatchNorm statistics included); "larq" = ``larq.models.ModelProfile(model)
# .weight_count()`` (larq's summary, which counts a BatchNorm's moving mean/variance only when
# the layer has no beta/gamma to fuse them with). The QuickNet rows were added in 2020 from
# larq's summary, the others from Keras; :func:`parameter_count` reproduces either.
PUBLISHED_PARAMETERS = {
    "QuickNetSmall": (12_655_688, "larq"),
    "QuickNet": (13_234_088, "larq"),
    "QuickNetLarge": (23_342_248, "larq"),
    "BinaryResNetE18": (11_699_368, "keras"),
    "BinaryDenseNet28": (5_150_504, "keras"),
    "BinaryDenseNet37": (8_734_120, "keras"),
    "RealToBinaryNet": (11_995_624, "keras"),
}


def parameter_count(model, method="keras"):
    """Parameters of ``model`` counted as larq-zoo did (see :data:`PUBLISHED_PARAMETERS`):
    ``"keras"`` (all weights) or ``"larq"`` (larq's summary convention)."""
    if method == "keras":
        return int(model.count_params())
    if method == "larq":
        return int(lq.models.ModelProfile(model).weight_count())
    raise ValueError(f"method must be 'keras' or 'larq', got {method!r}.")

__all__ = ["BinaryDenseNet28", "BinaryDenseNet37", "BinaryResNetE18", "LARQ_ZOO",
           "PUBLISHED_PARAMETERS", "QuickNet", "QuickNetLarge", "QuickNetSmall",
           "RealToBinaryNet", "parameter_count"]


def _inputs(input_shape):
    shape = tuple(input_shape or (224, 224, 3))
    if len(shape) != 3 or not all(isinstance(d, int) and d > 0 for d in shape):
        raise ValueError(f"input_shape must be (height, width, channels) of positive ints, got "
                         f"{input_shape!r}.")
    if min(shape[:2]) < 32:
        raise ValueError(f"input_shape {shape} is too small: these networks downsample by 32.")
    return keras.Input(shape)


def _check_classes(num_classes):
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}.")


def _global_pool(x):
    """larq-zoo's ``utils.global_pool``: AveragePooling2D over the whole map + Flatten (faster
    than GlobalAveragePooling2D in LCE)."""
    x = L.AveragePooling2D(pool_size=tuple(x.shape[1:3]))(x)
    return L.Flatten()(x)


def _softmax_head(x, num_classes, dense=L.Dense, **dense_kwargs):
    x = _global_pool(x)
    x = dense(num_classes, **dense_kwargs)(x)
    return L.Activation("softmax", dtype="float32")(x)


# ----------------------------------------------------------------------------- QuickNet
def blurpool_initializer(shape, dtype=None):
    """Anti-aliasing filter of Zhang, "Making Convolutional Networks Shift-Invariant Again"
    (arXiv 1904.11486): the normalised outer product of ``[1, 2, 1]`` (or [1, 1], [1, 4, 6, 4,
    1]) per channel, for a ``(k, k, C, 1)`` depthwise kernel."""
    ksize, filters = shape[0], shape[2]
    k = {2: [1, 1], 3: [1, 2, 1], 5: [1, 4, 6, 4, 1]}.get(ksize)
    if k is None:
        raise ValueError("blurpool filter size must be 2, 3 or 5")
    k = np.outer(k, k).astype("float64")
    k = np.repeat((k / k.sum())[..., None], filters, axis=-1)
    return keras.backend.constant(np.reshape(k, shape), dtype=dtype or "float32")


def _quicknet(name, section_blocks, section_filters, input_shape, num_classes, include_top):
    _check_classes(num_classes)
    inputs = _inputs(input_shape)
    sign = lq.quantizers.SteSign(clip_value=1.25)
    clip = lq.constraints.WeightClip(clip_value=1.25)
    f0 = section_filters[0]
    # stem
    x = lq.layers.QuantConv2D(f0 // 4, (3, 3), kernel_initializer="he_normal", padding="same",
                              strides=2, use_bias=False)(inputs)
    x = L.BatchNormalization()(x)
    x = L.Activation("relu")(x)
    x = lq.layers.QuantDepthwiseConv2D((3, 3), padding="same", strides=2, use_bias=False)(x)
    x = L.BatchNormalization(scale=False, center=False)(x)
    x = lq.layers.QuantConv2D(f0, 1, kernel_initializer="he_normal", use_bias=False)(x)
    x = L.BatchNormalization()(x)
    for blocks, filters in zip(section_blocks, section_filters):
        for _ in range(blocks):
            if filters != x.shape[-1]:  # transition block
                x = L.Activation("relu")(x)
                x = L.MaxPool2D(pool_size=2, strides=1)(x)
                x = L.DepthwiseConv2D((3, 3), depthwise_initializer=blurpool_initializer,
                                      padding="same", strides=2, trainable=False,
                                      use_bias=False)(x)
                x = lq.layers.QuantConv2D(filters, (1, 1), kernel_initializer="glorot_normal",
                                          use_bias=False)(x)
                x = L.BatchNormalization(momentum=0.9, epsilon=1e-5)(x)
            residual = x  # residual block
            x = lq.layers.QuantConv2D(
                int(x.shape[-1]), (3, 3), activation="relu", input_quantizer=sign,
                kernel_constraint=clip, kernel_quantizer=sign,
                kernel_initializer="glorot_normal", padding="same", pad_values=1.0,
                use_bias=False)(x)
            x = L.BatchNormalization(momentum=0.9, epsilon=1e-5)(x)
            x = L.Add()([x, residual])
    if include_top:
        x = L.Activation("relu")(x)
        x = _softmax_head(x, num_classes, dense=lq.layers.QuantDense,
                          kernel_initializer="glorot_normal")
    return keras.Model(inputs, x, name=name)


def QuickNet(*, input_shape=None, num_classes=1000, include_top=True):
    """QuickNet (larq-zoo ``sota.QuickNet``): sections of (4, 4, 4, 4) residual blocks with
    64/128/256/512 filters; 13,234,088 parameters.

    Args:
        input_shape: ``(H, W, 3)``, default (224, 224, 3); H and W at least 32.
        num_classes: classifier width (1000).
        include_top: add ReLU, global average pool, Dense and softmax.

    Returns:
        A tf_keras ``Model`` (random weights); ``tfcompress.convert(model, target="lce")``.
    """
    return _quicknet("quicknet", (4, 4, 4, 4), (64, 128, 256, 512), input_shape, num_classes,
                     include_top)


def QuickNetSmall(*, input_shape=None, num_classes=1000, include_top=True):
    """QuickNetSmall (larq-zoo ``sota.QuickNetSmall``): (4, 4, 4, 4) blocks with 32/64/256/512
    filters; 12,655,688 parameters. Args and Returns as :func:`QuickNet`."""
    return _quicknet("quicknet_small", (4, 4, 4, 4), (32, 64, 256, 512), input_shape,
                     num_classes, include_top)


def QuickNetLarge(*, input_shape=None, num_classes=1000, include_top=True):
    """QuickNetLarge (larq-zoo ``sota.QuickNetLarge``): (6, 8, 12, 6) blocks with
    64/128/256/512 filters; 23,342,248 parameters. Args and Returns as :func:`QuickNet`."""
    return _quicknet("quicknet_large", (6, 8, 12, 6), (64, 128, 256, 512), input_shape,
                     num_classes, include_top)


# ---------------------------------------------------------------------- BinaryResNetE18
def BinaryResNetE18(*, input_shape=None, num_classes=1000, include_top=True):
    """Binary ResNet-E 18 (larq-zoo ``literature.BinaryResNetE18``): a real shortcut around
    every binary 3x3 conv (SteSign, clip 1.25, zero padding), stages of 4 such blocks with
    64/128/256/512 filters; ImageNet stem ``conv7x7/2 -> BN -> relu -> maxpool3/2 -> BN``;
    11,699,368 parameters. Args and Returns as :func:`QuickNet`."""
    _check_classes(num_classes)
    inputs = _inputs(input_shape)
    sign = lq.quantizers.SteSign(clip_value=1.25)
    clip = lq.constraints.WeightClip(clip_value=1.25)
    x = L.Conv2D(64, 7, strides=2, padding="same", kernel_initializer="he_normal",
                 use_bias=False)(inputs)
    x = L.BatchNormalization(momentum=0.9, epsilon=1e-5)(x)
    x = L.Activation("relu")(x)
    x = L.MaxPool2D(3, strides=2, padding="same")(x)
    x = L.BatchNormalization(momentum=0.9, epsilon=1e-5)(x)
    for stage, filters in enumerate((64, 128, 256, 512)):
        for layer in range(2 * 2):
            strides = 1 if stage == 0 or layer != 0 else 2
            if x.shape[-1] != filters:
                residual = L.AvgPool2D(pool_size=2, strides=2)(x)
                residual = L.Conv2D(filters, 1, use_bias=False,
                                    kernel_initializer="glorot_normal")(residual)
                residual = L.BatchNormalization(momentum=0.9, epsilon=1e-5)(residual)
            else:
                residual = x
            x = lq.layers.QuantConv2D(filters, 3, strides=strides, padding="same",
                                      input_quantizer=sign, kernel_quantizer=sign,
                                      kernel_constraint=clip, kernel_initializer="glorot_normal",
                                      use_bias=False)(x)
            x = L.BatchNormalization(momentum=0.9, epsilon=1e-5)(x)
            x = L.add([x, residual])
    x = L.Activation("relu")(x)
    if include_top:
        x = _softmax_head(x, num_classes, kernel_initializer="glorot_normal")
    return keras.Model(inputs, x, name="binary_resnet_e_18")


# --------------------------------------------------------------------- BinaryDenseNet
def _densenet(name, layers, reduction, input_shape, num_classes, include_top):
    _check_classes(num_classes)
    inputs = _inputs(input_shape)
    sign = lq.quantizers.SteSign(clip_value=1.3)
    clip = lq.constraints.WeightClip(clip_value=1.3)
    x = L.Conv2D(64, kernel_size=7, strides=2, padding="same", kernel_initializer="he_normal",
                 use_bias=False)(inputs)
    x = L.BatchNormalization(momentum=0.9, epsilon=1e-5)(x)
    x = L.Activation("relu")(x)
    x = L.MaxPool2D(3, strides=2, padding="same")(x)
    for block, n_layers in enumerate(layers):
        for _ in range(n_layers):
            y = L.BatchNormalization(momentum=0.9, epsilon=1e-5)(x)
            y = lq.layers.QuantConv2D(64, kernel_size=3, input_quantizer=sign,
                                      kernel_quantizer=sign, kernel_initializer="glorot_normal",
                                      kernel_constraint=clip, padding="same",
                                      use_bias=False)(y)
            x = L.concatenate([x, y])
        if block < len(layers) - 1:
            x = L.BatchNormalization(momentum=0.9, epsilon=1e-5)(x)
            x = L.MaxPooling2D(2, strides=2)(x)
            x = L.Activation("relu")(x)
            x = L.Conv2D(round(x.shape[-1] // reduction[block] / 32) * 32, kernel_size=1,
                         kernel_initializer="he_normal", use_bias=False)(x)
    x = L.BatchNormalization(momentum=0.9, epsilon=1e-5)(x)
    x = L.Activation("relu")(x)
    if include_top:
        x = _softmax_head(x, num_classes, kernel_initializer="he_normal")
    return keras.Model(inputs, x, name=name)


def BinaryDenseNet28(*, input_shape=None, num_classes=1000, include_top=True):
    """BinaryDenseNet28 (larq-zoo ``literature.BinaryDenseNet28``): dense blocks of (6, 6, 6,
    5) binary 3x3 convs (growth 64, SteSign clip 1.3, zero padding), reductions (2.7, 2.7,
    2.2); 5,150,504 parameters. Args and Returns as :func:`QuickNet`."""
    return _densenet("binary_densenet28", (6, 6, 6, 5), (2.7, 2.7, 2.2), input_shape,
                     num_classes, include_top)


def BinaryDenseNet37(*, input_shape=None, num_classes=1000, include_top=True):
    """BinaryDenseNet37 (larq-zoo ``literature.BinaryDenseNet37``): dense blocks of (6, 8, 12,
    6), reductions (3.3, 3.3, 4); 8,734,120 parameters. Args and Returns as
    :func:`QuickNet`."""
    return _densenet("binary_densenet37", (6, 8, 12, 6), (3.3, 3.3, 4), input_shape,
                     num_classes, include_top)


# --------------------------------------------------------------------- RealToBinaryNet
def RealToBinaryNet(*, input_shape=None, num_classes=1000, include_top=True):
    """Real-to-Binary Net, BNN variant (larq-zoo ``literature.RealToBinaryNet``): stem
    ``conv7x7/2 -> BN -> PReLU -> maxpool3/2``; 8 blocks of two halves
    ``PReLU(bconv3x3(sign(BN(x))) * scale(BN(x))) + shortcut(x)`` where ``scale`` is the
    data-dependent gating ``sigmoid(W2 relu(W1 avgpool(.)))`` (reduction 8) and the shortcut
    is ``avgpool2/2 -> conv1x1 -> BN`` when the channels double (blocks 4, 6, 8);
    BatchNorm momentum 0.99; 11,995,624 parameters. Args and Returns as :func:`QuickNet`."""
    _check_classes(num_classes)
    inputs = _inputs(input_shape)
    mom = 0.99
    x = L.Conv2D(64, kernel_size=7, strides=2, kernel_initializer="glorot_normal",
                 padding="same", use_bias=False)(inputs)
    x = L.BatchNormalization(momentum=mom)(x)
    x = L.PReLU(shared_axes=[1, 2])(x)
    x = L.MaxPool2D(3, strides=2, padding="same")(x)

    def half(x, downsample):
        in_channels = x.shape[-1]
        out_channels = int(in_channels * 2 if downsample else in_channels)
        shortcut = x
        if in_channels != out_channels:
            shortcut = L.AvgPool2D(2, strides=2, padding="same")(x)
            shortcut = L.Conv2D(out_channels, kernel_size=1, kernel_initializer="glorot_normal",
                                use_bias=False)(shortcut)
            shortcut = L.BatchNormalization(momentum=mom)(shortcut)
        conv_input = L.BatchNormalization(momentum=mom)(x)
        conv_output = lq.layers.QuantConv2D(
            out_channels, kernel_size=3, strides=2 if downsample else 1, padding="same",
            input_quantizer="ste_sign", kernel_quantizer="ste_sign",
            kernel_constraint="weight_clip", kernel_initializer="glorot_normal",
            use_bias=False)(conv_input)
        z = _global_pool(conv_input)
        z = L.Dense(int(in_channels // 8), activation="relu", kernel_initializer="he_normal",
                    use_bias=False)(z)
        z = L.Dense(out_channels, activation="sigmoid", kernel_initializer="he_normal",
                    use_bias=False)(z)
        scales = L.Reshape((1, 1, out_channels))(z)
        y = L.Multiply()([conv_output, scales])
        y = L.PReLU(shared_axes=[1, 2])(y)
        return L.Add()([y, shortcut])

    for block in range(2, 10):
        x = half(x, downsample=block % 2 == 0 and block > 3)
        x = half(x, downsample=False)
    if include_top:
        x = _global_pool(x)
        x = L.Dense(num_classes)(x)
        x = L.Softmax(dtype="float32")(x)
    return keras.Model(inputs, x, name="r2b")


# name -> constructor, for tests and benchmarks generated from the registry
LARQ_ZOO = {
    "QuickNetSmall": QuickNetSmall, "QuickNet": QuickNet, "QuickNetLarge": QuickNetLarge,
    "BinaryResNetE18": BinaryResNetE18, "BinaryDenseNet28": BinaryDenseNet28,
    "BinaryDenseNet37": BinaryDenseNet37, "RealToBinaryNet": RealToBinaryNet,
}
