"""BNN training aids from larq, exposed where tfcompress users look for them.

- :func:`bop`: Bop (Helwegen et al., NeurIPS 2019, arXiv 1906.02107) for the binary kernels
  and a regular optimizer for everything else, as larq's ``CaseOptimizer``. Bop flips a binary
  weight when the moving average ``m`` of its gradient exceeds ``threshold`` and agrees in sign
  with the weight: ``m <- (1-gamma) m + gamma g``; ``w <- -w`` if ``|m| > tau`` and
  ``sign(m) = sign(w)``.
- ``weight_clip``: larq's ``WeightClip`` constraint (latent weights kept in [-1, 1]).
- :func:`flip_ratio_scope`: larq's context in which binary layers built inside it log the
  ``flip_ratio`` metric (share of binary weights that changed sign in each step).
"""

import larq as lq

from tfcompress._keras import keras

Bop = lq.optimizers.Bop
CaseOptimizer = lq.optimizers.CaseOptimizer
WeightClip = lq.constraints.WeightClip
weight_clip = lq.constraints.WeightClip
FlipRatio = lq.metrics.FlipRatio


def bop(real_optimizer=None, *, threshold=1e-8, gamma=1e-4):
    """A ``CaseOptimizer``: Bop for 1-bit kernels, ``real_optimizer`` (default Adam 1e-3) for
    the rest (larq needs a *legacy* Keras optimizer there). larq's defaults ``threshold=1e-8`` and ``gamma=1e-4`` follow the paper."""
    if not threshold > 0 or not 0 < gamma < 1:
        raise ValueError(f"Bop needs threshold > 0 and 0 < gamma < 1, got {threshold}, {gamma}.")
    real = real_optimizer if real_optimizer is not None else keras.optimizers.legacy.Adam(1e-3)
    return CaseOptimizer((Bop.is_binary_variable, Bop(threshold=threshold, gamma=gamma)),
                         default_optimizer=real)


def flip_ratio_scope():
    """``with flip_ratio_scope(): model = build()`` adds the ``flip_ratio`` metric to binary
    kernel quantizers created inside it."""
    return lq.context.metrics_scope(["flip_ratio"])


__all__ = ["Bop", "CaseOptimizer", "FlipRatio", "WeightClip", "bop", "flip_ratio_scope",
           "weight_clip"]
