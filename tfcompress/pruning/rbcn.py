"""RBCN (card 5.7 [V]; Liu et al., IJCAI 2019, and the IJCV 2021 version with pruning; book
§3.6): training a 1-bit student against a full-precision teacher with discriminators on feature
maps, and pruning it.

- :class:`~tfcompress.layers.RBConv2D` convolves binarized inputs with the rectified binary
  kernel ``W_hat = C sign(W)`` (:class:`~tfcompress.quantizers.RBCNSign`, ``C`` learned per
  output channel);
- :class:`RBCNTrainer` trains the student with the kernel loss, the adversarial loss and (for
  pruning) the feature-data loss (:mod:`tfcompress.losses`);
- :class:`RBCNPruning` learns soft filter masks by FISTA inside the same objective;
  :func:`~tfcompress.pruning.shrink` then removes the pruned filters (the layers fold the
  constant inputs they leave, see :class:`~tfcompress.layers.scaled_binary.FoldsPrunedInputs`).
"""

from tfcompress._keras import keras, tf
from tfcompress.inspection import iter_layers
from tfcompress.losses import (
    discriminator_loss, feature_data_loss, generator_loss, rbcn_kernel_loss,
)
from tfcompress.pruning.filters import FilterPruning
from tfcompress.quantizers.scaled_sign import RBCNSign
from tfcompress.training import Trainer, unwrap

__all__ = ["RBCNPruning", "RBCNTrainer", "rbcn_discriminator", "rbcn_layers"]


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


class RBCNTrainer(Trainer):
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

    tracked = ("loss", "task_loss", "adversarial_loss", "kernel_loss", "data_loss",
               "discriminator_loss")

    def __init__(self, student, teacher, *, feature_pairs, discriminators=None,
                 kernel_weight=1e-4, adversarial_weight=1.0, data_weight=0.0,
                 non_saturating=True, label_smoothing=0.0, discriminator_l2=0.0,
                 discriminator_hidden=(64,), **kwargs):
        super().__init__(student, **kwargs)
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
        self.teacher = teacher
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

    @property
    def student(self):
        """The binary network being trained (``self.network``)."""
        return self.network

    def hyperparameters(self):
        return {"feature_pairs": [list(p) for p in self.feature_pairs],
                "kernel_weight": self.kernel_weight,
                "adversarial_weight": self.adversarial_weight, "data_weight": self.data_weight,
                "non_saturating": self.non_saturating, "label_smoothing": self.label_smoothing,
                "discriminator_l2": self.discriminator_l2}

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
    def train_update(self, x, y, sample_weight):
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
        self.apply_gradients(self.optimizer, tape.gradient(losses["loss"], weights), weights)
        g_rest = tape.gradient(rest, scales)
        del tape
        with tf.GradientTape() as c_tape:                   # L_Kernel at the updated W
            kernel = self.kernel_loss()
        g_kernel = c_tape.gradient(kernel, scales)
        self.apply_gradients(self.scale_optimizer,
                             [_add(a, b) for a, b in zip(g_rest, g_kernel)], scales)
        losses["discriminator_loss"] = d_loss
        return y_pred, losses


def _add(a, b):
    if a is None:
        return b
    return a if b is None else a + b


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
        super()._setup(unwrap(model))
