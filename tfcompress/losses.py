"""Loss functions of the book's methods that are not tied to one layer.

- RBCN (card 5.7): :func:`rbcn_kernel_loss`, :func:`discriminator_loss`,
  :func:`generator_loss`, :func:`feature_data_loss` (used by
  :class:`tfcompress.pruning.RBCNTrainer`);
- BONN (card 5.8): :func:`~tfcompress.quantizers.scaled_sign.bonn_kernel_loss` (added by the
  :class:`~tfcompress.quantizers.scaled_sign.BONNSign` quantizer itself) and
  :class:`BayesianFeatureLoss` (used by :class:`tfcompress.pruning.BONNTrainer`).

The distillation loss is :func:`tfcompress.distill.kd_loss`; PCNN's projection loss is a
method of :class:`tfcompress.layers.PCNNTrainer` (it needs the step's own gradients).
"""

import larq as lq
import numpy as np

from tfcompress._distribute import across_replicas
from tfcompress._keras import keras, tf
from tfcompress.quantizers.base import check_nonnegative
from tfcompress.quantizers.scaled_sign import bonn_kernel_loss

__all__ = ["BayesianFeatureLoss", "bonn_kernel_loss", "discriminator_loss", "feature_data_loss",
           "generator_loss", "rbcn_kernel_loss"]


def rbcn_kernel_loss(kernel, scale, lam):
    """``L_Kernel = lam/2 ||W - C W_hat||^2`` with ``W_hat = sign(W)`` (card 5.7 [V]).

    Autodiff gives the card's ``dL/dC = -lam sum_i (W_i - C W_hat_i) W_hat_i`` and, through the
    surrogate, ``dL/dW = lam (W - C W_hat) - lam (W - C W_hat) C (2 - 2|W|) 1{|W| < 1}``.
    """
    w_hat = lq.quantizers.approx_sign(kernel)
    return 0.5 * lam * tf.reduce_sum(tf.square(kernel - scale * w_hat))


def discriminator_loss(real_logits, fake_logits, label_smoothing=0.0):
    """``-L_Adv = -[log D(R) + log(1 - D(T))]`` (batch means), ``D = sigmoid(logits)``; the
    discriminator minimizes it (maximizes ``L_Adv``). ``label_smoothing`` eps replaces the
    real target 1 by ``1 - eps`` (the card's GAN-stability advice)."""
    eps = float(label_smoothing)
    real = (1.0 - eps) * tf.math.log_sigmoid(real_logits) + eps * tf.math.log_sigmoid(-real_logits)
    return -(tf.reduce_mean(real) + tf.reduce_mean(tf.math.log_sigmoid(-fake_logits)))


def generator_loss(fake_logits, non_saturating=True):
    """The student's adversarial term: ``log(1 - D(T))`` (the card's ``L_Adv``, minimized) or,
    by default, the non-saturating ``-log D(T)``, whose gradient in the logit is
    ``-(1 - D(T))``, the factor of the card's ``dL_Adv/dW_hat``."""
    if non_saturating:
        return -tf.reduce_mean(tf.math.log_sigmoid(fake_logits))
    return tf.reduce_mean(tf.math.log_sigmoid(-fake_logits))


def feature_data_loss(real, fake):
    """Pruned RBCN's ``L_Data = 1/(2n) ||R - T||^2`` (n = batch size, card 5.7 [V])."""
    n = tf.cast(tf.shape(real)[0], real.dtype)
    return 0.5 * tf.reduce_sum(tf.square(real - fake)) / n


@keras.utils.register_keras_serializable(package="tfcompress")
class BayesianFeatureLoss(keras.layers.Layer):
    """BONN's Bayesian feature loss (card 5.8; [R], not re-read by the card's author):

    .. math::  L_F = \\frac{\\theta}{2} \\frac{1}{B} \\sum_m \\Big[ \\|f_m - c_{y_m}\\|^2
       + \\sum_n \\big( \\sigma_{y_m,n}^{-2} (f_{m,n} - c_{y_m,n})^2
       + \\log \\sigma_{y_m,n}^2 \\big) \\Big]

    with class centres ``c`` and per-class, per-dimension variances ``sigma^2`` (weights
    ``centers`` and ``log_var``, learned by SGD; start 0 and 1). The card sums over the
    examples; the sum is divided by the batch size ``B`` here so ``theta`` does not depend on
    it. ``call([features, labels])`` returns ``L_F``; labels are integer classes (or one-hot).
    """

    def __init__(self, num_classes, theta=1e-3, **kwargs):
        super().__init__(**kwargs)
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}.")
        self.num_classes = num_classes
        self.theta = check_nonnegative(theta, "theta")

    def build(self, input_shape):
        dims = int(np.prod(input_shape[0][1:]))
        self.centers = self.add_weight("centers", shape=(self.num_classes, dims),
                                       initializer="zeros")
        self.log_var = self.add_weight("log_var", shape=(self.num_classes, dims),
                                       initializer="zeros")
        super().build(input_shape)

    def call(self, inputs):
        features, labels = inputs
        f = tf.reshape(features, (tf.shape(features)[0], -1))
        labels = tf.convert_to_tensor(labels)
        if labels.shape.rank == 2 and labels.shape[-1] == self.num_classes:
            labels = tf.argmax(labels, axis=-1)
        labels = tf.cast(tf.reshape(labels, (-1,)), tf.int32)
        diff = f - tf.gather(self.centers, labels)
        log_var = tf.gather(self.log_var, labels)
        per = tf.reduce_sum(tf.square(diff) * (1.0 + tf.exp(-log_var)) + log_var, axis=-1)
        return 0.5 * self.theta * tf.reduce_mean(per)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "theta": self.theta}


def class_indices(labels, num_classes):
    """Integer class labels ``(B,)`` int32 from integer labels (any shape ``(B,)``/``(B, 1)``)
    or one-hot / probability rows ``(B, num_classes)``."""
    labels = tf.convert_to_tensor(labels)
    if labels.shape.rank == 2 and labels.shape[-1] == num_classes and num_classes > 1:
        labels = tf.argmax(labels, axis=-1)
    return tf.cast(tf.reshape(labels, (-1,)), tf.int32)


@keras.utils.register_keras_serializable(package="tfcompress")
class CenterLoss(keras.layers.Layer):
    """The centre loss of Wen, Zhang, Li, Qiao (ECCV 2016), used by PCNN (card A5's optional
    ``L_C``) and DFS (card 5.3's ``mu L_C``) on the deep features:

    .. math::  L_C = \\frac{\\gamma}{2} \\frac{1}{B} \\sum_{i=1}^{B} \\|f_i - c_{y_i}\\|^2,
       \\qquad \\frac{\\partial L_C}{\\partial f_i} = \\frac{\\gamma}{B} (f_i - c_{y_i})

    (the centres are constants inside ``L_C``; the sum over the batch is divided by its size
    ``B``, as in the authors' Caffe layer, so ``gamma`` does not depend on it). The centres
    are not learned by the optimizer but moved by the paper's rule (its eq. 4 and
    Algorithm 1), :meth:`update_centers`:

    .. math::  \\Delta c_j = \\frac{\\sum_i 1\\{y_i = j\\} (c_j - f_i)}
                                   {1 + \\sum_i 1\\{y_i = j\\}}, \\qquad
               c_j \\leftarrow c_j - \\alpha \\Delta c_j

    Centres start at 0 (card 5.3: "initialized to 0"). Features of any rank are flattened
    per example.

    Args:
        num_classes: number of classes (rows of ``centers``).
        weight: ``gamma`` (PCNN) / ``mu`` (DFS), >= 0.
        alpha: the centres' learning rate, in [0, 1] (Wen et al. use 0.5).

    ``call([features, labels])`` returns ``L_C``; labels are integer classes or one-hot rows.
    Weight: ``centers`` ``(num_classes, feature size)``, non-trainable (saved with the layer).
    """

    def __init__(self, num_classes, weight=1e-3, alpha=0.5, **kwargs):
        super().__init__(**kwargs)
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}.")
        self.num_classes = num_classes
        self.weight = check_nonnegative(weight, "weight")
        alpha = check_nonnegative(alpha, "alpha")
        if alpha > 1:
            raise ValueError(f"alpha (the centres' learning rate) must be in [0, 1], got {alpha!r}.")
        self.alpha = alpha

    def build(self, input_shape):
        dims = int(np.prod(input_shape[0][1:]))
        self.centers = self.add_weight("centers", shape=(self.num_classes, dims),
                                       initializer="zeros", trainable=False)
        super().build(input_shape)

    @staticmethod
    def _flat(features):
        return tf.reshape(features, (tf.shape(features)[0], -1))

    def call(self, inputs):
        features, labels = inputs
        f = self._flat(features)
        c = tf.stop_gradient(tf.gather(tf.cast(self.centers, f.dtype),
                                       class_indices(labels, self.num_classes)))
        return 0.5 * self.weight * tf.reduce_mean(tf.reduce_sum(tf.square(f - c), axis=-1))

    def update_centers(self, features, labels):
        """Move the centres by Wen et al.'s rule on one batch; returns the assign op."""
        f = tf.cast(tf.stop_gradient(self._flat(features)), self.centers.dtype)
        onehot = tf.one_hot(class_indices(labels, self.num_classes), self.num_classes,
                            dtype=f.dtype)                              # (B, K)
        # Under tf.distribute the rule runs on the global batch: every replica adds up the
        # per-class counts and sums of all replicas, so all assign the same centres.
        counts = across_replicas(tf.reduce_sum(onehot, axis=0), "sum")             # (K,)
        sums = across_replicas(tf.matmul(onehot, f, transpose_a=True), "sum")      # (K, D)
        delta = (counts[:, None] * self.centers - sums) / (1.0 + counts[:, None])
        return self.centers.assign_sub(self.alpha * delta)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "weight": self.weight,
                "alpha": self.alpha}


def with_features(model, feature_layer=None, owner="trainer"):
    """``keras.Model(model.inputs, [model.output, features])``: the features are the output of
    the layer named ``feature_layer``, or by default the input of the last ``Dense`` layer
    (the deep features feeding the classifier). A ``Sequential`` model's layers are replayed on
    a new input (its layers may also belong to the graph they were first built in, as after
    :func:`tfcompress.pruning.shrink` or ``FilterPruning.prepare``). Raises ``ValueError``
    naming ``owner`` when the layer does not exist or the model has no ``Dense`` layer."""
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    if feature_layer is not None:
        try:
            target = model.get_layer(feature_layer)
        except ValueError:
            raise ValueError(f"{owner}: model {model.name!r} has no layer "
                             f"{feature_layer!r}.") from None
    elif not dense:
        raise ValueError(f"{owner}: model {model.name!r} has no Dense layer; name the "
                         "feature layer with feature_layer=.")
    if isinstance(model, keras.Sequential):
        inp = keras.Input(model.input_shape[1:], dtype=model.inputs[0].dtype)
        x, feats = inp, None
        for layer in model.layers:
            if feature_layer is None and layer is dense[-1]:
                feats = x
            x = layer(x)
            if feature_layer is not None and layer is target:
                feats = x
        return keras.Model(inp, [x, feats])
    feats = target.output if feature_layer is not None else dense[-1].input
    return keras.Model(model.inputs, [model.output, feats])


__all__ += ["CenterLoss", "class_indices", "with_features"]
