"""Per-layer sparsity, multiply-accumulate counts and a sparsity bar plot."""

from pathlib import Path

import numpy as np

from tfcompress._keras import keras
from tfcompress.pruning.masks import FilterMask, filter_masks


def _kernel(layer):
    inner = getattr(layer, "layer", None)          # TF-MOT wrapper
    for obj in (layer, inner):
        for attr in ("kernel", "depthwise_kernel"):
            w = getattr(obj, attr, None) if obj is not None else None
            if w is not None:
                return w
    return None


def _tfmot_mask(layer):
    pv = getattr(layer, "pruning_vars", None)
    if pv:
        return pv[0][1].numpy()
    return None


def sparsity_report(model):
    """One row per layer with a kernel: filter and weight sparsity.

    Works on filter-masked models (the ``FilterMask`` decides which filters are pruned), on
    TF-MOT-wrapped models (their masks) and on plain models (exact zeros; a filter counts as
    pruned when all its weights are 0).

    Returns:
        list of dicts with ``layer``, ``type``, ``filters``, ``pruned_filters``,
        ``filter_sparsity``, ``weights``, ``zero_weights``, ``weight_sparsity``.
    """
    masks = filter_masks(model)
    rows = []
    for layer in model.layers:
        if isinstance(layer, FilterMask):
            continue
        w = _kernel(layer)
        if w is None:
            continue
        k = w.numpy()
        mask = _tfmot_mask(layer)
        eff = k * mask if mask is not None else k
        per_filter = np.abs(eff.reshape(-1, k.shape[-1])).sum(0)
        if layer.name in masks:
            pruned = int((masks[layer.name].mask.numpy() == 0).sum())
            eff = eff * (masks[layer.name].mask.numpy() != 0)
        else:
            pruned = int((per_filter == 0).sum())
        zeros = int((eff == 0).sum())
        rows.append({
            "layer": layer.name,
            "type": type(getattr(layer, "layer", layer)).__name__,
            "filters": int(k.shape[-1]), "pruned_filters": pruned,
            "filter_sparsity": pruned / k.shape[-1],
            "weights": int(k.size), "zero_weights": zeros, "weight_sparsity": zeros / k.size,
        })
    return rows


def plot_sparsity(report, path, title="Sparsity per layer"):
    """Bar plot of filter and weight sparsity per layer, written to ``path`` (PNG).

    Args:
        report: rows from :func:`sparsity_report`, or a model (the report is computed).
    """
    from matplotlib.figure import Figure   # no pyplot: the user's backend stays as it is

    rows = sparsity_report(report) if isinstance(report, keras.Model) else list(report)
    names = [r["layer"] for r in rows]
    x = np.arange(len(rows))
    fig = Figure(figsize=(max(4.0, 0.6 * len(rows) + 2), 3.2))
    ax = fig.subplots()
    ax.bar(x - 0.2, [100 * r["filter_sparsity"] for r in rows], 0.4, label="filters")
    ax.bar(x + 0.2, [100 * r["weight_sparsity"] for r in rows], 0.4, label="weights")
    ax.set_xticks(x, names, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("pruned (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def _shape(s):
    return s[0] if isinstance(s, list) else s


def layer_macs(layer):
    """Multiply-accumulates of one call of ``layer`` on one example (0 for other layers).

    Conv: ``H_out W_out kh kw C_in/groups C_out``; depthwise: ``H_out W_out kh kw C_in m``;
    separable: depthwise + ``H_out W_out C_in m C_out``; Dense: ``in * units`` per position.
    """
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        out = _shape(layer.output_shape)
        k = layer.depthwise_kernel.shape
        return int(np.prod(out[1:-1]) * np.prod(k))
    if isinstance(layer, keras.layers.SeparableConv2D):
        out = _shape(layer.output_shape)
        return int(np.prod(out[1:-1]) * (np.prod(layer.depthwise_kernel.shape)
                                         + np.prod(layer.pointwise_kernel.shape)))
    if isinstance(layer, (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)):
        out = _shape(layer.output_shape)
        if isinstance(layer, keras.layers.Conv2DTranspose):
            inp = _shape(layer.input_shape)
            return int(np.prod(inp[1:-1]) * np.prod(layer.kernel.shape))
        return int(np.prod(out[1:-1]) * np.prod(layer.kernel.shape))
    if isinstance(layer, keras.layers.Dense):
        inp = _shape(layer.input_shape)
        return int(np.prod(inp[1:-1] or [1]) * np.prod(layer.kernel.shape))
    inner = getattr(layer, "layer", None)
    if isinstance(inner, keras.layers.Layer):
        return layer_macs(inner)
    return 0


def count_macs(model):
    """Total multiply-accumulates per example (FLOPs = 2 x MACs), over nested models too."""
    total = 0
    for layer in model.layers:
        total += count_macs(layer) if isinstance(layer, keras.Model) else layer_macs(layer)
    return int(total)


def count_params(model, *, nonzero=False):
    """Trainable + BatchNormalization parameters (masks and pruning steps excluded).

    With ``nonzero=True`` only non-zero values are counted (what a sparse format stores).
    """
    total = 0
    for w in model.weights:
        name = w.name.split("/")[-1].split(":")[0]
        if name in ("mask", "pruning_step", "threshold") or "pruning_step" in name:
            continue
        if name.startswith("mask") or "iteration" in name:
            continue
        total += int(np.count_nonzero(w.numpy())) if nonzero else int(np.prod(w.shape))
    return total
