"""ASDA classifier (card 6.3 reconstruction [A/D]): the Bi-Real topology with every binary
convolution a :class:`tfcompress.layers.ASDAConv2D` (amplitude suppression and direction
activation; Xu et al., EMDL'20 workshop, doi 10.1145/3410338.3412340). The layer's docstring
holds the equations and what is reconstructed.
"""

from tfcompress._keras import keras
from tfcompress.layers.asda import ASDAConv2D
from tfcompress.models._common import (
    check_int, classifier_head, per_conv_shortcut_body, resnet_stem, resolve_image_args,
)


def ASDANet(*, input_shape=None, num_classes=None, depth=18, width=64, suppression=1e-4,
            amplitude_decay=1e-4, imagenet=False, classifier_activation="softmax", name=None):
    """ASDA classifier: the Bi-Real-18/34 topology (see :func:`tfcompress.models.BiRealNet`)
    with every binary convolution an :class:`ASDAConv2D` (card 6.3 reconstruction [A/D]).

    Args: as :func:`tfcompress.models.BiRealNet`, plus ``suppression`` (lambda) and
    ``amplitude_decay`` (rho) of the amplitude-suppression loss.
    """
    check_int(width, "width")
    input_shape, num_classes = resolve_image_args(input_shape, num_classes, imagenet,
                                                  min_size=32 if imagenet else 8)
    inputs = keras.Input(input_shape)
    x = resnet_stem(inputs, width, imagenet)
    x = per_conv_shortcut_body(x, depth, width, lambda f, s, n: ASDAConv2D(
        f, 3, strides=s, padding="same", suppression=suppression,
        amplitude_decay=amplitude_decay, name=n))
    outputs = classifier_head(x, num_classes, classifier_activation)
    return keras.Model(inputs, outputs, name=name or f"asdanet{depth}")


__all__ = ["ASDANet"]
