"""Shared pieces of tfcompress quantizers: STE building blocks, validation, lazy init.

Every quantizer is a larq ``Quantizer`` (a Keras layer, so it can own variables), declares its
bit width as ``precision``, round-trips through ``get_config``/``from_config`` and is registered
as Keras-serializable under the ``tfcompress`` package.
"""

import larq as lq

from tfcompress._distribute import across_replicas, replica_count, replica_invariant
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


def check_nonnegative(value, name):
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not value >= 0:
        raise ValueError(f"{name} must be a non-negative number, got {value!r}.")
    return float(value)


class BaseQuantizer(lq.quantizers.Quantizer):
    """Base class: input validation hooks and data-dependent initialization.

    Subclasses that need an initial value computed from the first tensor they see (LSQ's step
    size, TRQ's scale) call :meth:`lazy_init` inside ``call``: the first call (in training or
    not) assigns the variables from that tensor, later calls leave them alone. The
    ``initialized`` flag is a saved, non-trainable weight, so a reloaded model does not
    re-initialize.

    Under a multi-replica ``tf.distribute`` strategy each replica sees its own shard of the
    batch: quantizers pass their batch statistics through :meth:`init_statistic`, which
    combines them over the replicas (:func:`tfcompress._distribute.across_replicas`), so every
    replica initializes from the global batch, as a single-process run would. Without it each
    copy of the variable would keep its own shard's value (TensorFlow lets a replica assign
    its own copy of a variable with ``aggregation=NONE``) and the copies would diverge.
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

    def _pending_replica_init(self, training):
        """Whether this graph, traced in a multi-replica replica context, must initialize.

        False when the quantizer was already initialized when the graph was traced (then the
        traced step holds no init op and no collective), or for an inference graph."""
        if tf.executing_eagerly() or replica_count() <= 1:
            return False
        if isinstance(training, (bool, int)) and not training:
            return False
        with tf.init_scope():
            return not bool(self.initialized.numpy())

    def init_statistic(self, value, reduce="mean", training=None, inputs=None):
        """A batch statistic for :meth:`lazy_init`: combined over the replicas (``"mean"``,
        ``"min"`` or ``"max"``) when a multi-replica training graph still has to initialize,
        else ``value`` unchanged. ``inputs``: the tensor it was computed from; a kernel (a
        variable's value) is the same on every replica and needs no combining."""
        if self._pending_replica_init(training) and not replica_invariant(inputs):
            return across_replicas(value, reduce)
        return value

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
        if replica_count() > 1 and not self._pending_replica_init(training):
            return []      # initialized before this multi-replica graph was traced

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
