"""larq layers that TF-MOT can prune, through its ``PrunableLayer`` protocol.

TF-MOT's ``prune_low_magnitude`` only wraps layers from its registry or layers that declare
``get_prunable_weights()``; larq's ``QuantConv2D``/``QuantDense`` are neither (STACK.md
trap 2). ``tfcompress.layers.QuantConv2D``/``QuantDense`` keep larq's signature and behaviour
and add the protocol method (the latent, full-precision kernel); :func:`make_prunable` swaps
plain larq layers for them.

Note on 1-bit kernels: TF-MOT zeroes *latent* weights; a binarizing kernel quantizer then maps
each zero to ``sign(0) = +1``, so unstructured pruning of a binary kernel changes which weights
are +1 but does not make the 1-bit model smaller or sparser. It is useful for layers whose
quantizer keeps 0 (ternary / multi-bit) and for the float layers of a mixed binary model.
"""

import larq as lq

from tfcompress._keras import keras
from tfcompress.layers.quant import QuantConv2D, QuantDense


# tfcompress's own larq subclasses implement the protocol (tfcompress.layers.quant); these
# names are kept for pruning users.
PrunableQuantConv2D = QuantConv2D
PrunableQuantDense = QuantDense


PRUNABLE_EQUIVALENTS = {lq.layers.QuantConv2D: PrunableQuantConv2D,
                        lq.layers.QuantDense: PrunableQuantDense}


def prunable_equivalent(layer):
    """The prunable class for ``layer`` if it is a plain larq layer that has one, else None."""
    return PRUNABLE_EQUIVALENTS.get(type(layer))


def make_prunable(model):
    """An independent copy of ``model`` whose larq ``QuantConv2D``/``QuantDense`` layers are
    the prunable subclasses (same config, same weights); other layers are copied as they are.

    ``model`` itself is never modified.
    """
    def clone(layer):
        cls = prunable_equivalent(layer) or type(layer)
        return cls.from_config(layer.get_config())

    out = keras.models.clone_model(model, clone_function=clone)
    out.set_weights(model.get_weights())
    return out
