"""Unstructured, block and N:M magnitude pruning on TF-MOT (Zhu & Gupta 2017, book §5.2).

``magnitude(model, ...)`` returns a copy of ``model`` whose prunable layers are wrapped in
TF-MOT's ``PruneLowMagnitude``; train it with :class:`UpdatePruningStep` in the callbacks,
:func:`strip` the wrappers, and export with :func:`tfcompress.convert_sparse` (TFLite's
``EXPERIMENTAL_SPARSITY`` weight encoding) or ``tfcompress.convert``.
"""

import tensorflow_model_optimization as tfmot

from tfcompress._keras import keras
from tfcompress.errors import PruningError
from tfcompress.pruning import schedules as _schedules
from tfcompress.pruning.prunable import make_prunable

UpdatePruningStep = tfmot.sparsity.keras.UpdatePruningStep
PruningSummaries = tfmot.sparsity.keras.PruningSummaries



def _wrapper_class():
    from tensorflow_model_optimization.python.core.sparsity.keras import pruning_wrapper

    return pruning_wrapper.PruneLowMagnitude


def _check_graph_model(model, what):
    if not isinstance(model, keras.Model):
        raise PruningError(f"{what} needs a tf_keras Model, got {type(model).__name__}.")
    if not (isinstance(model, keras.Sequential) or getattr(model, "_is_graph_network", False)):
        raise PruningError(f"{what} supports Sequential and functional models; model "
                           f"{model.name!r} is a subclassed model.")
    if not model.built or not model.inputs:
        raise PruningError(f"Model {model.name!r} is not built; give it an Input first.")


def _m_by_n(m_by_n, target_sparsity):
    if m_by_n is None:
        return None, target_sparsity
    if (not isinstance(m_by_n, (tuple, list)) or len(m_by_n) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in m_by_n)
            or not 0 < m_by_n[0] < m_by_n[1]):
        raise PruningError(f"m_by_n must be (m, n) with 0 < m < n: m zeros in every n "
                           f"consecutive weights, e.g. (2, 4); got {m_by_n!r}.")
    implied = m_by_n[0] / m_by_n[1]
    if target_sparsity is not None and abs(target_sparsity - implied) > 1e-9:
        raise PruningError(f"m_by_n={tuple(m_by_n)} fixes the sparsity at {implied:g}; "
                           f"target_sparsity={target_sparsity!r} contradicts it (leave it None).")
    return tuple(m_by_n), implied


def magnitude(model, target_sparsity=None, *, schedule=None, block_size=None, m_by_n=None,
              exclude=()):
    """Wrap ``model``'s prunable layers for magnitude pruning with TF-MOT.

    Each wrapped layer keeps a mask ``M = 1[|w| > tau_t]`` where ``tau_t`` is the
    ``s_t``-quantile of ``|w|`` in the layer (or of block averages with ``block_size``), and
    computes with ``w * M``; ``s_t`` follows ``schedule`` (Zhu & Gupta 2017,
    arXiv:1710.01878). With ``m_by_n=(2, 4)`` the mask keeps the 2 largest of every 4
    consecutive input weights (2:4 semi-structured sparsity), set once at the first step.

    larq ``QuantConv2D``/``QuantDense`` are swapped for their prunable subclasses
    (:mod:`tfcompress.pruning.prunable`) first. ``model`` itself is not modified.

    Args:
        model: a built Sequential or functional tf_keras model.
        target_sparsity: final fraction of zero weights in each pruned layer, in [0, 1).
        schedule: ``None`` (prune to ``target_sparsity`` at the first step, re-applied every
            10 steps), a tfcompress schedule or anything :func:`schedules.get` accepts, or a
            TF-MOT schedule. Its final sparsity must equal ``target_sparsity``.
        block_size: ``(rows, cols)`` blocks pruned together (TF-MOT ``block_size``).
        m_by_n: ``(m, n)``: m zeros in every n consecutive weights (TF-MOT ``sparsity_m_by_n``);
            implies ``target_sparsity = m / n``.
        exclude: names of layers to leave dense (e.g. the first conv and the classifier).

    Returns:
        The wrapped model (compile it, then ``fit(..., callbacks=[UpdatePruningStep()])``).

    Raises:
        PruningError: a bad option, a layer with weights TF-MOT cannot prune (named), or no
            prunable layer at all.

    Example::

        pruned = tfcompress.pruning.magnitude(model, 0.9, schedule=PolynomialDecay(
            0.0, 0.9, begin_step=0, end_step=500))
        pruned.compile(...)
        pruned.fit(x, y, callbacks=[tfcompress.pruning.UpdatePruningStep()])
        final = tfcompress.pruning.strip(pruned)
    """
    _check_graph_model(model, "magnitude()")
    m_by_n, target_sparsity = _m_by_n(m_by_n, target_sparsity)
    if target_sparsity is None:
        raise PruningError("magnitude() needs target_sparsity (or m_by_n).")
    if isinstance(target_sparsity, bool) or not isinstance(target_sparsity, (int, float)) \
            or not 0.0 <= target_sparsity < 1.0:
        raise PruningError(f"target_sparsity must be in [0, 1), got {target_sparsity!r}.")
    if isinstance(schedule, tfmot.sparsity.keras.PruningSchedule):
        tfmot_schedule = schedule
    else:
        try:
            sched = _schedules.get(schedule, sparsity=float(target_sparsity))
        except ValueError as err:
            raise PruningError(str(err)) from err
        if not hasattr(sched, "to_tfmot"):
            raise PruningError(
                f"magnitude() runs on TF-MOT and needs a ConstantSparsity / PolynomialDecay "
                f"(tfcompress or TF-MOT) schedule, got {sched!r}.")
        if m_by_n is None and abs(sched.final_sparsity - target_sparsity) > 1e-9:
            raise PruningError(
                f"The schedule ends at sparsity {sched.final_sparsity:g} but target_sparsity is "
                f"{target_sparsity:g}; make them agree.")
        try:
            tfmot_schedule = sched.to_tfmot()
        except ValueError as err:
            raise PruningError(str(err)) from err
    if block_size is not None and (len(block_size) != 2 or min(block_size) < 1):
        raise PruningError(f"block_size must be (rows, cols) of positive ints, got {block_size!r}.")
    exclude = set(exclude)
    unknown = exclude - {layer.name for layer in model.layers}
    if unknown:
        raise PruningError(f"exclude names unknown layer(s): {', '.join(sorted(unknown))}.")

    params = {"pruning_schedule": tfmot_schedule, "sparsity_m_by_n": m_by_n}
    if block_size is not None:
        params["block_size"] = tuple(block_size)
    wrapped = []

    def wrap(layer):
        if layer.name in exclude:
            return layer
        try:
            out = tfmot.sparsity.keras.prune_low_magnitude(layer, **params)
        except ValueError as err:
            if layer.weights and "supported layer" in str(err):
                raise PruningError(
                    f"Layer {layer.name!r} ({type(layer).__name__}) has weights but TF-MOT cannot "
                    "prune it: give it a get_prunable_weights() method (TF-MOT's PrunableLayer "
                    f"protocol) or pass exclude=[{layer.name!r}].") from err
            if layer.weights:
                raise PruningError(f"TF-MOT refused layer {layer.name!r}: {err}") from err
            return layer
        if layer.weights:
            wrapped.append(layer.name)
        return out

    copy = make_prunable(model)
    out = keras.models.clone_model(copy, clone_function=wrap)
    if not wrapped:
        raise PruningError(f"Model {model.name!r} has no layer that magnitude() can prune "
                           "(none with prunable weights outside `exclude`).")
    return out


def is_wrapped(model):
    """Whether ``model`` still holds TF-MOT pruning wrappers."""
    cls = _wrapper_class()
    return any(isinstance(layer, cls) for layer in model.layers)


def strip(model):
    """Remove TF-MOT's pruning wrappers, keeping the sparse weights (``strip_pruning``).

    Raises:
        PruningError: ``model`` holds no pruning wrappers.
    """
    if not isinstance(model, keras.Model) or not is_wrapped(model):
        raise PruningError(
            f"Model {getattr(model, 'name', model)!r} has no pruning wrappers to strip (it was "
            "not made by tfcompress.pruning.magnitude, or is already stripped).")
    return tfmot.sparsity.keras.strip_pruning(model)


def kernel_sparsity(model):
    """``{layer name: fraction of exact zeros}`` of each layer's kernel (after :func:`strip`)."""
    out = {}
    for layer in model.layers:
        for attr in ("kernel", "depthwise_kernel"):
            w = getattr(layer, attr, None)
            if w is not None:
                v = w.numpy()
                out[layer.name] = float((v == 0).mean())
                break
    return out
