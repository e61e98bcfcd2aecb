"""Model zoo: binary image classifiers, a 1-bit WaveNet for audio and a tiny YOLO detector.

Every constructor is keyword-only and returns a plain tf_keras ``Model`` that trains with
``model.fit``, saves as ``.keras`` and converts with ``tfcompress.convert`` (``target="lce"``
for the binarized ones).

- :func:`BinaryResNet`: binary ResNet-18/34, one real shortcut per two binary convs (baseline)
- :func:`BiRealNet`: Bi-Real Net-18/34 (Liu et al., ECCV 2018)
- :func:`XNORNet`: XNOR-Net, AlexNet or VGG-small layout (Rastegari et al., ECCV 2016)
- :func:`DABNN`: data-adaptive channel and spatial amplitudes (card 6.2, design proposal [D])
- :func:`ASDANet`: amplitude suppression + direction activation (card 6.3, [A/D])
- :func:`BinaryWaveNet`: 1-bit WaveNet with Bi-Real or PCNN binarization (card 6.1, [D])
- :func:`TinyYOLO`: anchor-free single-scale YOLO-style detector (float or binary backbone)
- larq-zoo's ImageNet BNNs (:mod:`tfcompress.models.larqzoo`, architectures only):
  :func:`QuickNet`, :func:`QuickNetSmall`, :func:`QuickNetLarge`, :func:`BinaryResNetE18`,
  :func:`BinaryDenseNet28`, :func:`BinaryDenseNet37`, :func:`RealToBinaryNet` (``LARQ_ZOO``)
"""

from tfcompress.layers.asda import ASDAConv2D  # the layer lives in tfcompress.layers
from tfcompress.models.asda import ASDANet
from tfcompress.layers.dabnn import DAConv2D
from tfcompress.models.dabnn import DABNN
from tfcompress.models.larqzoo import (
    LARQ_ZOO, BinaryDenseNet28, BinaryDenseNet37, BinaryResNetE18, QuickNet, QuickNetLarge,
    QuickNetSmall, RealToBinaryNet,
)
from tfcompress.models.resnet import BiRealNet, BinaryResNet
from tfcompress.models.wavenet import BinaryWaveNet, GatedActivation
from tfcompress.models.xnornet import XNORNet
from tfcompress.models.yolo import TinyYOLO

# name -> constructor, for tests generated from the registry
CLASSIFIERS = {
    "BinaryResNet": BinaryResNet, "BiRealNet": BiRealNet, "XNORNet": XNORNet, "DABNN": DABNN,
    "ASDANet": ASDANet,
}

__all__ = ["ASDAConv2D", "ASDANet", "BiRealNet", "BinaryResNet", "BinaryWaveNet", "CLASSIFIERS",
           "DABNN", "DAConv2D", "GatedActivation", "TinyYOLO", "XNORNet",
           "LARQ_ZOO", "BinaryDenseNet28", "BinaryDenseNet37", "BinaryResNetE18", "QuickNet",
           "QuickNetLarge", "QuickNetSmall", "RealToBinaryNet"]
