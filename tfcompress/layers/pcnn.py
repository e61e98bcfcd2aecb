"""PCNN: projection convolutional networks (Gu, Li, Zhang, Han, Cao, Liu, Doermann; AAAI 2019,
arXiv 1811.12755), following the book's section 3.5 equations as the method card gives them.

- :class:`PCNNConv2D` holds latent kernels ``C`` (kh, kw, c_in, filters/J) and J learnable
  projection matrices ``W_j`` (kh, kw), duplicated across channels. Binary mode:
  ``C_hat_j = a sign(W_j o C)`` with ``a`` the layer's mean ``|C|`` (forward uses the mean,
  as the book notes; it is stop-gradiented), an STE with indicator ``1{|W_j o C| <= 1}``; the
  J kernels are concatenated on the output axis (``filters/J`` each, so the width is
  ``filters``) and applied to the sign-binarized input. Ternary mode (the first stage of the
  progressive optimization): ``Omega = {-Delta, 0, +Delta}``, ``Delta = 0.7 E|W_j o C|``
  (TWN), same STE.
- :class:`PCNNTrainer` wraps a model and trains it with ``L = L_S + L_P``, the projection loss
  ``L_P = lambda/2 sum_j ||C_hat_j - W_j o (C + eta dC_hat_j)||^2`` with
  ``dC_hat_j = dL_S/dC_hat_j`` at the current step (two nested tapes; ``C_hat`` and
  ``dC_hat`` are constants inside ``L_P``), so autodiff gives the book's ``dC`` and ``dW``.
- :class:`ProgressiveBinarization` switches every PCNN layer from ternary to binary at a
  chosen epoch (the ternary stage initializes the binary one, same variables).

Not implemented from the paper: the optional center loss, and separate learning rates for
``C`` and ``W`` (use one optimizer, or a larq ``CaseOptimizer``).
"""

from tfcompress._keras import keras, tf
from tfcompress.layers.quant import pad_same
from tfcompress.quantizers.base import hard_sign

BINARY, TERNARY = 1, 0


def _pair(value, name):
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and v >= 1 for v in pair):
        raise ValueError(f"{name} must be a positive int or a pair of them, got {value!r}.")
    return pair


def _ste(value, pre, clip=1.0):
    """``value`` forward; identity gradient into ``pre`` where ``|pre| <= clip``."""
    inside = tf.cast(tf.abs(pre) <= clip, pre.dtype)
    return tf.stop_gradient(value) + inside * (pre - tf.stop_gradient(pre))


@keras.utils.register_keras_serializable(package="tfcompress")
class PCNNConv2D(keras.layers.Layer):
    """Projection convolution with ``projections`` (J) learnable projections.

    Args:
        filters: output channels; must be divisible by ``projections``.
        kernel_size, strides, padding, dilation_rate: as ``Conv2D`` (padding of the binary
            input uses +1 when ``padding="same"`` so it stays binary).
        projections: J in {1, 2, 4, ...}.
        binarize_input: sign-binarize the input (ste_sign); False for a first layer.
        mode: ``"binary"`` or ``"ternary"`` (progressive optimization starts ternary).
    """

    def __init__(self, filters, kernel_size, strides=1, padding="valid", dilation_rate=1,
                 projections=1, binarize_input=True, mode="binary",
                 kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        if not isinstance(projections, int) or projections < 1:
            raise ValueError(f"projections must be a positive int, got {projections!r}.")
        if not isinstance(filters, int) or filters < 1 or filters % projections:
            raise ValueError(f"filters ({filters!r}) must be a positive multiple of projections "
                             f"({projections}).")
        if mode not in ("binary", "ternary"):
            raise ValueError(f"mode must be 'binary' or 'ternary', got {mode!r}.")
        if padding not in ("valid", "same"):
            raise ValueError(f"padding must be 'valid' or 'same', got {padding!r}.")
        self.filters = filters
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.strides = _pair(strides, "strides")
        self.dilation_rate = _pair(dilation_rate, "dilation_rate")
        self.padding = padding
        self.projections = projections
        self.binarize_input = bool(binarize_input)
        self.initial_mode = mode
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape):
        kh, kw = self.kernel_size
        self.kernel = self.add_weight(
            name="kernel", shape=(kh, kw, input_shape[-1], self.filters // self.projections),
            initializer=self.kernel_initializer, constraint=lambda v: tf.clip_by_value(v, -1.0, 1.0))
        self.projection = self.add_weight(name="projection", shape=(self.projections, kh, kw, 1, 1),
                                          initializer="ones")
        self.mode = self.add_weight(
            name="mode", shape=(), dtype=tf.int32, trainable=False,
            initializer=keras.initializers.Constant(BINARY if self.initial_mode == "binary" else TERNARY))
        super().build(input_shape)

    def tfcompress_precisions(self):
        mode = int(self.mode.numpy()) if self.built else (BINARY if self.initial_mode == "binary" else TERNARY)
        bits = {"kernel": 1 if mode == BINARY else 2}
        if self.binarize_input:
            bits["input"] = 1
        return bits

    def projected_kernels(self):
        """The J quantized kernels ``C_hat_j`` for the current mode (a list of tensors)."""
        c = self.kernel
        a = tf.stop_gradient(tf.reduce_mean(tf.abs(c)))
        out = []
        for j in range(self.projections):
            pre = self.projection[j] * c
            binary = a * hard_sign(pre)
            delta = 0.7 * tf.stop_gradient(tf.reduce_mean(tf.abs(pre)))
            ternary = delta * tf.cast(pre > delta, pre.dtype) - delta * tf.cast(pre < -delta, pre.dtype)
            value = tf.where(tf.equal(self.mode, BINARY), binary, ternary)
            out.append(_ste(value, pre))
        return out

    def call(self, inputs):
        x = inputs
        if self.binarize_input:
            import larq as lq

            x = lq.quantizers.ste_sign(x)
        padding = self.padding.upper()
        if self.padding == "same" and self.binarize_input:
            x = pad_same(x, self.kernel_size, self.strides, self.dilation_rate, 1.0)
            padding = "VALID"
        kernels = self.projected_kernels()
        self._last_kernels = kernels   # read by PCNNTrainer inside the same traced step
        kernel = tf.concat(kernels, axis=-1) if len(kernels) > 1 else kernels[0]
        return tf.nn.conv2d(x, kernel, strides=self.strides, padding=padding,
                            dilations=self.dilation_rate)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size,
                "strides": self.strides, "padding": self.padding,
                "dilation_rate": self.dilation_rate, "projections": self.projections,
                "binarize_input": self.binarize_input, "mode": self.initial_mode,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer)}


def pcnn_layers(model):
    from tfcompress.inspection import iter_layers

    return [layer for layer in iter_layers(model) if isinstance(layer, PCNNConv2D)]


class PCNNTrainer(keras.Model):
    """Train ``model`` with the PCNN projection loss. ``trainer.fit(...)`` updates ``model``'s
    weights; save, evaluate and convert ``model`` itself (the trainer adds no weights).

    Args:
        model: a Keras model containing :class:`PCNNConv2D` layers.
        lam: lambda of ``L_P`` (the paper sweeps 1e-3..1e-5 and uses 1e-4).
        eta: step ``eta`` inside ``L_P``.
    """

    def __init__(self, model, lam=1e-4, eta=1e-2, **kwargs):
        super().__init__(**kwargs)
        self.model = model
        self.layers_ = pcnn_layers(model)
        if not self.layers_:
            raise ValueError("PCNNTrainer: the model has no PCNNConv2D layer.")
        if lam < 0 or eta < 0:
            raise ValueError("lam and eta must be >= 0.")
        self.lam = float(lam)
        self.eta = float(eta)
        self.projection_loss_tracker = keras.metrics.Mean(name="projection_loss")

    def call(self, inputs, training=None):
        return self.model(inputs, training=training)

    @property
    def metrics(self):
        return super().metrics + [self.projection_loss_tracker]

    def projection_loss(self, kernels, grads):
        loss = 0.0
        i = 0
        for layer in self.layers_:
            c = layer.kernel
            for j in range(layer.projections):
                target = layer.projection[j] * (c + self.eta * tf.stop_gradient(grads[i]))
                loss += 0.5 * self.lam * tf.reduce_sum(tf.square(tf.stop_gradient(kernels[i]) - target))
                i += 1
        return loss

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as outer:
            with tf.GradientTape() as inner:
                y_pred = self.model(x, training=True)
                ls = self.compiled_loss(y, y_pred, sample_weight, regularization_losses=self.model.losses)
                kernels = [k for layer in self.layers_ for k in layer._last_kernels]
            dk = inner.gradient(ls, kernels)
            dk = [tf.zeros_like(k) if g is None else g for k, g in zip(kernels, dk)]
            lp = self.projection_loss(kernels, dk)
            loss = ls + lp
        variables = self.model.trainable_variables
        self.optimizer.apply_gradients(zip(outer.gradient(loss, variables), variables))
        self.compiled_metrics.update_state(y, y_pred, sample_weight)
        self.projection_loss_tracker.update_state(lp)
        return {m.name: m.result() for m in self.metrics}

    def test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        y_pred = self.model(x, training=False)
        self.compiled_loss(y, y_pred, sample_weight, regularization_losses=self.model.losses)
        self.compiled_metrics.update_state(y, y_pred, sample_weight)
        return {m.name: m.result() for m in self.metrics if m is not self.projection_loss_tracker}


class ProgressiveBinarization(keras.callbacks.Callback):
    """PCNN's progressive optimization: every PCNNConv2D runs ternary until ``switch_epoch``,
    then binary (the ternary-trained latent kernels initialize the binary stage).

    Raises ``ValueError`` at the start of training if the model has no PCNNConv2D layer.
    """

    def __init__(self, switch_epoch):
        super().__init__()
        if not isinstance(switch_epoch, int) or switch_epoch < 0:
            raise ValueError(f"switch_epoch must be a non-negative int, got {switch_epoch!r}.")
        self.switch_epoch = switch_epoch

    def on_train_begin(self, logs=None):
        model = self.model.model if isinstance(self.model, PCNNTrainer) else self.model
        self._layers = pcnn_layers(model)
        if not self._layers:
            raise ValueError("ProgressiveBinarization: the model has no PCNNConv2D layer.")

    def on_epoch_begin(self, epoch, logs=None):
        mode = BINARY if epoch >= self.switch_epoch else TERNARY
        for layer in self._layers:
            layer.mode.assign(mode)
