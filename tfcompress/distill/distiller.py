"""Implementation of :mod:`tfcompress.distill`."""

from tfcompress._keras import keras, tf
from tfcompress.inspection import check_tf_keras_model
from tfcompress.training import Trainer


def _logits(outputs, from_logits):
    return outputs if from_logits else tf.math.log(tf.clip_by_value(outputs, 1e-12, 1.0))


def kd_terms(y_true, student_logits, teacher_logits, temperature):
    """Per-example ``(CE(y, softmax(z_s)), T^2 KL(softmax(z_t/T) || softmax(z_s/T)))``."""
    t = tf.cast(temperature, student_logits.dtype)
    hard = keras.losses.sparse_categorical_crossentropy(y_true, student_logits, from_logits=True)
    p_t = tf.nn.softmax(teacher_logits / t)
    log_p_s = tf.nn.log_softmax(student_logits / t)
    kl = tf.reduce_sum(p_t * (tf.math.log(tf.clip_by_value(p_t, 1e-12, 1.0)) - log_p_s), axis=-1)
    return hard, t * t * kl


def kd_loss(y_true, student_logits, teacher_logits, temperature, alpha):
    """Per-example Hinton KD loss (see the module docstring); integer labels."""
    hard, soft = kd_terms(y_true, student_logits, teacher_logits, temperature)
    return (1.0 - alpha) * hard + alpha * soft


def attention_map(features):
    """Spatial attention ``mean_c(f^2)`` flattened and L2-normalized per example."""
    a = tf.reduce_mean(tf.square(features), axis=-1)
    a = tf.reshape(a, (tf.shape(a)[0], -1))
    return tf.math.l2_normalize(a, axis=-1)


class Distiller(Trainer):
    """A student trained against a frozen teacher.

    Args:
        student, teacher: Keras models with the same output shape (classes last).
        temperature: ``T`` (> 0).
        alpha: weight of the soft-target term, in [0, 1].
        from_logits: whether both models output logits (``False``: probabilities, e.g. a final
            softmax; logits are then recovered as ``log p``, which is exact up to a constant).
        feature_pairs: optional ``[(student_layer_name, teacher_layer_name), ...]`` for the
            attention-transfer loss; ``beta`` weighs it.

    ``call`` runs the student, so ``evaluate``/``predict`` report the student. Works under
    ``tf.distribute`` strategies (per-example losses are averaged over the global batch).
    """

    tracked = ("loss", "distillation_loss")

    def __init__(self, student, teacher, *, temperature=4.0, alpha=0.9, from_logits=False,
                 feature_pairs=(), beta=1000.0, **kwargs):
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature!r}.")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha!r}.")
        check_tf_keras_model(student, "Distiller (student)")
        check_tf_keras_model(teacher, "Distiller (teacher)")
        s_shape, t_shape = tuple(student.output_shape[1:]), tuple(teacher.output_shape[1:])
        if s_shape != t_shape:
            raise ValueError(f"Student output {s_shape} and teacher output {t_shape} differ.")
        super().__init__(student, **kwargs)
        self.teacher = teacher
        self.teacher.trainable = False
        self.temperature = float(temperature)
        self.alpha = float(alpha)
        self.from_logits = bool(from_logits)
        self.beta = float(beta)
        self.feature_pairs = list(feature_pairs)
        if self.feature_pairs:
            try:
                s_out = [student.get_layer(s).output for s, _ in self.feature_pairs]
                t_out = [teacher.get_layer(t).output for _, t in self.feature_pairs]
            except ValueError as err:
                raise ValueError(f"feature_pairs: {err}") from err
            self._student_feats = keras.Model(student.inputs, [student.output] + s_out)
            self._teacher_feats = keras.Model(teacher.inputs, [teacher.output] + t_out)

    @property
    def student(self):
        """The network being trained (``self.network``)."""
        return self.network

    def hyperparameters(self):
        return {"temperature": self.temperature, "alpha": self.alpha,
                "from_logits": self.from_logits, "beta": self.beta,
                "feature_pairs": [list(p) for p in self.feature_pairs]}

    def compile(self, optimizer="adam", metrics=None, **kwargs):
        """Like ``Model.compile``; the loss is fixed (the KD loss), so ``loss`` is not taken."""
        if "loss" in kwargs:
            raise ValueError("Distiller computes its own loss; do not pass loss=.")
        super().compile(optimizer=optimizer, metrics=metrics, **kwargs)

    def _forward(self, x, training):
        if self.feature_pairs:
            s_all = self._student_feats(x, training=training)
            t_all = self._teacher_feats(x, training=False)
            return s_all[0], t_all[0], s_all[1:], t_all[1:]
        return self.student(x, training=training), self.teacher(x, training=False), [], []

    def _distill_losses(self, y, s_out, t_out, s_feats, t_feats):
        s_logits = _logits(s_out, self.from_logits)
        t_logits = tf.stop_gradient(_logits(t_out, self.from_logits))
        hard, soft = kd_terms(y, s_logits, t_logits, self.temperature)
        per_example = (1.0 - self.alpha) * hard + self.alpha * soft
        for fs, ft in zip(s_feats, t_feats):
            diff = attention_map(fs) - tf.stop_gradient(attention_map(ft))
            per_example += self.beta * tf.norm(diff, axis=-1)
        loss = tf.nn.compute_average_loss(per_example)
        if self.student.losses:
            loss += tf.nn.scale_regularization_loss(tf.add_n(self.student.losses))
        return loss, tf.nn.compute_average_loss(soft)

    def train_update(self, x, y, sample_weight):
        with tf.GradientTape() as tape:
            s_out, t_out, s_feats, t_feats = self._forward(x, True)
            loss, soft = self._distill_losses(y, s_out, t_out, s_feats, t_feats)
        variables = self.student.trainable_variables
        self.apply_gradients(self.optimizer, tape.gradient(loss, variables), variables)
        return s_out, self._terms(loss, soft)

    def test_step(self, data):
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        s_out, t_out, s_feats, t_feats = self._forward(x, False)
        loss, soft = self._distill_losses(y, s_out, t_out, s_feats, t_feats)
        return self.report(self._terms(loss, soft), y, s_out)

    @staticmethod
    def _terms(loss, soft):
        # The losses are averaged over the global batch (compute_average_loss); scale back to
        # a per-replica mean so the logged value does not depend on the replica count.
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        return {"loss": loss * replicas, "distillation_loss": soft * replicas}

    def train_step(self, data):
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)    # sample weights are not used
        y_pred, terms = self.train_update(x, y, None)
        return self.report(terms, y, y_pred)
