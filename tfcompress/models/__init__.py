"""Model zoo: binary image classifiers, a 1-bit WaveNet for audio and a tiny YOLO detector.

Every constructor is keyword-only and returns a plain tf_keras ``Model`` that trains with
``model.fit``, saves as ``.keras`` and converts with ``tfcompress.convert`` (``target="lce"``
for the binarized ones).

============================  ====================================================  =========
constructor                   method                                                source
============================  ====================================================  =========
:func:`BinaryResNet`          binary ResNet-18/34 (one shortcut per two convs)      baseline
:func:`BiRealNet`             Bi-Real Net-18/34 (Liu et al., ECCV 2018)             paper
:func:`XNORNet`               XNOR-Net, AlexNet / VGG-small (Rastegari et al. 2016)  paper
:func:`DABNN`                 data-adaptive amplitudes (card 6.2)                   [D]
:func:`ASDANet`               amplitude suppression + direction activation (6.3)    [A/D]
:func:`BinaryWaveNet`         1-bit WaveNet, Bi-Real or PCNN binarization (6.1)     [D]
:func:`TinyYOLO`              anchor-free single-scale YOLO-style detector          design
============================  ====================================================  =========
"""

from tfcompress.models.asda import ASDAConv2D, ASDANet
from tfcompress.models.dabnn import DABNN, DAConv2D
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
           "DABNN", "DAConv2D", "GatedActivation", "TinyYOLO", "XNORNet"]
