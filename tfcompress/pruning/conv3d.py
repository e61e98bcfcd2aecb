"""Pruning a multi-view-stereo network (card 5.5: Xiang, Wang, Lao, Zhang, ISPRS J. 2020).

The paper prunes the 2-D feature extractor of an MVS network with soft channel masks learned
by *mixed back-propagation* (masks take FISTA proximal steps, weights take ordinary
back-propagation) and, for the 3-D cost-volume regularizer, trains a large multi-scale 3-D
CNN and keeps one of its modules at inference. The card is built from the abstract only
([A]); what is implemented here:

- ``Conv3D`` (and ``BatchNormalization``, pooling, padding, cropping, upsampling and dropout
  over 5-D tensors) in :class:`~tfcompress.pruning.FilterPruning` and
  :func:`~tfcompress.pruning.shrink`, in graphs that mix 2-D and 3-D convolutions. The channel
  analysis follows a 2-D feature map into a 3-D cost volume through channel-keeping
  ``Reshape`` layers, ``Concatenate`` along a depth/view axis and element-wise merges; it stops,
  naming the layer, at anything that mixes the channel axis (a ``Reshape`` that folds depth into
  channels, a ``Lambda`` warp, ``Softmax``, ...).
- :func:`variance_cost_volume`: MVSNet's variance cost volume built from plain Keras layers
  that the analysis can follow, with fronto-parallel (rectified-stereo) shifts standing in for
  homography warping.
- :class:`MixedBackpropPruning`: the card's mixed back-propagation (the §5.3 soft-mask + FISTA
  machinery without the center loss) with the card's warm-up before the L1 term starts.
- :func:`select_module`: keep one module (branch) of a trained multi-scale network.

Not implemented: the paper's backbone, its MVS depth loss and DTU-style evaluation (not
retrieved; use any Keras loss), and homography warping (a ``Lambda`` warp freezes the
channels it reads, with an error naming it).
"""

from tfcompress._keras import keras
from tfcompress.errors import PruningError
from tfcompress.pruning.filters import FilterPruning
from tfcompress.pruning.methods import SoftMaskProximal, _check_nonneg


class MixedBackpropCriterion(SoftMaskProximal):
    """Mixed back-propagation (card 5.5, [A]): soft channel masks ``m`` (init 1) receive the
    optimizer's gradient step on the data loss like every weight, plus, after
    ``warmup_steps`` batches, the FISTA proximal step of ``lambda ||m||_1``
    (:class:`~tfcompress.pruning.methods.SoftMaskProximal`). Before the warm-up ends the masks
    get back-propagation only (the card: depth-regression losses are sensitive to the
    mask-induced feature shift, so warm up before turning on the L1 term).
    """

    name = "mixed"

    def __init__(self, l1_penalty=1e-3, step_size=None, fista=True, warmup_steps=0):
        super().__init__(l1_penalty=l1_penalty, l2_penalty=0.0, step_size=step_size,
                         fista=fista)
        if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) \
                or warmup_steps < 0:
            raise PruningError(f"warmup_steps must be a non-negative int, got {warmup_steps!r}.")
        self.warmup_steps = warmup_steps

    def on_batch_end(self, pruner, step):
        if step > self.warmup_steps:
            super().on_batch_end(pruner, step)

    def get_config(self):
        return {**super().get_config(), "warmup_steps": self.warmup_steps}


class MixedBackpropPruning(FilterPruning):
    """:class:`~tfcompress.pruning.FilterPruning` with :class:`MixedBackpropCriterion`: soft
    masks, FISTA on the masks, back-propagation on the weights, an L1 warm-up. Works on
    Conv1D/2D/3D and Dense layers alike; ``exclude`` keeps e.g. the 3-D regularizer dense.

    Args:
        target_sparsity, schedule, log_dir, exclude: as :class:`FilterPruning`.
        l1_penalty: lambda of ``lambda ||m||_1``.
        step_size: the proximal step eta (default: the optimizer's learning rate).
        warmup_steps: batches of back-propagation only before the proximal steps start.
        fista: FISTA extrapolation (``False``: ISTA).

    Example::

        pruner = MixedBackpropPruning(0.5, l1_penalty=1e-2, warmup_steps=100)
        model = pruner.prepare(mvs_model)
        model.compile(...); model.fit(x, depth, callbacks=[pruner])
        small = tfcompress.pruning.shrink(model)
    """

    def __init__(self, target_sparsity, schedule=None, *, l1_penalty=1e-3, step_size=None,
                 warmup_steps=0, fista=True, log_dir=None, exclude=()):
        super().__init__(target_sparsity, "dfs", schedule, log_dir=log_dir, exclude=exclude,
                         l1_penalty=l1_penalty)
        self.method = MixedBackpropCriterion.name
        self.criterion = MixedBackpropCriterion(l1_penalty=l1_penalty, step_size=step_size,
                                                fista=fista, warmup_steps=warmup_steps)


def _shift_width(x, shift, name):
    """``y[:, :, w] = x[:, :, w - shift]`` (zeros where ``w < shift``) with Cropping2D +
    ZeroPadding2D, which channel pruning passes through."""
    if shift == 0:
        return x
    x = keras.layers.Cropping2D(((0, 0), (0, shift)), name=f"{name}_crop")(x)
    return keras.layers.ZeroPadding2D(((0, 0), (shift, 0)), name=f"{name}_pad")(x)


def variance_cost_volume(features, num_depths, *, name="cost_volume"):
    """MVSNet's variance cost volume from 2-D feature maps, as plain Keras layers.

    For depth hypothesis ``d`` (a disparity of ``d`` pixels per unit baseline), view ``v``
    (baseline ``v``; view 0 is the reference) is shifted right by ``d * v`` pixels, and the
    volume holds the variance over views,
    ``C[d] = mean_v(F_v(d)^2) - (mean_v F_v(d))^2``.

    Args:
        features: list of ``V >= 2`` tensors ``(batch, H, W, C)`` with equal shapes.
        num_depths: number of depth hypotheses ``D``; ``(D - 1) * (V - 1) < W``.
        name: prefix of the created layers.

    Returns:
        a tensor ``(batch, D, H, W, C)``.

    Raises:
        ValueError: fewer than two views, unequal shapes, or shifts as wide as the image.
    """
    if len(features) < 2:
        raise ValueError(f"variance_cost_volume needs at least 2 views, got {len(features)}.")
    shape = tuple(features[0].shape[1:])
    if len(shape) != 3 or any(tuple(f.shape[1:]) != shape for f in features):
        raise ValueError("variance_cost_volume needs views of one shape (H, W, C), got "
                         f"{[tuple(f.shape[1:]) for f in features]}.")
    h, w, c = shape
    if not isinstance(num_depths, int) or num_depths < 1 or \
            (num_depths - 1) * (len(features) - 1) >= w:
        raise ValueError(f"num_depths={num_depths!r} shifts the last view by at least the "
                         f"image width {w}.")
    volumes = []
    for v, f in enumerate(features):
        planes = [keras.layers.Reshape((1, h, w, c), name=f"{name}_v{v}_d{d}")(
            _shift_width(f, d * v, f"{name}_v{v}_d{d}")) for d in range(num_depths)]
        volumes.append(planes[0] if num_depths == 1 else
                       keras.layers.Concatenate(axis=1, name=f"{name}_v{v}")(planes))
    squares = [keras.layers.Multiply(name=f"{name}_sq{v}")([x, x]) for v, x in enumerate(volumes)]
    mean = keras.layers.Average(name=f"{name}_mean")(volumes)
    mean_sq = keras.layers.Average(name=f"{name}_mean_sq")(squares)
    sq_mean = keras.layers.Multiply(name=f"{name}_sq_mean")([mean, mean])
    return keras.layers.Subtract(name=name)([mean_sq, sq_mean])


def select_module(model, output):
    """An independent copy of the part of ``model`` that computes layer ``output``'s output.

    The card's module selection for the 3-D regularizer: train all scales jointly, then
    deploy one branch. Only the layers that branch needs are kept; weights are copied.

    Raises:
        PruningError: ``output`` is not a layer of ``model``, or ``model`` is not functional.
    """
    if not getattr(model, "_is_graph_network", False):
        raise PruningError(f"select_module needs a Sequential or functional model, got "
                           f"{type(model).__name__} {model.name!r}.")
    try:
        layer = model.get_layer(output)
    except ValueError:
        raise PruningError(f"Model {model.name!r} has no layer {output!r}.") from None
    sub = keras.Model(model.inputs, layer.output, name=f"{model.name}_{output}")
    copy = keras.models.clone_model(sub)
    copy.set_weights(sub.get_weights())
    return copy


__all__ = ["MixedBackpropCriterion", "MixedBackpropPruning", "select_module",
           "variance_cost_volume"]
