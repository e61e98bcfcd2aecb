"""Adversarial examples for ABanditNAS (card B1): FGSM for adversarial training during the
search, FGSM and PGD for the adversarial evaluation of the derived model.

Fast FGSM with a random start (Wong, Rice, Kolter, ICLR 2020, arXiv 2001.03994):

    delta_0 ~ U(-eps, eps)      (0 without random start)
    delta   = clip(delta_0 + step * sign(grad_x L(f(x + delta_0), y)), -eps, eps)
    x_adv   = clip(x + delta, lo, hi)          (when an input range is given)

PGD-k (Madry et al., ICLR 2018, arXiv 1706.06083), the card's evaluation attack (PGD-7, step
2/255 for eps = 8/255 on [0, 1] images, 🟡):

    delta_0 ~ U(-eps, eps)      (0 without random start)
    delta_{t+1} = P(delta_t + step * sign(grad_x L(f(x + delta_t), y)))       t = 0 .. k-1

with ``P`` the projection onto the L-inf ball of radius ``eps`` and, given an input range, onto
``lo <= x + delta <= hi``. :func:`robust_accuracy` measures the accuracy on clean, FGSM and PGD
inputs.

The model runs in inference mode (``training=False``) while the perturbation is computed, so
BatchNormalization statistics are only updated by the training step on ``x_adv``.
"""

import numpy as np

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


def _default_loss(t, p):
    return keras.losses.sparse_categorical_crossentropy(t, p, from_logits=True)


def pgd_examples(model, x, y, *, epsilon, steps=7, step_size=None, random_start=True,
                 input_range=None, loss=None, seed=None):
    """PGD-``steps`` adversarial inputs within the L-inf ball of radius ``epsilon`` (module
    docstring).

    Args:
        model: a Keras model returning logits.
        x, y: a batch of inputs and integer labels.
        epsilon: the L-inf radius.
        steps: the number of signed-gradient steps (7 for the card's PGD-7, 20 for PGD-20).
        step_size: the step (default ``2.5 * epsilon / steps``, Madry et al.'s rule of thumb;
            the card's PGD-7 uses 2/255 at eps = 8/255).
        random_start: start from a uniform point in the ball.
        input_range: ``(lo, hi)`` the inputs must stay in, or ``None``.
        loss: per-example loss ``loss(y, logits)`` (default: sparse cross-entropy on logits).
        seed: an int for a reproducible random start.

    Returns:
        ``x + delta`` as a tensor (no gradient).
    """
    if epsilon <= 0:
        raise ValueError(f"epsilon must be positive, got {epsilon!r}.")
    if not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}.")
    step = 2.5 * epsilon / steps if step_size is None else step_size
    if step <= 0:
        raise ValueError(f"step_size must be positive, got {step_size!r}.")
    loss = _default_loss if loss is None else loss
    x = tf.convert_to_tensor(x)

    def project(d):
        d = tf.clip_by_value(d, -epsilon, epsilon)
        if input_range is not None:
            d = tf.clip_by_value(x + d, input_range[0], input_range[1]) - x
        return d

    if random_start:
        if seed is None:
            delta = tf.random.uniform(tf.shape(x), -epsilon, epsilon, dtype=x.dtype)
        else:
            delta = tf.random.stateless_uniform(tf.shape(x), (int(seed), 0), -epsilon, epsilon,
                                                dtype=x.dtype)
        delta = project(delta)
    else:
        delta = tf.zeros_like(x)
    for _ in range(int(steps)):
        with tf.GradientTape() as tape:
            tape.watch(delta)
            value = tf.reduce_sum(loss(y, model(x + delta, training=False)))
        delta = project(delta + step * tf.sign(tape.gradient(value, delta)))
    return tf.stop_gradient(x + delta)


def robust_accuracy(model, x, y, *, epsilon, attacks=("clean", "fgsm", "pgd"), pgd_steps=7,
                    pgd_step_size=None, input_range=None, batch_size=256, seed=0):
    """Accuracy of ``model`` on clean inputs and under FGSM and PGD attacks (ABanditNAS'
    adversarial evaluation of a searched model).

    FGSM here is the evaluation attack: one step of size ``epsilon`` from ``x`` (no random
    start); PGD is :func:`pgd_examples` with ``pgd_steps`` steps and a random start.

    Args:
        model: a Keras classifier returning logits.
        x, y: test inputs and integer labels.
        epsilon: the L-inf radius, in the units of ``x`` (8/255 for [0, 1] images, 16/255 for
            images scaled to [-1, 1]).
        attacks: any of ``"clean"``, ``"fgsm"``, ``"pgd"``.
        pgd_steps, pgd_step_size: PGD-k settings (see :func:`pgd_examples`).
        input_range: ``(lo, hi)`` of valid inputs, or ``None``.
        batch_size: attack batch size.
        seed: seed of PGD's random starts.

    Returns:
        ``{attack: accuracy}`` (floats in [0, 1]).
    """
    unknown = [a for a in attacks if a not in ("clean", "fgsm", "pgd")]
    if unknown or not attacks:
        raise ValueError(f"attacks must be a non-empty subset of ('clean', 'fgsm', 'pgd'), got "
                         f"{tuple(attacks)!r}.")
    x = np.asarray(x, np.float32)
    y = np.asarray(y).reshape(-1)
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"robust_accuracy: {len(x)} inputs and {len(y)} labels; need the same, "
                         "non-zero count.")
    correct = {a: 0 for a in attacks}
    for b, i in enumerate(range(0, len(x), batch_size)):
        xb, yb = tf.constant(x[i: i + batch_size]), tf.constant(y[i: i + batch_size])
        for a in attacks:
            if a == "clean":
                xa = xb
            elif a == "fgsm":
                xa = fgsm_examples(model, xb, yb, epsilon=epsilon, random_start=False,
                                   input_range=input_range)
            else:
                xa = pgd_examples(model, xb, yb, epsilon=epsilon, steps=pgd_steps,
                                  step_size=pgd_step_size, input_range=input_range,
                                  seed=seed * 100003 + b)
            pred = np.argmax(model(xa, training=False).numpy(), axis=-1)
            correct[a] += int(np.sum(pred == yb.numpy()))
    return {a: correct[a] / len(x) for a in attacks}
