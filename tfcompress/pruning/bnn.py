"""Training and pruning 1-bit CNNs: RBCN (card 5.7) and BONN (card 5.8).

**RBCN** (Liu et al., IJCAI 2019; IJCV 2021 version with pruning; book §3.6):
:class:`RBConv2D` convolves binarized inputs with the rectified binary kernel
``W_hat = C sign(W)`` (:class:`RBCNSign`, ``C`` learned per output channel);
:class:`RBCNTrainer` trains the 1-bit student against a frozen full-precision teacher with
discriminators on feature maps, the kernel loss and (for pruning) the feature-data loss;
:class:`RBCNPruning` learns soft filter masks by FISTA inside the same objective.

**BONN** (Gu et al., ICCV 2019, arXiv 1908.06314; IJCV "Towards compact 1-bit CNNs via
Bayesian learning"; book §3.7): :class:`BONNConv2D` with :class:`BONNSign`
(``k_hat = w sign(k)``) adds the Bayesian kernel loss (a two-mode Gaussian prior at
``+mu+`` / ``-mu-``); :class:`BayesianFeatureLoss` and :class:`BONNTrainer` add the Bayesian
feature loss on the classifier's input; :class:`BayesianFilterPruning` clusters each layer's
filters, pulls them to their group means and keeps one filter per group.

Pruning binary networks: a removed filter outputs 0, which the next layer's ``sign`` turns
into a constant ``+1`` channel. :class:`RBConv2D` and :class:`BONNConv2D` implement the
``shrunk`` protocol of :func:`~tfcompress.pruning.shrink`: they drop that input channel and add
its constant contribution (``sum_taps K_hat[..., c, :] * q(0)``) to their bias, which Larq
Compute Engine fuses into ``LceBconv2d``, so the shrunk model computes exactly what the
masked one does.
"""

import inspect

import larq as lq
import numpy as np

from tfcompress._keras import keras, tf
from tfcompress.errors import PruningError
from tfcompress.inspection import iter_layers
from tfcompress.layers.quant import QuantConv2D, resolve_quantizers
from tfcompress.pruning.filters import Criterion, FilterPruning
from tfcompress.pruning.methods import _check_nonneg, learning_rate
from tfcompress.quantizers.base import BaseQuantizer, hard_sign, register

_QCONV_SIG = inspect.signature(lq.layers.QuantConv2D.__init__)


# ----------------------------------------------------------------------- shrink protocol
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


def _per_channel_abs_mean(kernel):
    return tf.reduce_mean(tf.abs(kernel), axis=list(range(len(kernel.shape) - 1)))


# ----------------------------------------------------------------------------- RBCN
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


def rbcn_discriminator(input_shape, hidden=(64,), negative_slope=0.2, name="discriminator"):
    """A discriminator of Linear + LeakyReLU blocks on a flattened feature map; outputs a
    logit (``D = sigmoid(logit)`` is the probability that the features are real-valued)."""
    layers = [keras.Input(tuple(input_shape)), keras.layers.Flatten()]
    for units in hidden:
        layers += [keras.layers.Dense(units), keras.layers.LeakyReLU(negative_slope)]
    return keras.Sequential(layers + [keras.layers.Dense(1)], name=name)


def rbcn_layers(model):
    """Layers of ``model`` whose kernel quantizer is an :class:`RBCNSign`."""
    return [layer for layer in iter_layers(model)
            if isinstance(getattr(layer, "kernel_quantizer", None), RBCNSign)]


def _copy_optimizer(optimizer):
    return type(optimizer).from_config(optimizer.get_config())


def _feature_model(model, names, role):
    outs = []
    for name in names:
        try:
            outs.append(model.get_layer(name).output)
        except ValueError:
            raise ValueError(f"feature_pairs: the {role} {model.name!r} has no layer "
                             f"{name!r}.") from None
    return outs


class RBCNTrainer(keras.Model):
    """Train a 1-bit student with RBCN's objective (card 5.7 [V]):

    .. math::  \\min_{W, C} \\max_{Y}\\; L_S + \\alpha L_{Adv} + L_{Kernel} + \\beta L_{Data}

    - ``L_S``: the compiled task loss on the student's output (plus ``student.losses``);
    - ``L_Adv = log D(R; Y) + log(1 - D(T; Y))``, one discriminator per feature pair: ``R``
      the frozen teacher's feature map, ``T`` the student's; each step first updates the
      discriminators (:func:`discriminator_loss`, optimizer ``discriminator_optimizer``), then
      the student with :func:`generator_loss` against the updated discriminators;
    - ``L_Kernel``: :func:`rbcn_kernel_loss` summed over every :class:`RBCNSign` layer;
    - ``L_Data``: :func:`feature_data_loss` (the pruned RBCN's term; ``data_weight=0`` off);
    - ``R(Y)``: L2 weight decay ``discriminator_l2`` on the discriminators (the card's
      unspecified regularizer of the pruned objective).

    Update order (card): the weights ``W`` (and every other student variable) take the
    optimizer's step first; then ``C`` takes ``scale_optimizer``'s step with the gradient of
    the other terms plus ``dL_Kernel/dC`` evaluated at the *updated* ``W``.

    Args:
        student: the binary model (with :class:`RBConv2D` / :class:`RBCNSign` layers).
        teacher: a full-precision model on the same inputs (frozen).
        feature_pairs: ``[(student layer, teacher layer), ...]`` whose outputs have equal
            shapes (the card places a discriminator per stage).
        discriminators: one Keras model per pair mapping a feature map to a logit
            (default :func:`rbcn_discriminator` with ``discriminator_hidden``).
        kernel_weight: lambda_1 of ``L_Kernel``; adversarial_weight, data_weight: weights
            of ``L_Adv`` and ``L_Data``; non_saturating, label_smoothing: see the losses.

    ``trainer.fit`` trains ``student`` in place; evaluate, save and convert ``student``.
    The card's values of lambda_1 and the discriminator learning rate were not retrieved.
    """

    def __init__(self, student, teacher, *, feature_pairs, discriminators=None,
                 kernel_weight=1e-4, adversarial_weight=1.0, data_weight=0.0,
                 non_saturating=True, label_smoothing=0.0, discriminator_l2=0.0,
                 discriminator_hidden=(64,), **kwargs):
        super().__init__(**kwargs)
        pairs = [tuple(p) for p in feature_pairs]
        if not pairs or any(len(p) != 2 for p in pairs):
            raise ValueError("feature_pairs must be a non-empty list of (student layer, "
                             f"teacher layer) names, got {feature_pairs!r}.")
        self.rb_layers = rbcn_layers(student)
        if not self.rb_layers:
            raise ValueError(f"RBCNTrainer: student {student.name!r} has no layer with an "
                             "RBCNSign kernel quantizer (use RBConv2D).")
        for name, value in (("kernel_weight", kernel_weight), ("data_weight", data_weight),
                            ("adversarial_weight", adversarial_weight),
                            ("discriminator_l2", discriminator_l2)):
            if not value >= 0:
                raise ValueError(f"{name} must be >= 0, got {value!r}.")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing!r}.")
        self.student, self.teacher = student, teacher
        self.teacher.trainable = False
        s_feats = _feature_model(student, [s for s, _ in pairs], "student")
        t_feats = _feature_model(teacher, [t for _, t in pairs], "teacher")
        for (s, t), a, b in zip(pairs, s_feats, t_feats):
            if tuple(a.shape[1:]) != tuple(b.shape[1:]):
                raise ValueError(f"feature_pairs: student layer {s!r} outputs {a.shape[1:]} but "
                                 f"teacher layer {t!r} outputs {b.shape[1:]}; they must match.")
        self.feature_pairs = pairs
        self._student_feats = keras.Model(student.inputs, [student.output] + s_feats)
        self._teacher_feats = keras.Model(teacher.inputs, t_feats)
        if discriminators is None:
            discriminators = [rbcn_discriminator(f.shape[1:], discriminator_hidden,
                                                 name=f"discriminator_{s}")
                              for (s, _), f in zip(pairs, s_feats)]
        if len(discriminators) != len(pairs):
            raise ValueError(f"{len(discriminators)} discriminators for {len(pairs)} "
                             "feature pairs.")
        self.discriminators = list(discriminators)
        self.kernel_weight = float(kernel_weight)
        self.adversarial_weight = float(adversarial_weight)
        self.data_weight = float(data_weight)
        self.non_saturating = bool(non_saturating)
        self.label_smoothing = float(label_smoothing)
        self.discriminator_l2 = float(discriminator_l2)
        self.trackers = {n: keras.metrics.Mean(name=n) for n in (
            "loss", "task_loss", "adversarial_loss", "kernel_loss", "data_loss",
            "discriminator_loss")}

    def call(self, inputs, training=None):
        return self.student(inputs, training=training)

    @property
    def metrics(self):
        return list(self.trackers.values()) + super().metrics

    def compile(self, optimizer="adam", loss=None, metrics=None, *,
                discriminator_optimizer=None, scale_optimizer=None, **kwargs):
        """``Model.compile`` plus the discriminators' and the scales' optimizers (default: a
        fresh copy of ``optimizer``; the card advises a small discriminator learning rate)."""
        super().compile(optimizer=optimizer, loss=loss, metrics=metrics, **kwargs)
        self.discriminator_optimizer = (keras.optimizers.get(discriminator_optimizer)
                                        if discriminator_optimizer is not None
                                        else _copy_optimizer(self.optimizer))
        self.scale_optimizer = (keras.optimizers.get(scale_optimizer)
                                if scale_optimizer is not None
                                else _copy_optimizer(self.optimizer))

    # ------------------------------------------------------------------ losses
    def kernel_loss(self):
        """``L_Kernel`` of every RBCN layer at the current weights."""
        return tf.add_n([rbcn_kernel_loss(tf.convert_to_tensor(layer.kernel),
                                          layer.kernel_quantizer.scale, self.kernel_weight)
                         for layer in self.rb_layers])

    def _discriminator_loss(self, real, fake):
        loss = tf.add_n([discriminator_loss(d(r, training=True), d(f, training=True),
                                            self.label_smoothing)
                         for d, r, f in zip(self.discriminators, real, fake)])
        if self.discriminator_l2:
            loss += self.discriminator_l2 * tf.add_n(
                [tf.reduce_sum(tf.square(v)) for d in self.discriminators
                 for v in d.trainable_variables if "kernel" in v.name])
        return loss

    def _generator_losses(self, y, y_pred, sample_weight, real, fake):
        task = self.compiled_loss(y, y_pred, sample_weight,
                                  regularization_losses=self.student.losses)
        adv = tf.add_n([generator_loss(d(f, training=True), self.non_saturating)
                        for d, f in zip(self.discriminators, fake)])
        data = tf.add_n([feature_data_loss(r, f) for r, f in zip(real, fake)])
        kernel = self.kernel_loss()
        total = task + self.adversarial_weight * adv + kernel + self.data_weight * data
        return {"loss": total, "task_loss": task, "adversarial_loss": adv,
                "kernel_loss": kernel, "data_loss": data}

    def compute_losses(self, x, y, training=False):
        """Every term of the objective on one batch, without updating anything."""
        x, y = tf.nest.map_structure(tf.convert_to_tensor, x), tf.convert_to_tensor(y)
        outs = self._student_feats(x, training=training)
        real = self._teacher_feats(x, training=False)
        real = real if isinstance(real, list) else [real]
        losses = self._generator_losses(y, outs[0], None, real, outs[1:])
        losses["discriminator_loss"] = self._discriminator_loss(real, outs[1:])
        return losses

    # ------------------------------------------------------------------ steps
    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        real = self._teacher_feats(x, training=False)
        real = real if isinstance(real, list) else [real]
        scales = [layer.kernel_quantizer.scale for layer in self.rb_layers]
        scale_ids = {id(v) for v in scales}
        weights = [v for v in self.student.trainable_variables if id(v) not in scale_ids]
        with tf.GradientTape(persistent=True) as tape:
            outs = self._student_feats(x, training=True)
            y_pred, fake = outs[0], outs[1:]
            with tape.stop_recording():
                d_vars = [v for d in self.discriminators for v in d.trainable_variables]
                with tf.GradientTape() as d_tape:
                    d_loss = self._discriminator_loss(real, [tf.stop_gradient(f) for f in fake])
                self.discriminator_optimizer.apply_gradients(
                    zip(d_tape.gradient(d_loss, d_vars), d_vars))
            losses = self._generator_losses(y, y_pred, sample_weight, real, fake)
            rest = losses["loss"] - losses["kernel_loss"]
        _apply(self.optimizer, tape.gradient(losses["loss"], weights), weights)
        g_rest = tape.gradient(rest, scales)
        del tape
        with tf.GradientTape() as c_tape:                   # L_Kernel at the updated W
            kernel = self.kernel_loss()
        g_kernel = c_tape.gradient(kernel, scales)
        _apply(self.scale_optimizer, [_add(a, b) for a, b in zip(g_rest, g_kernel)], scales)
        losses["discriminator_loss"] = d_loss
        return self._update(losses, y, y_pred, sample_weight)

    def test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        y_pred = self.student(x, training=False)
        self.compiled_loss(y, y_pred, sample_weight, regularization_losses=self.student.losses)
        self.compiled_metrics.update_state(y, y_pred, sample_weight)
        return {m.name: m.result() for m in super().metrics}

    def _update(self, losses, y, y_pred, sample_weight):
        for name, tracker in self.trackers.items():
            tracker.update_state(losses[name])
        self.compiled_metrics.update_state(y, y_pred, sample_weight)
        return {m.name: m.result() for m in self.metrics}


def _add(a, b):
    if a is None:
        return b
    return a if b is None else a + b


def _apply(optimizer, grads, variables):
    pairs = [(g, v) for g, v in zip(grads, variables) if g is not None]
    if pairs:
        optimizer.apply_gradients(pairs)


def binary_network(model):
    """The network a trainer wraps (``RBCNTrainer.student``, ``BONNTrainer.model``), or
    ``model`` itself."""
    if isinstance(model, RBCNTrainer):
        return model.student
    if isinstance(model, BONNTrainer):
        return model.model
    return model


class RBCNPruning(FilterPruning):
    """Pruned RBCN (card 5.7 [V]): soft filter masks ``M_p`` (``W_p = W o M_p`` acts as a
    per-filter factor on the layer's output) trained inside the RBCN objective, with
    ``L_Reg = lambda ||M_p||_1`` minimized by FISTA proximal steps (the §5.3 equations;
    :class:`~tfcompress.pruning.methods.SoftMaskProximal`), and ``W_p``, ``C_p`` by the
    trainer's gradient steps. At the schedule's steps the lowest ``|M_p|`` are hard-masked;
    :func:`~tfcompress.pruning.shrink` then removes them (see :class:`FoldsPrunedInputs`).

    Use it as a callback of :class:`RBCNTrainer` (it prunes ``trainer.student``) or of a
    plain binary model. Prepare the student first, and set ``data_weight > 0`` on the trainer
    for the card's ``L_Data,p``::

        pruner = RBCNPruning(0.5, l1_penalty=1e-3)
        student = pruner.prepare(student)
        trainer = RBCNTrainer(student, teacher, feature_pairs=[...], data_weight=1.0)
        trainer.compile(...); trainer.fit(x, y, callbacks=[pruner])
        small = tfcompress.pruning.shrink(student)
    """

    def __init__(self, target_sparsity, schedule=None, *, l1_penalty=1e-3, step_size=None,
                 fista=True, log_dir=None, exclude=()):
        super().__init__(target_sparsity, "dfs", schedule, log_dir=log_dir, exclude=exclude,
                         l1_penalty=l1_penalty, step_size=step_size, fista=fista)
        self.method = "rbcn"

    def _setup(self, model):
        super()._setup(binary_network(model))


# ----------------------------------------------------------------------------- BONN
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
        self.lam = _check_nonneg("lam", lam)
        self.nu = _check_nonneg("nu", nu)
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
        self.theta = _check_nonneg("theta", theta)

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


def bonn_layers(model):
    """Layers of ``model`` whose kernel quantizer is a :class:`BONNSign`."""
    return [layer for layer in iter_layers(model)
            if isinstance(getattr(layer, "kernel_quantizer", None), BONNSign)]


class BONNTrainer(keras.Model):
    """Train ``model`` with BONN's ``L = L_S + L_K + L_F`` (card 5.8).

    ``L_S`` is the compiled loss, ``L_K`` the kernel losses the :class:`BONNSign` layers add
    to ``model.losses``, ``L_F`` a :class:`BayesianFeatureLoss` on the classifier's input
    (the card: only the features feeding the FC layer). ``trainer.fit`` updates ``model`` in
    place (and the trainer's own centres and variances); save and convert ``model``.

    Args:
        model: a functional or Sequential model.
        num_classes: classes of the labels. theta: theta of ``L_F``.
        feature_layer: name of the layer whose output is the feature (default: the input of
            the last ``Dense`` layer).
    """

    def __init__(self, model, *, num_classes, theta=1e-3, feature_layer=None, **kwargs):
        super().__init__(**kwargs)
        self.model = model
        if feature_layer is not None:
            try:
                feats = model.get_layer(feature_layer).output
            except ValueError:
                raise ValueError(f"BONNTrainer: model {model.name!r} has no layer "
                                 f"{feature_layer!r}.") from None
        else:
            dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
            if not dense:
                raise ValueError(f"BONNTrainer: model {model.name!r} has no Dense layer; name "
                                 "the feature layer with feature_layer=.")
            feats = dense[-1].input
        self._with_feats = keras.Model(model.inputs, [model.output, feats])
        self.feature_loss = BayesianFeatureLoss(num_classes, theta, name="bayesian_feature_loss")
        self.trackers = {n: keras.metrics.Mean(name=n) for n in (
            "loss", "kernel_loss", "feature_loss")}

    def call(self, inputs, training=None):
        return self.model(inputs, training=training)

    @property
    def metrics(self):
        return list(self.trackers.values()) + super().metrics

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            y_pred, feats = self._with_feats(x, training=True)
            kernel = tf.add_n(self.model.losses) if self.model.losses else tf.constant(0.0)
            task = self.compiled_loss(y, y_pred, sample_weight, regularization_losses=None)
            feature = self.feature_loss([feats, y])
            loss = task + kernel + feature
        variables = self.model.trainable_variables + self.feature_loss.trainable_variables
        _apply(self.optimizer, tape.gradient(loss, variables), variables)
        for name, value in (("loss", loss), ("kernel_loss", kernel), ("feature_loss", feature)):
            self.trackers[name].update_state(value)
        self.compiled_metrics.update_state(y, y_pred, sample_weight)
        return {m.name: m.result() for m in self.metrics}

    def test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        y_pred = self.model(x, training=False)
        self.compiled_loss(y, y_pred, sample_weight, regularization_losses=self.model.losses)
        self.compiled_metrics.update_state(y, y_pred, sample_weight)
        return {m.name: m.result() for m in super().metrics}


def kmeans(points, k, *, init=None, iterations=100, seed=0):
    """Lloyd's k-means of the rows of ``points``: k-means++ seeding (``seed``) unless ``init``
    centres are given; an emptied cluster is re-seeded at the farthest point.

    Returns:
        ``(labels (n,), centres (k, d))``.
    """
    x = np.asarray(points, np.float64)
    n = len(x)
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, {n}], got {k!r}.")
    rng = np.random.default_rng(seed)
    if init is not None and len(init) == k:
        centres = np.array(init, np.float64)
    else:
        centres = [x[rng.integers(n)]]
        for _ in range(1, k):
            d2 = np.min(((x[:, None] - np.array(centres)[None]) ** 2).sum(-1), axis=1)
            probs = d2 / d2.sum() if d2.sum() > 0 else np.full(n, 1.0 / n)
            centres.append(x[rng.choice(n, p=probs)])
        centres = np.array(centres)
    labels = None
    for _ in range(iterations):
        d2 = ((x[:, None] - centres[None]) ** 2).sum(-1)
        new = d2.argmin(1)
        for g in range(k):
            if not (new == g).any():
                far = d2[np.arange(n), new].argmax()
                new[far] = g
                d2[far] = 0
        if labels is not None and np.array_equal(new, labels):
            break
        labels = new
        centres = np.array([x[labels == g].mean(0) for g in range(k)])
    return labels, centres


class BayesianPruningCriterion(Criterion):
    """BONN's Bayesian filter pruning (card 5.8 [V], the book's §3.7.3 / Alg. 6).

    Per masked layer the live filters (rows of the kernel reshaped ``(C_out, -1)``) are
    clustered by :func:`kmeans` into ``G = round((1 - target_sparsity) C_out)`` groups (re-run,
    warm-started, every ``recluster_every`` batches and at each pruning step). After every
    batch each filter is moved toward its group mean ``K_g``:

    1. the gradient step of ``L_P = lambda_p/2 sum_i [||K_i - K_g||^2 + nu/sigma_g^2
       ||K_i - K_g||^2 + nu log det Psi_g]`` (``Psi_g = sigma_g^2 I``, ``sigma_g^2`` the group's
       maximum-likelihood variance): ``K_i -= eta lambda_p (1 + nu/sigma_g^2)(K_i - K_g)``,
       the factor capped at 1 (exact: the mean's own gradient cancels within a group);
    2. the card's shrink ``K_i <- (1 - gamma) K_i + gamma K_g``.

    Both keep each group's mean. At pruning steps a group's first filter (lowest index, the
    card's "keep the first filter of each group") scores highest and the others score by
    their distance to ``K_g``, so the most redundant go first; the card zeroes the removed
    filters' BatchNormalization entries, which FilterPruning does before
    :func:`~tfcompress.pruning.shrink` removes them. Not implemented: the card's
    ``(1/I_g) dL/dK_g`` share of the data gradient (the forward pass uses each filter, not the
    group mean) and a learned ``Psi``.
    """

    name = "bonn"

    def __init__(self, target_sparsity, gamma=0.1, penalty=0.0, nu=1.0, step_size=None,
                 recluster_every=None, seed=0):
        self.target_sparsity = float(target_sparsity)
        self.gamma = _check_nonneg("gamma", gamma)
        if self.gamma > 1:
            raise PruningError(f"gamma must be in [0, 1], got {gamma!r}.")
        self.penalty = _check_nonneg("penalty", penalty)
        self.nu = _check_nonneg("nu", nu)
        self.step_size = None if step_size is None else _check_nonneg("step_size", step_size)
        if recluster_every is not None and (not isinstance(recluster_every, int)
                                            or recluster_every < 1):
            raise PruningError(f"recluster_every must be a positive int or None, got "
                               f"{recluster_every!r}.")
        self.recluster_every = recluster_every
        self.seed = int(seed)
        self.labels, self.centres = {}, {}

    def _rows(self, pruner, owner):
        k = tf.convert_to_tensor(pruner.layer(owner).kernel).numpy()
        return k, k.reshape(-1, k.shape[-1]).T

    def cluster(self, pruner, owner):
        """Re-run k-means on ``owner``'s live filters; returns labels (-1 for masked)."""
        _, rows = self._rows(pruner, owner)
        live = pruner.masks[owner].mask.numpy() != 0
        groups = max(1, int(round((1.0 - self.target_sparsity) * len(rows))))
        groups = min(groups, int(live.sum()))
        labels = np.full(len(rows), -1)
        if groups:
            labels[live], self.centres[owner] = kmeans(
                rows[live], groups, init=self.centres.get(owner), seed=self.seed)
        self.labels[owner] = labels
        return labels

    def pull(self, pruner, owner, eta):
        """One step of (1) and (2) above on ``owner``'s kernel."""
        kernel, rows = self._rows(pruner, owner)
        labels = self.labels[owner]
        out = rows.copy()
        for g in np.unique(labels[labels >= 0]):
            idx = np.flatnonzero(labels == g)
            mean = rows[idx].mean(0)
            resid = rows[idx] - mean
            var = float((resid ** 2).mean()) + 1e-12
            factor = min(1.0, eta * self.penalty * (1.0 + self.nu / var))
            out[idx] = mean + (1.0 - self.gamma) * (1.0 - factor) * resid
        pruner.layer(owner).kernel.assign(out.T.reshape(kernel.shape).astype(np.float32))

    def scores(self, pruner, owner):
        labels = self.cluster(pruner, owner)
        _, rows = self._rows(pruner, owner)
        out = np.zeros(len(rows))
        for g in np.unique(labels[labels >= 0]):
            idx = np.flatnonzero(labels == g)
            dist = np.linalg.norm(rows[idx] - rows[idx].mean(0), axis=1)
            out[idx] = dist / (dist.max() + 1e-12)
            out[idx[0]] = 2.0
        return out

    def on_batch_end(self, pruner, step):
        eta = self.step_size if self.step_size is not None else (
            learning_rate(pruner.model) if self.penalty else 0.0)
        for owner in pruner.masks:
            if owner not in self.labels or (self.recluster_every
                                            and step % self.recluster_every == 0):
                self.cluster(pruner, owner)
            self.pull(pruner, owner, eta)

    def get_config(self):
        return {"target_sparsity": self.target_sparsity, "gamma": self.gamma,
                "penalty": self.penalty, "nu": self.nu, "step_size": self.step_size,
                "recluster_every": self.recluster_every, "seed": self.seed}


class BayesianFilterPruning(FilterPruning):
    """:class:`~tfcompress.pruning.FilterPruning` with :class:`BayesianPruningCriterion`
    (BONN's Bayesian pruning). Works as a callback of :class:`BONNTrainer` (it prunes
    ``trainer.model``) or of a plain model; ``target_sparsity`` also sets the number of groups
    per layer. Options: ``gamma``, ``penalty`` (lambda_p), ``nu``, ``step_size``,
    ``recluster_every``, ``seed``.
    """

    def __init__(self, target_sparsity, schedule=None, *, gamma=0.1, penalty=0.0, nu=1.0,
                 step_size=None, recluster_every=None, seed=0, log_dir=None, exclude=()):
        super().__init__(target_sparsity, "l1", schedule, log_dir=log_dir, exclude=exclude)
        self.method = BayesianPruningCriterion.name
        self.criterion = BayesianPruningCriterion(
            self.target_sparsity, gamma=gamma, penalty=penalty, nu=nu, step_size=step_size,
            recluster_every=recluster_every, seed=seed)

    def _setup(self, model):
        super()._setup(binary_network(model))


__all__ = [
    "BONNConv2D", "BONNSign", "BONNTrainer", "BayesianFeatureLoss", "BayesianFilterPruning",
    "BayesianPruningCriterion", "FoldsPrunedInputs", "RBCNPruning", "RBCNSign", "RBCNTrainer",
    "RBConv2D", "binary_network", "bonn_kernel_loss", "bonn_layers", "discriminator_loss",
    "feature_data_loss", "generator_loss", "kmeans", "rbcn_discriminator", "rbcn_kernel_loss",
    "rbcn_layers",
]
