"""DA-BNN classifier (card 6.2 design proposal [D]; Zhao et al.): the Bi-Real topology with
every binary convolution a :class:`tfcompress.layers.DAConv2D` (data-adaptive channel and
spatial amplitudes). The layer's docstring holds the equations and what is reconstructed.
"""

from tfcompress._keras import keras
from tfcompress.layers.dabnn import DAConv2D
from tfcompress.models._common import (
    check_int, classifier_head, per_conv_shortcut_body, resnet_stem, resolve_image_args,
)


def DABNN(*, input_shape=None, num_classes=None, depth=18, width=64, reduction=16,
          imagenet=False, classifier_activation="softmax", name=None):
    """DA-BNN classifier: the Bi-Real-18/34 topology (a real shortcut around every binary conv,
    AvgPool + real 1x1 downsampling shortcuts, real stem and head, see
    :func:`tfcompress.models.BiRealNet`) with every binary convolution a :class:`DAConv2D`.

    This is the card's design proposal [D] (no primary source was available).

    Args: as :func:`tfcompress.models.BiRealNet`, plus ``reduction`` of the channel branch.
    """
    check_int(width, "width")
    check_int(reduction, "reduction")
    input_shape, num_classes = resolve_image_args(input_shape, num_classes, imagenet,
                                                  min_size=32 if imagenet else 8)
    inputs = keras.Input(input_shape)
    x = resnet_stem(inputs, width, imagenet)
    x = per_conv_shortcut_body(x, depth, width, lambda f, s, n: DAConv2D(
        f, 3, strides=s, padding="same", reduction=reduction, name=n))
    outputs = classifier_head(x, num_classes, classifier_activation)
    return keras.Model(inputs, outputs, name=name or f"dabnn{depth}")


__all__ = ["DABNN"]
