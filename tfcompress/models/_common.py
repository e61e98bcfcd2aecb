"""Shared pieces of the model zoo: argument checks, the real stems, binary conv factories and
classifier heads. Every zoo constructor is keyword-only and returns a plain tf_keras Model."""

from tfcompress._keras import keras
from tfcompress.layers.quant import QuantConv2D

BN_MOMENTUM = 0.9
# basic blocks per stage of the ResNet family (two 3x3 convolutions each)
RESNET_BLOCKS = {10: (1, 1, 1, 1), 18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}


def check_int(value, name, minimum=1):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}.")
    return value


def check_choice(value, name, choices):
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}.")
    return value


def resolve_image_args(input_shape, num_classes, imagenet, *, min_size):
    """Defaults per variant ((32, 32, 3)/10 for CIFAR, (224, 224, 3)/1000 for ImageNet) and
    checks: three dimensions, spatial size at least ``min_size`` (the network's total stride)."""
    if input_shape is None:
        input_shape = (224, 224, 3) if imagenet else (32, 32, 3)
    if num_classes is None:
        num_classes = 1000 if imagenet else 10
    input_shape = tuple(input_shape)
    if len(input_shape) != 3 or not all(isinstance(d, int) and d > 0 for d in input_shape):
        raise ValueError(f"input_shape must be (height, width, channels) of positive ints, got "
                         f"{input_shape!r}.")
    if min(input_shape[:2]) < min_size:
        raise ValueError(f"input_shape {input_shape} is too small: this network downsamples by "
                         f"{min_size}, so height and width must be at least {min_size}.")
    check_int(num_classes, "num_classes", 2 if num_classes != 1 else 1)
    return input_shape, num_classes


def resnet_blocks(depth):
    if depth not in RESNET_BLOCKS:
        raise ValueError(f"depth must be one of {sorted(RESNET_BLOCKS)}, got {depth!r}.")
    return RESNET_BLOCKS[depth]


def bn(name=None, **kwargs):
    return keras.layers.BatchNormalization(momentum=BN_MOMENTUM, name=name, **kwargs)


def resnet_stem(x, width, imagenet, *, relu=False, name="stem"):
    """The real-valued first layer: ImageNet ``conv7x7/2 -> BN -> maxpool3x3/2`` (official Bi-Real
    code and larq-zoo), CIFAR ``conv3x3/1 -> BN``. No ReLU by default: the next layer is a sign,
    which needs the negative values (a ReLU would make every first-block input +1)."""
    if imagenet:
        x = keras.layers.Conv2D(width, 7, strides=2, padding="same", use_bias=False,
                                name=f"{name}_conv")(x)
        x = bn(f"{name}_bn")(x)
        if relu:
            x = keras.layers.ReLU(name=f"{name}_relu")(x)
        return keras.layers.MaxPool2D(3, strides=2, padding="same", name=f"{name}_pool")(x)
    x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = bn(f"{name}_bn")(x)
    if relu:
        x = keras.layers.ReLU(name=f"{name}_relu")(x)
    return x


def real_shortcut(x, filters, strides, name):
    """Bi-Real/larq-zoo downsampling shortcut: AvgPool 2x2/2 -> real 1x1 conv -> BN (identity
    when the shape does not change)."""
    if strides == 1 and x.shape[-1] == filters:
        return x
    if strides != 1:
        x = keras.layers.AveragePooling2D(2, strides=strides, padding="same",
                                          name=f"{name}_sc_pool")(x)
    x = keras.layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_sc_conv")(x)
    return bn(f"{name}_sc_bn")(x)


def binary_conv(filters, kernel_size=3, strides=1, *, input_quantizer, kernel_quantizer, name,
                padding="same", dilation_rate=1):
    """A larq binary convolution that LCE turns into ``LceBconv2d`` (``pad_values=1`` so the
    padded border stays +-1)."""
    return QuantConv2D(filters, kernel_size, strides=strides, padding=padding,
                       pad_values=1.0 if padding == "same" else 0.0, dilation_rate=dilation_rate,
                       use_bias=False, input_quantizer=input_quantizer,
                       kernel_quantizer=kernel_quantizer, kernel_constraint="weight_clip",
                       name=name)


def classifier_head(x, num_classes, classifier_activation, name="head"):
    """Global average pool -> real Dense -> activation (first and last layers stay real)."""
    x = keras.layers.GlobalAveragePooling2D(name=f"{name}_pool")(x)
    x = keras.layers.Dense(num_classes, name=f"{name}_dense")(x)
    if classifier_activation is not None:
        x = keras.layers.Activation(classifier_activation, name=f"{name}_{classifier_activation}")(x)
    return x


def stage_plan(depth, width, convs_per_unit):
    """``[(filters, strides)]`` for each shortcut unit of the four ResNet stages (widths
    ``width * (1, 2, 4, 8)``, stride 2 at the start of stages 2-4); a unit holds
    ``convs_per_unit`` 3x3 convolutions (2: ResNet basic block, 1: Bi-Real block)."""
    plan = []
    for stage, blocks in enumerate(resnet_blocks(depth)):
        filters = width * 2 ** stage
        for i in range(blocks * 2 // convs_per_unit):
            plan.append((filters, 2 if (stage > 0 and i == 0) else 1))
    return plan


def per_conv_shortcut_body(x, depth, width, make_conv):
    """Bi-Real topology with any binary convolution: every unit is
    ``BN(make_conv(filters, strides, name)(x)) + real_shortcut(x)``."""
    for i, (filters, strides) in enumerate(stage_plan(depth, width, 1)):
        name = f"block{i + 1}"
        sc = real_shortcut(x, filters, strides, name)
        y = make_conv(filters, strides, f"{name}_bconv")(x)
        y = bn(f"{name}_bn")(y)
        x = keras.layers.Add(name=f"{name}_add")([y, sc])
    return x
