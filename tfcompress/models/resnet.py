"""Binary ResNets: the plain binary ResNet baseline and Bi-Real Net.

Both follow the ResNet-18/34 layout (He et al. 2016) with real-valued first and last layers:

- ``imagenet=True``: stem ``conv7x7/2 (64) -> BN -> maxpool3x3/2`` (no ReLU before the sign), four stages of
  64/128/256/512 channels (strides 1, 2, 2, 2), global average pool, real Dense. With
  ``width=64`` and 1000 classes the trainable parameters equal torchvision's ResNet-18
  (11,689,512) and ResNet-34 (21,797,672), as in the Bi-Real paper.
- CIFAR (default, 32x32): stem ``conv3x3/1 -> BN`` (no ReLU: the next sign needs negative
  values, no max-pool), same four stages, so the last map is 4x4.

:func:`BinaryResNet` puts one real shortcut around every *two* binary convolutions (the
"binary ResNet" baseline of Bi-Real Net), :func:`BiRealNet` puts one around *every* binary
convolution (Liu et al., "Bi-Real Net", ECCV 2018, arXiv 1808.00278), with ApproxSign
activations and magnitude-aware weights. Downsampling shortcuts are AvgPool 2x2/2 -> real
1x1 conv -> BN in both (official Bi-Real code and larq-zoo), so they differ only in the
shortcut density and the quantizers.
"""

from tfcompress._keras import keras
from tfcompress.layers.reactnet import bireal_block
from tfcompress.models._common import (
    binary_conv, bn, check_int, classifier_head, real_shortcut, resnet_stem, stage_plan,
    resolve_image_args,
)


def _binary_basic_block(x, filters, strides, *, input_quantizer, kernel_quantizer, name):
    """``BN(bconv(BN(bconv(x)))) + shortcut(x)``: one real shortcut per two binary convs."""
    sc = real_shortcut(x, filters, strides, name)
    y = binary_conv(filters, 3, strides, input_quantizer=input_quantizer,
                    kernel_quantizer=kernel_quantizer, name=f"{name}_bconv1")(x)
    y = bn(f"{name}_bn1")(y)
    y = binary_conv(filters, 3, 1, input_quantizer=input_quantizer,
                    kernel_quantizer=kernel_quantizer, name=f"{name}_bconv2")(y)
    y = bn(f"{name}_bn2")(y)
    return keras.layers.Add(name=f"{name}_add")([y, sc])


def BinaryResNet(*, input_shape=None, num_classes=None, depth=18, width=64, imagenet=False,
                 input_quantizer="ste_sign", kernel_quantizer="ste_sign",
                 classifier_activation="softmax", name=None):
    """Binary ResNet-18/34 with one real shortcut per two binary convolutions.

    Args:
        input_shape: ``(H, W, C)``; default (32, 32, 3), or (224, 224, 3) with ``imagenet``.
        num_classes: default 10, or 1000 with ``imagenet``.
        depth: 18 or 34 (basic blocks per stage (2, 2, 2, 2) or (3, 4, 6, 3)); 10 gives
            ResNet-10 (1, 1, 1, 1), for quick experiments.
        width: channels of the first stage (64 in the paper; smaller for quick experiments).
        imagenet: ImageNet stem (conv7x7/2 + max-pool) instead of the CIFAR stem (conv3x3/1).
        input_quantizer, kernel_quantizer: binary quantizers of every body convolution
            (BNN's ``ste_sign`` for both by default).
        classifier_activation: ``"softmax"`` or ``None`` (logits).

    Returns:
        A tf_keras ``Model``; convert it with ``tfcompress.convert(model, target="lce")``.
    """
    check_int(width, "width")
    input_shape, num_classes = resolve_image_args(input_shape, num_classes, imagenet,
                                                  min_size=32 if imagenet else 8)
    inputs = keras.Input(input_shape)
    x = resnet_stem(inputs, width, imagenet)
    for i, (filters, strides) in enumerate(stage_plan(depth, width, 2)):
        x = _binary_basic_block(x, filters, strides, input_quantizer=input_quantizer,
                                kernel_quantizer=kernel_quantizer, name=f"block{i + 1}")
    outputs = classifier_head(x, num_classes, classifier_activation)
    return keras.Model(inputs, outputs, name=name or f"binary_resnet{depth}")


def BiRealNet(*, input_shape=None, num_classes=None, depth=18, width=64, imagenet=False,
              classifier_activation="softmax", name=None):
    """Bi-Real Net-18/34: a real shortcut around every binary 3x3 convolution
    (:func:`tfcompress.layers.bireal_block`: ApproxSign input gradient, magnitude-aware weights
    ``mean|W_c| sign(W_c)``, ``weight_clip``, no ReLU after the addition).

    Args: as :func:`BinaryResNet` (without the quantizer choice).

    >>> model = BiRealNet(input_shape=(32, 32, 3), num_classes=10, width=8)
    >>> model.output_shape
    (None, 10)
    """
    check_int(width, "width")
    input_shape, num_classes = resolve_image_args(input_shape, num_classes, imagenet,
                                                  min_size=32 if imagenet else 8)
    inputs = keras.Input(input_shape)
    x = resnet_stem(inputs, width, imagenet)
    for i, (filters, strides) in enumerate(stage_plan(depth, width, 1)):
        x = bireal_block(x, filters, strides, momentum=0.9, name=f"block{i + 1}")
    outputs = classifier_head(x, num_classes, classifier_activation)
    return keras.Model(inputs, outputs, name=name or f"birealnet{depth}")


__all__ = ["BiRealNet", "BinaryResNet"]
