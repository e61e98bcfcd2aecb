"""Quantized and binary Keras layers of the book's chapter 2 and 4 methods.

All keep the Keras/larq constructor signature (only their new arguments differ) and
implement TF-MOT's ``PrunableLayer`` protocol where they own a kernel.
"""

from tfcompress.layers.asda import ASDAConv2D
from tfcompress.layers.dabnn import DAConv2D
from tfcompress.layers.pcnn import PCNNConv2D, PCNNTrainer, ProgressiveBinarization
from tfcompress.layers.quant import (
    QuantConv1D, QuantConv2D, QuantDense, QuantDepthwiseConv2D, QuantSeparableConv2D,
)
from tfcompress.layers.reactnet import LearnableBias, RPReLU, bireal_block
from tfcompress.layers.sabnn import SAConv2D
from tfcompress.layers.scaled_binary import BONNConv2D, FoldsPrunedInputs, RBConv2D
from tfcompress.layers.xnor import XNORConv2D, XNORDense
from tfcompress.quantizers import RSign

__all__ = [
    "ASDAConv2D", "BONNConv2D", "DAConv2D", "FoldsPrunedInputs", "RBConv2D", "LearnableBias", "PCNNConv2D", "PCNNTrainer", "ProgressiveBinarization", "QuantConv1D",
    "QuantConv2D", "QuantDense", "QuantDepthwiseConv2D", "QuantSeparableConv2D", "RPReLU",
    "RSign", "SAConv2D", "XNORConv2D", "XNORDense", "bireal_block",
]
