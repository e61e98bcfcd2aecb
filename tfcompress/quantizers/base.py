"""Shared pieces of tfcompress quantizers: STE building blocks, validation, lazy init.

Every quantizer is a larq ``Quantizer`` (a Keras layer, so it can own variables), declares its
bit width as ``precision``, round-trips through ``get_config``/``from_config`` and is registered
as Keras-serializable under the ``tfcompress`` package.
"""

import larq as lq

from tfcompress._keras import keras, tf


def register(cls):
    """Register a quantizer class as Keras-serializable (``tfcompress>ClassName``)."""
    return keras.utils.register_keras_serializable(package="tfcompress")(cls)


def round_ste(x):
    """``round(x)`` forward, identity backward."""
    return x + tf.stop_gradient(tf.round(x) - x)


def grad_scale(x, scale):
    """``x`` forward, ``scale * dL/dx`` backward (LSQ's gradient scaling)."""
    return x * scale + tf.stop_gradient(x - x * scale)


def hard_sign(x):
    """sign with sign(0) = +1 (never 0), like ``larq.math.sign``."""
    return lq.math.sign(x)


def check_bits(bits, name="bits", low=1, high=16):
    if isinstance(bits, bool) or not isinstance(bits, int) or not low <= bits <= high:
        raise ValueError(f"{name} must be an integer in [{low}, {high}], got {bits!r}.")
    return bits


def check_positive(value, name):
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}.")
    return float(value)


class BaseQuantizer(lq.quantizers.Quantizer):
    """Base class: input validation hooks and data-dependent initialization.

    Subclasses that need an initial value computed from the first tensor they see (LSQ's step
    size, TRQ's scale) call :meth:`lazy_init` inside ``call``: the first call (in training or
    not) assigns the variables from that tensor, later calls leave them alone. The
    ``initialized`` flag is a saved, non-trainable weight, so a reloaded model does not
    re-initialize.
    """

    precision = None

    def __init__(self, per_channel=False, axis=-1, **kwargs):
        if not isinstance(per_channel, bool):
            raise ValueError(f"per_channel must be True or False, got {per_channel!r}.")
        if not isinstance(axis, int) or isinstance(axis, bool):
            raise ValueError(f"axis must be an int, got {axis!r}.")
        self.per_channel = per_channel
        self.axis = axis
        super().__init__(**kwargs)

    # ------------------------------------------------------------------------- helpers
    def channel_axis(self, shape):
        """The per-channel axis, checked against ``shape`` (a clear error if it does not fit)."""
        rank = len(shape)
        if rank == 0:
            raise ValueError(f"{type(self).__name__}: per_channel needs a tensor, got a scalar.")
        axis = self.axis if self.axis >= 0 else rank + self.axis
        if not 0 <= axis < rank:
            raise ValueError(
                f"{type(self).__name__}: axis={self.axis} is out of range for a tensor of rank "
                f"{rank} (shape {tuple(shape)})."
            )
        if shape[axis] is None:
            raise ValueError(
                f"{type(self).__name__}: axis={self.axis} of shape {tuple(shape)} is unknown; "
                "per-channel quantization needs a static channel dimension (use it on weights "
                "or on the channel axis of activations)."
            )
        return axis

    def param_shape(self, shape):
        """Shape of a per-tensor (``()``) or per-channel parameter broadcastable to ``shape``."""
        if not self.per_channel:
            return ()
        axis = self.channel_axis(shape)
        return tuple(shape[axis] if i == axis else 1 for i in range(len(shape)))

    def reduce_axes(self, shape):
        if not self.per_channel:
            return list(range(len(shape)))
        axis = self.channel_axis(shape)
        return [i for i in range(len(shape)) if i != axis]

    def add_init_flag(self):
        self.initialized = self.add_weight(
            name="initialized", shape=(), dtype=tf.bool, trainable=False,
            initializer=keras.initializers.Constant(False),
        )

    def lazy_init(self, assignments, training=None):
        """Data-dependent initialization: assign ``[(variable, value), ...]`` once.

        Runs on the first eager call or the first training step. Inference graphs
        (``training=False``: ``predict``, TFLite/LCE conversion) contain no init op, so they
        stay stateless and constant-foldable. Returns the control dependencies to use.
        """
        if tf.executing_eagerly():
            if not bool(self.initialized.numpy()):
                for v, value in assignments:
                    v.assign(tf.cast(value, v.dtype))
                self.initialized.assign(True)
            return []
        if training is None:
            training = keras.backend.learning_phase()
        if isinstance(training, (bool, int)) and not training:
            return []

        def init():
            ops = [v.assign(tf.cast(value, v.dtype)) for v, value in assignments]
            with tf.control_dependencies(ops):
                return tf.identity(self.initialized.assign(True))

        def skip():
            return tf.identity(self.initialized)

        def maybe():
            return tf.cond(self.initialized, skip, init)

        return [tf.__internal__.smart_cond.smart_cond(training, maybe, skip)]

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "per_channel": self.per_channel, "axis": self.axis}
