"""``FilterMask``: the per-channel mask holder of structured (filter) pruning.

A ``FilterMask`` sits after a prunable layer (or after the BatchNormalization / activation /
dropout chain that directly follows it) and multiplies the activations channel by channel:

.. math::  y_{\\cdot, c} = m_c \\, s_c \\, x_{\\cdot, c}

with ``mask`` :math:`m \\in \\{0, 1\\}^C` (non-trainable, written by
:class:`~tfcompress.pruning.FilterPruning`) and, for the soft-mask methods (DFS, CoGD), a
trainable ``scale`` :math:`s \\in \\mathbb{R}^C` (initialised to 1). Because the mask acts on
the activations, a masked channel outputs exactly 0 whatever its weights are (also for binary
layers, whose ``sign(0) = +1`` kernels could not be zeroed), and no gradient reaches the
masked filter. The pruning state (``mask``, ``scale``, ``pruning_step``) are ordinary layer
weights, so ``ModelCheckpoint`` / ``model.save`` keep them and ``load_model`` restores them.
"""

from tfcompress._keras import keras, tf

__all__ = ["BlockMask", "FilterMask", "block_masks", "filter_masks"]


@keras.utils.register_keras_serializable(package="tfcompress")
class FilterMask(keras.layers.Layer):
    """Multiply the last (channel) axis by a 0/1 mask and an optional trainable scale.

    Args:
        target: name of the layer whose output filters this mask prunes.
        soft: add a trainable per-channel ``scale`` (soft mask, used by DFS and CoGD).
        **kwargs: Keras layer arguments (``name``, ...).

    Weights: ``mask`` (C,) float32, non-trainable, ones; ``scale`` (C,) float32, trainable,
    ones (only with ``soft=True``); ``pruning_step`` int64 scalar, non-trainable, ``-1`` until
    a pruning callback has run.
    """

    def __init__(self, target, soft=False, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(target, str) or not target:
            raise ValueError(f"FilterMask needs the name of the layer it masks, got {target!r}.")
        self.target = target
        self.soft = bool(soft)

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None:
            raise ValueError(f"FilterMask {self.name!r} needs a known channel dimension.")
        self.mask = self.add_weight("mask", shape=(channels,), initializer="ones",
                                    trainable=False)
        self.scale = None
        if self.soft:
            self.scale = self.add_weight("scale", shape=(channels,), initializer="ones",
                                         trainable=True)
        self.pruning_step = self.add_weight("pruning_step", shape=(), dtype=tf.int64,
                                            initializer=keras.initializers.Constant(-1),
                                            trainable=False)
        super().build(input_shape)

    def call(self, inputs):
        m = tf.cast(self.mask, inputs.dtype)
        if self.scale is not None:
            m = m * tf.cast(self.scale, inputs.dtype)
        return inputs * m

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"target": self.target, "soft": self.soft})
        return config

    @property
    def channels(self):
        return int(self.mask.shape[0])

    def effective(self):
        """The per-channel factor ``mask * scale`` as a numpy array."""
        m = self.mask.numpy()
        return m * self.scale.numpy() if self.scale is not None else m


def filter_masks(model):
    """``{target layer name: FilterMask}`` of a model (descending into no nested models)."""
    return {layer.target: layer for layer in model.layers if isinstance(layer, FilterMask)}


@keras.utils.register_keras_serializable(package="tfcompress")
class BlockMask(keras.layers.Layer):
    """One scalar mask on the residual branch of a block (DFS block pruning, card 5.3):

    .. math::  x_{b+1} = x_b + m_b\\, s_b\\, F_b(x_b)

    with ``mask`` :math:`m_b \\in \\{0, 1\\}` (non-trainable, written by the pruning criterion)
    and, with ``soft=True``, a trainable ``scale`` :math:`s_b` (initialised to 1) that DFS
    drives to exactly 0 with FISTA. It sits between the branch and the ``Add``; a block whose
    mask is 0 adds exactly 0, so :func:`~tfcompress.pruning.shrink` removes its branch and
    keeps the shortcut without changing the output.

    Args:
        block: name of the ``Add`` layer that closes the block.
        soft: add the trainable ``scale``.
        **kwargs: Keras layer arguments.
    """

    def __init__(self, block, soft=True, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(block, str) or not block:
            raise ValueError(f"BlockMask needs the name of the Add layer of its block, got "
                             f"{block!r}.")
        self.block = block
        self.soft = bool(soft)

    def build(self, input_shape):
        self.mask = self.add_weight("mask", shape=(), initializer="ones", trainable=False)
        self.scale = None
        if self.soft:
            self.scale = self.add_weight("scale", shape=(), initializer="ones", trainable=True)
        super().build(input_shape)

    def call(self, inputs):
        m = tf.cast(self.mask, inputs.dtype)
        if self.scale is not None:
            m = m * tf.cast(self.scale, inputs.dtype)
        return inputs * m

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "block": self.block, "soft": self.soft}

    def effective(self):
        """``mask * scale`` as a Python float."""
        m = float(self.mask.numpy())
        return m * float(self.scale.numpy()) if self.scale is not None else m


def block_masks(model):
    """``{Add layer name: BlockMask}`` of a model (no nested models)."""
    return {layer.block: layer for layer in model.layers if isinstance(layer, BlockMask)}
