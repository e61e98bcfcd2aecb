"""Binary convolutions with learned per-channel kernel scales that fold pruned inputs:
RBCN's :class:`RBConv2D` (card 5.7) and BONN's :class:`BONNConv2D` (card 5.8).

Pruning binary networks: a removed filter outputs 0, which the next layer's ``sign`` turns
into a constant ``+1`` channel. Both layers implement the ``shrunk`` protocol of
:func:`~tfcompress.pruning.shrink` (:class:`FoldsPrunedInputs`): they drop that input channel
and add its constant contribution (``sum_taps K_hat[..., c, :] * q(0)``) to their bias, which
Larq Compute Engine fuses into ``LceBconv2d``, so the shrunk model computes exactly what the
masked one does.
"""

import inspect

import larq as lq
import numpy as np

from tfcompress._keras import keras, tf
from tfcompress.errors import PruningError
from tfcompress.layers.quant import QuantConv2D, resolve_quantizers
from tfcompress.quantizers.scaled_sign import BONNSign, RBCNSign

__all__ = ["BONNConv2D", "FoldsPrunedInputs", "RBConv2D"]

_QCONV_SIG = inspect.signature(lq.layers.QuantConv2D.__init__)


class FoldsPrunedInputs:
    """Mixin for larq conv/dense layers: ``shrunk(in_keep, out_keep)`` for
    :func:`~tfcompress.pruning.shrink`.

    Removed input channels are 0 before this layer's input quantizer, so it reads the
    constant ``q = input_quantizer(0)`` there (``+1`` for sign quantizers). With ``valid``
    padding, or ``same`` padding whose ``pad_values`` equals ``q``, their contribution to
    output ``o`` is the constant ``sum_{taps, c removed} K_hat[taps, c, o] * q_c``, which is
    added to the bias of the narrower layer. The kernel quantizer must act element-wise with
    at most per-output-channel parameters (true for :class:`RBCNSign` and :class:`BONNSign`).
    """

    def binary_kernel(self):
        """The quantized kernel the layer applies, as a numpy array."""
        return self.kernel_quantizer.binarize(tf.convert_to_tensor(self.kernel)).numpy()

    def shrunk(self, in_keep, out_keep):
        kernel = tf.convert_to_tensor(self.kernel).numpy()
        n_in, n_out = kernel.shape[-2], kernel.shape[-1]
        in_keep, out_keep = np.asarray(in_keep, np.int64), np.asarray(out_keep, np.int64)
        removed = np.setdiff1d(np.arange(n_in), in_keep)
        extra = np.zeros(n_out, np.float64)
        if removed.size and self.input_quantizer is not None:
            q0 = np.asarray(self.input_quantizer(tf.zeros((1, n_in))))[0][removed]
            if getattr(self, "padding", "valid") != "valid" and \
                    np.any(q0 != float(self.pad_values)):
                raise PruningError(
                    f"Layer {self.name!r} pads with {float(self.pad_values):g} but its input "
                    f"quantizer maps a removed (zero) channel to {q0[0]:g}, so the removed "
                    "channels' contribution is not constant at the border and cannot be folded "
                    f"into a bias; use padding='valid' or pad_values={q0[0]:g}.")
            taps = self.binary_kernel().reshape(-1, n_in, n_out)[:, removed].sum(0)
            extra = q0 @ taps
        config = self.get_config()
        config["filters" if "filters" in config else "units"] = int(len(out_keep))
        for key in ("input_quantizer", "kernel_quantizer"):     # rebuilt for the new shapes
            if isinstance(config.get(key), dict):
                config[key] = {k: v for k, v in config[key].items() if k != "build_config"}
        old_bias = tf.convert_to_tensor(self.bias).numpy() if self.use_bias else 0.0
        use_bias = bool(self.use_bias or np.any(extra != 0))
        config["use_bias"] = use_bias
        new = type(self).from_config(config)
        bias = (np.zeros(n_out) + old_bias + extra)[out_keep].astype(np.float32)

        def assign(layer):
            layer.kernel.assign(kernel[..., in_keep, :][..., out_keep])
            if use_bias:
                layer.bias.assign(bias)
            for old_q, new_q, keep in ((self.input_quantizer, layer.input_quantizer, in_keep),
                                       (self.kernel_quantizer, layer.kernel_quantizer,
                                        out_keep)):
                for old_v, new_v in zip(getattr(old_q, "weights", []),
                                        getattr(new_q, "weights", [])):
                    value = old_v.numpy()
                    new_v.assign(value[..., keep] if value.ndim else value)

        return new, assign


def _binary_conv_init(layer, args, kwargs, quantizer_cls):
    """Bind Conv2D arguments, default the kernel quantizer, refuse another kind."""
    bound = _QCONV_SIG.bind(layer, *args, **kwargs)
    q = bound.arguments.get("kernel_quantizer")
    if q is None:
        bound.arguments["kernel_quantizer"] = quantizer_cls()
    elif not isinstance(q, quantizer_cls):
        raise ValueError(f"{type(layer).__name__} binarizes its kernel with "
                         f"{quantizer_cls.__name__}; got kernel_quantizer={q!r}.")
    lq.layers.QuantConv2D.__init__(*bound.args, **bound.kwargs)


@keras.utils.register_keras_serializable(package="tfcompress")
@resolve_quantizers(lq.layers.QuantConv2D, defaults={
    "input_quantizer": "approx_sign", "kernel_quantizer": None,
    "kernel_constraint": "weight_clip", "use_bias": False, "pad_values": 1.0})
class RBConv2D(FoldsPrunedInputs, QuantConv2D):
    """RBCN's rectified binary convolution ``conv(sign(F_in), C sign(W))``; Conv2D's
    signature (defaults: ``approx_sign`` inputs, an :class:`RBCNSign` kernel quantizer,
    ``weight_clip``, no bias, ``pad_values=1``)."""

    def __init__(self, *args, **kwargs):
        _binary_conv_init(self, args, kwargs, RBCNSign)


@keras.utils.register_keras_serializable(package="tfcompress")
@resolve_quantizers(lq.layers.QuantConv2D, defaults={
    "input_quantizer": "ste_sign", "kernel_quantizer": None,
    "kernel_constraint": "weight_clip", "use_bias": False, "pad_values": 1.0})
class BONNConv2D(FoldsPrunedInputs, QuantConv2D):
    """BONN's 1-bit convolution ``conv(sign(F_in), w o sign(k))`` with the Bayesian kernel
    loss; Conv2D's signature (defaults: ``ste_sign`` inputs, a :class:`BONNSign` kernel
    quantizer with lambda=1e-4, nu=1, ``weight_clip``, no bias, ``pad_values=1``)."""

    def __init__(self, *args, **kwargs):
        _binary_conv_init(self, args, kwargs, BONNSign)
