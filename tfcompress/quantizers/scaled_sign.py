"""Binary kernels with learned per-output-channel scales, from the pruning-of-binary-nets
methods of chapter 5 (card 5.7 RBCN and card 5.8 BONN).

- :class:`RBCNSign` (alias ``"rbcn_sign"``): RBCN's rectified binary kernel ``C sign(W)``.
- :class:`BONNSign` (alias ``"bonn_sign"``): BONN's ``w o sign(k)`` that adds the Bayesian kernel
  loss :func:`bonn_kernel_loss` to the model's losses.

The layers built on them are :class:`tfcompress.layers.RBConv2D` and
:class:`tfcompress.layers.BONNConv2D`; their trainers and pruning callbacks are in
:mod:`tfcompress.pruning.rbcn` and :mod:`tfcompress.pruning.bonn`.
"""

import larq as lq

from tfcompress._keras import tf
from tfcompress.quantizers.base import BaseQuantizer, check_nonnegative, hard_sign, register

__all__ = ["BONNSign", "RBCNSign", "bonn_kernel_loss"]


def _per_channel_abs_mean(kernel):
    return tf.reduce_mean(tf.abs(kernel), axis=list(range(len(kernel.shape) - 1)))


@register
class RBCNSign(BaseQuantizer):
    """RBCN's rectified binary kernel ``W_hat = C sign(W)`` (card 5.7 [V]).

    ``C`` (weight ``scale``) is learned, one value per output channel (last axis), and starts
    at ``mean |W_c|``, the minimizer of the kernel loss ``||W - C sign(W)||^2``. The book's
    ``C^l`` is a matrix; per output channel is the form a binary kernel keeps on Larq Compute
    Engine (its post-multiplier), which the card's export note asks for. Backward: the card's
    piecewise-linear surrogate ``dW_hat/dW = C (2 - 2|W|) 1{|W| < 1}`` (larq's ``approx_sign``).
    """

    precision = 1

    def build(self, input_shape):
        self.scale = self.add_weight("scale", shape=(input_shape[-1],), initializer="ones")
        self.add_init_flag()
        super().build(input_shape)

    def binarize(self, kernel):
        return lq.quantizers.approx_sign(kernel) * self.scale

    def call(self, inputs, training=None):
        init = self.lazy_init([(self.scale, _per_channel_abs_mean(inputs))], training)
        with tf.control_dependencies(init):
            scale = tf.identity(self.scale)
        return lq.quantizers.approx_sign(inputs) * scale


def bonn_kernel_loss(kernel, w, mu_pos, mu_neg, log_sigma_pos, log_sigma_neg, lam, nu):
    """The Bayesian kernel loss (card 5.8, the book's Eq. 3.102 form):

    .. math::  L_K = \\frac{\\lambda}{2} \\sum \\Big[ \\|\\hat k - w \\circ k\\|^2
       + \\nu \\frac{(k^+ - \\mu^+)^2}{\\sigma_+^2} + \\nu \\frac{(k^- + \\mu^-)^2}{\\sigma_-^2}
       + \\nu \\log\\det\\Psi \\Big]

    with ``k_hat = w o sign(k)``, ``k+`` / ``k-`` the entries ``>= 0`` / ``< 0``, ``Psi``
    diagonal holding ``sigma+^2`` for positive and ``sigma-^2`` for negative entries (so
    ``log det Psi`` sums ``2 log sigma`` of each entry's mode). ``w``, ``mu``, ``log sigma``
    are per output channel (last axis). ``sign(k)`` is a constant inside ``L_K`` (its true,
    almost-everywhere derivative), so the first term pulls ``k`` toward ``+-1`` with weight
    ``w^2`` and the prior pulls it toward ``+mu+`` / ``-mu-``.
    """
    sign = tf.stop_gradient(hard_sign(kernel))
    pos = tf.stop_gradient(tf.cast(kernel >= 0, kernel.dtype))
    recon = tf.square(w * sign - w * kernel)
    prior = pos * (tf.square(kernel - mu_pos) * tf.exp(-2.0 * log_sigma_pos)
                   + 2.0 * log_sigma_pos) \
        + (1.0 - pos) * (tf.square(kernel + mu_neg) * tf.exp(-2.0 * log_sigma_neg)
                         + 2.0 * log_sigma_neg)
    return 0.5 * lam * tf.reduce_sum(recon + nu * prior)


@register
class BONNSign(BaseQuantizer):
    """BONN's binarized kernel ``k_hat = w o sign(k)`` (straight-through gradient, clipped at
    ``clip_value``) that adds the Bayesian kernel loss :func:`bonn_kernel_loss` to the model's
    losses whenever the kernel is read in a forward pass (``lam=0``: no loss).

    Learned per output channel: ``w`` (starts at ``mean |k_c|``), ``mu_pos``, ``mu_neg``
    (start at ``mean |k_c|``), ``log_sigma_pos``, ``log_sigma_neg`` (start at
    ``log std |k_c|``; sigma is ``exp(log sigma)`` so it stays positive, and ``log sigma`` is
    kept >= ``log_sigma_floor`` so the ``log det`` term cannot run to -inf). The card's ``w`` is
    elementwise and replaced by its layer mean at inference; here ``w`` is per output channel,
    the post-multiplier Larq Compute Engine keeps, so training and inference use the same
    kernel.

    Args:
        lam: lambda (the book's plots use 1e-4). nu: nu, the prior's weight.
        clip_value: the straight-through estimator passes gradients where ``|k| <= clip``.
        log_sigma_floor: lower bound of ``log sigma`` (default ``log 1e-3``).
    """

    precision = 1

    def __init__(self, lam=1e-4, nu=1.0, clip_value=1.0, log_sigma_floor=-6.9, **kwargs):
        self.lam = check_nonnegative(lam, "lam")
        self.nu = check_nonnegative(nu, "nu")
        self.clip_value = float(clip_value)
        self.log_sigma_floor = float(log_sigma_floor)
        super().__init__(**kwargs)

    def build(self, input_shape):
        c = (input_shape[-1],)
        for name in ("w", "mu_pos", "mu_neg"):
            setattr(self, name, self.add_weight(name, shape=c, initializer="ones"))
        floor = self.log_sigma_floor
        for name in ("log_sigma_pos", "log_sigma_neg"):
            setattr(self, name, self.add_weight(name, shape=c, initializer="zeros",
                                                constraint=lambda v: tf.maximum(v, floor)))
        self.add_init_flag()
        super().build(input_shape)

    def binarize(self, kernel):
        return lq.quantizers.ste_sign(kernel, clip_value=self.clip_value) * self.w

    def kernel_loss(self, kernel):
        return bonn_kernel_loss(kernel, self.w, self.mu_pos, self.mu_neg, self.log_sigma_pos,
                                self.log_sigma_neg, self.lam, self.nu)

    def call(self, inputs, training=None):
        mean = _per_channel_abs_mean(inputs)
        axes = list(range(len(inputs.shape) - 1))
        log_std = tf.math.log(tf.math.reduce_std(tf.abs(inputs), axis=axes) + 1e-3)
        init = self.lazy_init([(self.w, mean), (self.mu_pos, mean), (self.mu_neg, mean),
                               (self.log_sigma_pos, log_std), (self.log_sigma_neg, log_std)],
                              training)
        with tf.control_dependencies(init):
            out = self.binarize(inputs)
            if self.lam:
                self.add_loss(self.kernel_loss(inputs))
        return out

    def get_config(self):
        return {**super().get_config(), "lam": self.lam, "nu": self.nu,
                "clip_value": self.clip_value, "log_sigma_floor": self.log_sigma_floor}
