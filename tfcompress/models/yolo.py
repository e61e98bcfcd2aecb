"""TinyYOLO: a small anchor-free, single-scale YOLO-style detector.

Design (not a published network; it follows YOLOX/FCOS-style anchor-free assignment on one
stride-8 grid, sized for small inputs such as 64x64 multi-digit MNIST canvases)::

    input (H, W, C), H and W multiples of 8
    backbone  conv3x3 w/1 | conv3x3 2w/2, 2w | conv3x3 4w/2, 4w | conv3x3 8w/2, 8w
    head      conv1x1 8w -> BN -> act -> conv1x1 (5 + num_classes), with bias
    output    (N, H/8, W/8, 5 + num_classes) raw values per cell:
              [tx, ty, tw, th, objectness logit, class logits...]

A cell at row ``i``, column ``j`` predicts one box: centre ``((j + sigmoid(tx)) * 8,
(i + sigmoid(ty)) * 8)``, size ``(exp(tw) * 8, exp(th) * 8)`` pixels; score of class ``c`` =
``sigmoid(obj) * softmax(cls)_c``. Decoding, NMS, the training loss and target assignment
live in :mod:`tfcompress.detection`; the model itself is a plain convolutional network (no
decoding ops), so it converts to int8 TFLite or LCE like any classifier.

``backbone=``:

- ``"float"``: real conv -> BN -> activation (SiLU by default, the activation whose
  unbalanced distribution Q-YOLO's histogram calibration targets).
- ``"bireal"`` / ``"dabnn"`` / ``"asda"``: a real stem (conv3x3 -> BN) then six binary 3x3
  convolutions with one real shortcut each (Bi-Real topology, AvgPool + real 1x1 downsampling
  shortcuts): larq Bi-Real convolutions, :class:`~tfcompress.layers.DAConv2D` (card 6.2 [D]) or
  :class:`~tfcompress.layers.ASDAConv2D` (card 6.3 [A/D]). The head stays real, as the ASDA
  card keeps detector heads in full precision; convert with ``target="lce"``.
"""

from tfcompress._keras import keras
from tfcompress.models._common import bn, binary_conv, check_choice, check_int, real_shortcut
from tfcompress.layers.asda import ASDAConv2D
from tfcompress.layers.dabnn import DAConv2D

STRIDE = 8
BACKBONES = ("float", "bireal", "dabnn", "asda")
# (channel multiple of width, stride) of the backbone after the first layer
_PLAN = ((2, 2), (2, 1), (4, 2), (4, 1), (8, 2), (8, 1))


def _binary_factory(backbone):
    if backbone == "bireal":
        return lambda f, s, n: binary_conv(f, 3, s, input_quantizer="approx_sign",
                                           kernel_quantizer="magnitude_aware_sign", name=n)
    if backbone == "dabnn":
        return lambda f, s, n: DAConv2D(f, 3, strides=s, padding="same", reduction=8, name=n)
    return lambda f, s, n: ASDAConv2D(f, 3, strides=s, padding="same", name=n)


def TinyYOLO(*, input_shape=(64, 64, 1), num_classes=10, width=16, backbone="float",
             activation="silu", name=None):
    """The detector described in the module docstring.

    Args:
        input_shape: ``(H, W, C)`` with H and W multiples of 8.
        num_classes: object classes.
        width: channels of the first layer (the backbone has w, 2w, 4w, 8w channels).
        backbone: ``"float"``, ``"bireal"``, ``"dabnn"`` or ``"asda"``.
        activation: activation of the real layers (``"silu"``, ``"relu"``, ...).

    Returns:
        A tf_keras ``Model`` with output ``(N, H/8, W/8, 5 + num_classes)``.
    """
    check_choice(backbone, "backbone", BACKBONES)
    check_int(num_classes, "num_classes")
    check_int(width, "width")
    input_shape = tuple(input_shape)
    if (len(input_shape) != 3 or not all(isinstance(d, int) and d > 0 for d in input_shape)
            or input_shape[0] % STRIDE or input_shape[1] % STRIDE):
        raise ValueError(f"input_shape must be (H, W, C) with H and W positive multiples of "
                         f"{STRIDE} (the detector's stride), got {input_shape!r}.")
    act = keras.activations.get(activation)      # fails early on an unknown name

    def conv_bn_act(x, filters, kernel, strides, n):
        x = keras.layers.Conv2D(filters, kernel, strides=strides, padding="same",
                                use_bias=False, name=f"{n}_conv")(x)
        x = bn(f"{n}_bn")(x)
        return keras.layers.Activation(act, name=f"{n}_act")(x)

    inputs = keras.Input(input_shape, name="image")
    if backbone == "float":
        x = conv_bn_act(inputs, width, 3, 1, "stem")
        for i, (mult, strides) in enumerate(_PLAN):
            x = conv_bn_act(x, mult * width, 3, strides, f"layer{i + 1}")
    else:
        x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False, name="stem_conv")(inputs)
        x = bn("stem_bn")(x)
        make = _binary_factory(backbone)
        for i, (mult, strides) in enumerate(_PLAN):
            n = f"layer{i + 1}"
            sc = real_shortcut(x, mult * width, strides, n)
            y = bn(f"{n}_bn")(make(mult * width, strides, f"{n}_bconv")(x))
            x = keras.layers.Add(name=f"{n}_add")([y, sc])
    x = conv_bn_act(x, 8 * width, 1, 1, "head")
    outputs = keras.layers.Conv2D(5 + num_classes, 1, name="head_out")(x)
    return keras.Model(inputs, outputs, name=name or f"tiny_yolo_{backbone}")


__all__ = ["BACKBONES", "STRIDE", "TinyYOLO"]
