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
  With ``center_weight = gamma > 0`` it adds the paper's optional centre loss
  ``L_C = gamma/2 mean_m ||f_m - c_{y_m}||^2`` on the deep features ``f`` (default: the input
  of the last ``Dense`` layer), with class centres moved by Wen et al.'s (ECCV 2016) rule
  (:class:`tfcompress.losses.CenterLoss`): ``L = L_S + L_P + L_C``.
- :class:`ProgressiveBinarization` switches every PCNN layer from ternary to binary at a
  chosen epoch (the ternary stage initializes the binary one, same variables).

Not implemented from the paper: separate learning rates for ``C`` and ``W`` (use one
optimizer, or a larq ``CaseOptimizer``). The card did not recover ``gamma`` or ``eta``
(their defaults here are ours).
"""

from tfcompress._keras import keras, tf
from tfcompress.layers.quant import bias_and_activation, pad_same
from tfcompress.losses import CenterLoss, with_features
from tfcompress.quantizers.base import hard_sign
from tfcompress.training import Trainer, unwrap

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

    Takes ``Conv2D``'s arguments (same names, order and meaning) plus PCNN's own:

    Args:
        filters: output channels; must be divisible by ``projections``.
        kernel_size, strides, padding, dilation_rate: as ``Conv2D`` (padding of the binary
            input uses +1 when ``padding="same"`` so it stays binary).
        data_format: only ``"channels_last"`` (or None); groups: only 1 — the projected
            binary kernels are applied as one dense convolution, so anything else raises.
        activation, use_bias, bias_initializer, bias_regularizer, bias_constraint,
            activity_regularizer: as ``Conv2D``, applied after the binary convolution
            (default ``use_bias=False``, like larq's binary layers: a BatchNormalization
            usually follows).
        kernel_initializer, kernel_regularizer: for the latent kernels ``C``.
        kernel_constraint: for ``C``; default ``"weight_clip"`` (``[-1, 1]``, the PCNN STE's
            range).
        projections: J in {1, 2, 4, ...}.
        binarize_input: sign-binarize the input (ste_sign); False for a first layer.
        mode: ``"binary"`` or ``"ternary"`` (progressive optimization starts ternary).
        projection_initializer: for the projections ``W_j`` (default ``"ones"``: the layer
            starts as plain ``a sign(C)``). Positive projections never change a sign
            (``sign(w c) = sign(c)`` for ``w > 0``), so with ``J > 1`` the J kernel groups are
            identical until some ``W_j`` entry turns negative; at equal width (``filters/J``
            latent kernels) that halves the distinct kernels (MNIST, ``tools/bench_claims.py``:
            J=2 96.75%, J=2 with uniform(-1, 1) projections 96.54%, J=1 97.67%). Widen the
            layer J times to keep as many distinct kernels as a plain binary conv.

    Raises:
        ValueError: bad ``filters``/``projections``, an unknown ``mode``, a padding other than
            valid/same, ``data_format="channels_first"`` or ``groups != 1``.
    """

    def __init__(self, filters, kernel_size, strides=(1, 1), padding="valid", data_format=None,
                 dilation_rate=(1, 1), groups=1, activation=None, use_bias=False,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros",
                 kernel_regularizer=None, bias_regularizer=None, activity_regularizer=None,
                 kernel_constraint="weight_clip", bias_constraint=None, *, projections=1,
                 binarize_input=True, mode="binary", projection_initializer="ones", **kwargs):
        super().__init__(activity_regularizer=activity_regularizer, **kwargs)
        if not isinstance(projections, int) or projections < 1:
            raise ValueError(f"projections must be a positive int, got {projections!r}.")
        if not isinstance(filters, int) or filters < 1 or filters % projections:
            raise ValueError(f"filters ({filters!r}) must be a positive multiple of projections "
                             f"({projections}).")
        if mode not in ("binary", "ternary"):
            raise ValueError(f"mode must be 'binary' or 'ternary', got {mode!r}.")
        if padding not in ("valid", "same"):
            raise ValueError(f"padding must be 'valid' or 'same', got {padding!r}.")
        if data_format not in (None, "channels_last"):
            raise ValueError(f"PCNNConv2D supports data_format='channels_last' only, got "
                             f"{data_format!r}; transpose the input to NHWC.")
        if groups != 1:
            raise ValueError(f"PCNNConv2D supports groups=1 only, got {groups!r}: the J projected "
                             "binary kernels are applied as one dense convolution.")
        self.filters = filters
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.strides = _pair(strides, "strides")
        self.dilation_rate = _pair(dilation_rate, "dilation_rate")
        self.padding = padding
        self.data_format = "channels_last"
        self.groups = 1
        self.projections = projections
        self.binarize_input = bool(binarize_input)
        self.initial_mode = mode
        self.activation = keras.activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.projection_initializer = keras.initializers.get(projection_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.bias_constraint = keras.constraints.get(bias_constraint)

    def build(self, input_shape):
        kh, kw = self.kernel_size
        self.kernel = self.add_weight(
            name="kernel", shape=(kh, kw, input_shape[-1], self.filters // self.projections),
            initializer=self.kernel_initializer, regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint)
        self.projection = self.add_weight(name="projection", shape=(self.projections, kh, kw, 1, 1),
                                          initializer=self.projection_initializer)
        self.mode = self.add_weight(
            name="mode", shape=(), dtype=tf.int32, trainable=False,
            initializer=keras.initializers.Constant(BINARY if self.initial_mode == "binary" else TERNARY))
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(name="bias", shape=(self.filters,),
                                        initializer=self.bias_initializer,
                                        regularizer=self.bias_regularizer,
                                        constraint=self.bias_constraint)
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
        out = tf.nn.conv2d(x, kernel, strides=self.strides, padding=padding,
                           dilations=self.dilation_rate)
        return bias_and_activation(self, out)

    def get_config(self):
        ser = keras.utils.serialize_keras_object
        return {**super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size,
                "strides": self.strides, "padding": self.padding, "data_format": self.data_format,
                "dilation_rate": self.dilation_rate, "groups": self.groups,
                "activation": keras.activations.serialize(self.activation),
                "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
                "kernel_regularizer": ser(self.kernel_regularizer),
                "bias_regularizer": ser(self.bias_regularizer),
                "activity_regularizer": ser(self.activity_regularizer),
                "kernel_constraint": ser(self.kernel_constraint),
                "bias_constraint": ser(self.bias_constraint),
                "projections": self.projections, "binarize_input": self.binarize_input,
                "mode": self.initial_mode,
                "projection_initializer": keras.initializers.serialize(self.projection_initializer)}


def pcnn_layers(model):
    from tfcompress.inspection import iter_layers

    return [layer for layer in iter_layers(model) if isinstance(layer, PCNNConv2D)]


class PCNNTrainer(Trainer):
    """Train ``model`` with the PCNN projection loss. ``trainer.fit(...)`` updates ``model``'s
    weights; save, evaluate and convert ``model`` itself (the trainer adds no weights).

    Args:
        model: a Keras model containing :class:`PCNNConv2D` layers.
        lam: lambda of ``L_P`` (the paper sweeps 1e-3..1e-5 and uses 1e-4).
        eta: step ``eta`` inside ``L_P``.
        center_weight: gamma of the optional centre loss ``L_C`` (0: off, the default).
        feature_layer: name of the layer whose output is the deep feature ``f`` of ``L_C``
            (default: the input of the last ``Dense`` layer).
        center_alpha: the centres' learning rate alpha (Wen et al.: 0.5).
        num_classes: rows of the centre table (default: the model's last output dimension).

    With ``center_weight > 0`` each step also moves the centres of the classes in the batch
    (:meth:`tfcompress.losses.CenterLoss.update_centers`, on the step's features); the centres
    are the trainer's ``center_loss.centers`` weight.

    Raises:
        ValueError: no PCNNConv2D layer, a negative ``lam``/``eta``/``center_weight``, an
            unknown ``feature_layer`` or no ``Dense`` layer to take the features from.
    """

    tracked = ("projection_loss", "center_loss")

    def __init__(self, model, lam=1e-4, eta=1e-2, *, center_weight=0.0, feature_layer=None,
                 center_alpha=0.5, num_classes=None, **kwargs):
        super().__init__(model, **kwargs)
        self.layers_ = pcnn_layers(model)
        if not self.layers_:
            raise ValueError("PCNNTrainer: the model has no PCNNConv2D layer.")
        if lam < 0 or eta < 0:
            raise ValueError("lam and eta must be >= 0.")
        if isinstance(center_weight, bool) or not isinstance(center_weight, (int, float)) \
                or center_weight < 0:
            raise ValueError(f"center_weight must be a number >= 0, got {center_weight!r}.")
        self.lam = float(lam)
        self.eta = float(eta)
        self.feature_layer = feature_layer
        self.center_loss = None
        if center_weight > 0:
            self._with_feats = with_features(model, feature_layer, "PCNNTrainer")
            classes = int(num_classes or model.output_shape[-1])
            self.center_loss = CenterLoss(classes, center_weight, center_alpha,
                                          name="center_loss_centers")

    @property
    def model(self):
        """The network being trained (``self.network``)."""
        return self.network

    def hyperparameters(self):
        hp = {"lam": self.lam, "eta": self.eta, "center_weight": 0.0}
        if self.center_loss is not None:
            hp.update(center_weight=self.center_loss.weight, center_alpha=self.center_loss.alpha,
                      feature_layer=self.feature_layer, num_classes=self.center_loss.num_classes)
        return hp

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

    def train_update(self, x, y, sample_weight):
        with tf.GradientTape() as outer:
            with tf.GradientTape() as inner:
                if self.center_loss is None:
                    y_pred, feats = self.network(x, training=True), None
                else:
                    y_pred, feats = self._with_feats(x, training=True)
                ls = self.compiled_loss(y, y_pred, sample_weight,
                                        regularization_losses=self.network.losses)
                kernels = [k for layer in self.layers_ for k in layer._last_kernels]
            dk = inner.gradient(ls, kernels)
            dk = [tf.zeros_like(k) if g is None else g for k, g in zip(kernels, dk)]
            lp = self.projection_loss(kernels, dk)
            lc = tf.constant(0.0) if feats is None else self.center_loss([feats, y])
            loss = ls + lp + lc
        variables = self.network.trainable_variables
        self.apply_gradients(self.optimizer, outer.gradient(loss, variables), variables)
        if feats is not None:
            self.center_loss.update_centers(feats, y)
        return y_pred, {"projection_loss": lp, "center_loss": lc}


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
        self._layers = pcnn_layers(unwrap(self.model))
        if not self._layers:
            raise ValueError("ProgressiveBinarization: the model has no PCNNConv2D layer.")

    def on_epoch_begin(self, epoch, logs=None):
        mode = BINARY if epoch >= self.switch_epoch else TERNARY
        for layer in self._layers:
            layer.mode.assign(mode)
