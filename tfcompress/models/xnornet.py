"""XNOR-Net (Rastegari, Ordonez, Redmon, Farhadi; ECCV 2016, arXiv 1603.05279).

Every body convolution is a :class:`tfcompress.layers.XNORConv2D`: ``ste_sign`` inputs, weights
``alpha_c sign(W_c)`` with ``alpha_c = mean|W_c|`` and the paper's gradient, and (by default)
the activation scale ``K`` (mean ``|I|`` over channels, box-filtered) multiplied into the
output. Blocks use the paper's order ``BN -> BinActiv -> BinConv -> Pool`` so pooling sees real
conv outputs; the first convolution (followed by BN and ReLU, as in the paper) and the
classifier stay real.

- ``imagenet=True``: the AlexNet layout of the paper / larq-zoo (conv11x11/4 96, maxpool,
  5x5 256, maxpool, 3x3 384-384-256, maxpool, two binary 4096 "fully connected" layers,
  real classifier).
- CIFAR (default): the VGG-small layout used for XNOR-Net on CIFAR-10 (128-128-256-256-512-512
  3x3 convolutions with a max-pool after every second one, a binary 1024 "fully connected"
  layer, real classifier).

The binary fully connected layers are written as convolutions over the whole feature map
(then 1x1), the exact equivalent of Flatten + Dense, because Larq Compute Engine binarizes
convolutions but not Dense layers. ``width`` scales every channel count (the first layer has
``width`` channels: 96 for ImageNet and 128 for CIFAR in the paper's sizes).
"""

from tfcompress._keras import keras
from tfcompress.layers.xnor import XNORConv2D
from tfcompress.models._common import bn, check_int, resolve_image_args

_CIFAR_FC = (1024,)
_IMAGENET_FC = (4096, 4096)


def _xnor(filters, kernel, name, input_scaling, padding="same"):
    return XNORConv2D(filters, kernel, padding=padding, pad_values=1.0 if padding == "same" else 0.0,
                      use_bias=False, input_scaling=input_scaling, name=name)


def XNORNet(*, input_shape=None, num_classes=None, width=None, imagenet=False,
            input_scaling=True, classifier_activation="softmax", name=None):
    """XNOR-Net as a plain Keras model (see the module docstring for the two layouts).

    Args:
        input_shape: ``(H, W, C)``; default (32, 32, 3), or (224, 224, 3) with ``imagenet``.
        num_classes: default 10, or 1000 with ``imagenet``.
        width: channels of the first layer; default 128 (CIFAR) / 96 (ImageNet); every other
            layer is scaled by the same factor.
        imagenet: AlexNet layout instead of VGG-small.
        input_scaling: multiply the XNOR activation scale ``K`` (False gives BWN-style
            binary layers without ``K``, as larq-zoo).
        classifier_activation: ``"softmax"`` or ``None`` (logits).
    """
    base = 96 if imagenet else 128
    width = base if width is None else check_int(width, "width")

    def ch(c):
        return max(1, int(round(c * width / base)))

    input_shape, num_classes = resolve_image_args(input_shape, num_classes, imagenet,
                                                  min_size=57 if imagenet else 8)
    inputs = keras.Input(input_shape)
    if imagenet:
        x = keras.layers.Conv2D(ch(96), 11, strides=4, padding="same", use_bias=False,
                                name="conv1")(inputs)
        x = bn("conv1_bn")(x)
        x = keras.layers.ReLU(name="conv1_relu")(x)
        x = keras.layers.MaxPool2D(3, strides=2, name="pool1")(x)
        body = ((256, 5, "pool"), (384, 3, None), (384, 3, None), (256, 3, "pool"))
        fcs = _IMAGENET_FC
    else:
        x = keras.layers.Conv2D(ch(128), 3, padding="same", use_bias=False, name="conv1")(inputs)
        x = bn("conv1_bn")(x)
        x = keras.layers.ReLU(name="conv1_relu")(x)
        body = ((128, 3, "pool"), (256, 3, None), (256, 3, "pool"), (512, 3, None), (512, 3, "pool"))
        fcs = _CIFAR_FC
    for i, (filters, kernel, pool) in enumerate(body):
        x = bn(f"xnor{i + 2}_bn")(x)
        x = _xnor(ch(filters), kernel, f"xnor{i + 2}", input_scaling)(x)
        if pool:
            x = (keras.layers.MaxPool2D(3, strides=2, name=f"pool{i + 2}") if imagenet
                 else keras.layers.MaxPool2D(2, name=f"pool{i + 2}"))(x)
    for j, units in enumerate(fcs):
        x = bn(f"fc{j + 1}_bn")(x)
        kernel = tuple(x.shape[1:3]) if j == 0 else 1      # whole map, then 1x1
        x = _xnor(ch(units), kernel, f"fc{j + 1}", input_scaling, padding="valid")(x)
    x = bn("fc_out_bn")(x)
    x = keras.layers.ReLU(name="fc_out_relu")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(num_classes, name="classifier")(x)
    if classifier_activation is not None:
        x = keras.layers.Activation(classifier_activation, name=f"classifier_{classifier_activation}")(x)
    return keras.Model(inputs, x, name=name or ("xnornet_alexnet" if imagenet else "xnornet_vgg_small"))


__all__ = ["XNORNet"]
