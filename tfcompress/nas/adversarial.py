"""FGSM adversarial examples for adversarial training during search (ABanditNAS, card B1).

Fast FGSM with a random start (Wong, Rice, Kolter, ICLR 2020, arXiv 2001.03994):

    delta_0 ~ U(-eps, eps)      (0 without random start)
    delta   = clip(delta_0 + step * sign(grad_x L(f(x + delta_0), y)), -eps, eps)
    x_adv   = clip(x + delta, lo, hi)          (when an input range is given)

The model runs in inference mode (``training=False``) while the perturbation is computed, so
BatchNormalization statistics are only updated by the training step on ``x_adv``.
"""

from tfcompress._keras import keras, tf


def fgsm_examples(model, x, y, *, epsilon, step_size=None, random_start=True, input_range=None,
                  loss=None):
    """Adversarial inputs within the L-inf ball of radius ``epsilon`` around ``x``.

    Args:
        model: a Keras model returning logits.
        x, y: a batch of inputs and integer labels.
        epsilon: the L-inf radius (e.g. 8/255 for [0, 1] images; 16/255 for [-1, 1] images).
        step_size: the FGSM step (default 1.25 * epsilon with a random start, else epsilon).
        random_start: start from a uniform point in the ball.
        input_range: ``(lo, hi)`` to clip the result to, or ``None``.
        loss: per-example loss ``loss(y, logits)`` (default: sparse cross-entropy on logits).
    """
    if epsilon <= 0:
        raise ValueError(f"epsilon must be positive, got {epsilon!r}.")
    step = (1.25 * epsilon if random_start else epsilon) if step_size is None else step_size
    x = tf.convert_to_tensor(x)
    if loss is None:
        def loss(t, p):
            return keras.losses.sparse_categorical_crossentropy(t, p, from_logits=True)
    delta = (tf.random.uniform(tf.shape(x), -epsilon, epsilon, dtype=x.dtype) if random_start
             else tf.zeros_like(x))
    with tf.GradientTape() as tape:
        tape.watch(delta)
        value = tf.reduce_sum(loss(y, model(x + delta, training=False)))
    grad = tape.gradient(value, delta)
    delta = tf.clip_by_value(delta + step * tf.sign(grad), -epsilon, epsilon)
    out = x + delta
    if input_range is not None:
        out = tf.clip_by_value(out, input_range[0], input_range[1])
    return tf.stop_gradient(out)
