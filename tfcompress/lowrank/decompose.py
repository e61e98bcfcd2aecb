"""Implementation of :mod:`tfcompress.lowrank` (see its docstring)."""

import numpy as np

from tfcompress._keras import keras
from tfcompress.errors import TfcompressError
from tfcompress.inspection import check_tf_keras_model


class DecompositionError(TfcompressError, ValueError):
    """A layer or option cannot be decomposed (names the layer and the reason)."""


# ----------------------------------------------------------------------------- factors
def svd_factors(kernel, rank):
    """``(A, B)`` with ``A @ B`` the best rank-``rank`` approximation of ``kernel``."""
    u, s, vt = np.linalg.svd(kernel.astype(np.float64), full_matrices=False)
    root = np.sqrt(s[:rank])
    return (u[:, :rank] * root).astype(np.float32), (root[:, None] * vt[:rank]).astype(np.float32)


def _unfold(t, mode):
    return np.moveaxis(t, mode, 0).reshape(t.shape[mode], -1)


def tucker2_factors(kernel, r_in, r_out, iterations=10):
    """``(U_in (C_in x R1), core (kh, kw, R1, R2), U_out (C_out x R2))`` by HOSVD + HOOI."""
    k = kernel.astype(np.float64)
    u_in = np.linalg.svd(_unfold(k, 2), full_matrices=False)[0][:, :r_in]
    u_out = np.linalg.svd(_unfold(k, 3), full_matrices=False)[0][:, :r_out]
    for _ in range(iterations if (r_in < k.shape[2] or r_out < k.shape[3]) else 0):
        y = np.einsum("hwio,or->hwir", k, u_out)
        u_in = np.linalg.svd(_unfold(y, 2), full_matrices=False)[0][:, :r_in]
        y = np.einsum("hwio,ir->hwro", k, u_in)
        u_out = np.linalg.svd(_unfold(y, 3), full_matrices=False)[0][:, :r_out]
    core = np.einsum("hwio,ia,ob->hwab", k, u_in, u_out)
    return u_in.astype(np.float32), core.astype(np.float32), u_out.astype(np.float32)


def cp_factors(kernel, rank, iterations=200, seed=0):
    """CP factors ``(A (kh x R), B (kw x R), C (C_in x R), D (C_out x R))`` with
    ``K[h, w, i, o] ~ sum_r A[h, r] B[w, r] C[i, r] D[o, r]``, by ALS (exact construction
    when ``rank >= kh kw C_in``)."""
    kh, kw, ci, co = kernel.shape
    if rank >= kh * kw * ci:
        a = np.zeros((kh, rank)), np.zeros((kw, rank)), np.zeros((ci, rank)), np.zeros((co, rank))
        r = 0
        for h in range(kh):
            for w in range(kw):
                for i in range(ci):
                    a[0][h, r] = a[1][w, r] = a[2][i, r] = 1.0
                    a[3][:, r] = kernel[h, w, i, :]
                    r += 1
        return tuple(f.astype(np.float32) for f in a)
    rng = np.random.default_rng(seed)
    k = kernel.astype(np.float64)
    factors = [rng.normal(size=(n, rank)) for n in k.shape]
    for _ in range(iterations):
        for mode in range(4):
            others = [factors[m] for m in range(4) if m != mode]
            kr = others[0]
            for f in others[1:]:
                kr = np.einsum("ir,jr->ijr", kr, f).reshape(-1, rank)
            gram = np.ones((rank, rank))
            for f in others:
                gram *= f.T @ f
            factors[mode] = _unfold(k, mode) @ kr @ np.linalg.pinv(gram)
    return tuple(f.astype(np.float32) for f in factors)


# ----------------------------------------------------------------------------- ranks
def _rank(full, singular, layer, rank_ratio, energy, param_cost, param_ratio, params):
    if rank_ratio is not None:
        return max(1, int(round(rank_ratio * full)))
    if energy is not None:
        e = np.cumsum(singular ** 2) / np.sum(singular ** 2)
        return int(min(full, np.searchsorted(e, energy - 1e-12) + 1))
    # param_ratio: largest rank whose factor parameters fit in param_ratio * original.
    best = 1
    for r in range(1, full + 1):
        if param_cost(r) <= param_ratio * params:
            best = r
    return best


def _check_options(rank_ratio, energy, param_ratio, method):
    given = [n for n, v in (("rank_ratio", rank_ratio), ("energy", energy),
                            ("param_ratio", param_ratio)) if v is not None]
    if len(given) != 1:
        raise DecompositionError(
            f"Give exactly one of rank_ratio, energy or param_ratio (got {given or 'none'}).")
    value = {"rank_ratio": rank_ratio, "energy": energy, "param_ratio": param_ratio}[given[0]]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise DecompositionError(f"{given[0]} must be in (0, 1], got {value!r}.")
    if method not in ("tucker2", "cp"):
        raise DecompositionError(f"method must be 'tucker2' or 'cp', got {method!r}.")


# --------------------------------------------------------------------------- rebuild
def _dense_block(layer, kernel, bias, rank):
    a, b = svd_factors(kernel, rank)
    first = keras.layers.Dense(rank, use_bias=False, name=f"{layer.name}_svd_u")
    second = keras.layers.Dense(kernel.shape[1], use_bias=layer.use_bias, activation=layer.activation,
                                name=f"{layer.name}_svd_v")
    block = keras.Sequential([first, second], name=layer.name)
    return block, [[a], [b] + ([bias] if layer.use_bias else [])], {"layer": layer.name, "type": "Dense", "method": "svd", "rank": rank}


def _conv_block(layer, kernel, bias, method, ranks):
    kh, kw, ci, co = kernel.shape
    cfg = dict(padding=layer.padding)
    if method == "tucker2":
        r1, r2 = ranks
        u_in, core, u_out = tucker2_factors(kernel, r1, r2)
        l1 = keras.layers.Conv2D(r1, 1, use_bias=False, name=f"{layer.name}_t_in")
        l2 = keras.layers.Conv2D(r2, (kh, kw), strides=layer.strides, dilation_rate=layer.dilation_rate,
                                 use_bias=False, name=f"{layer.name}_t_core", **cfg)
        l3 = keras.layers.Conv2D(co, 1, use_bias=layer.use_bias, activation=layer.activation,
                                 name=f"{layer.name}_t_out")
        block = keras.Sequential([l1, l2, l3], name=layer.name)
        weights = [[u_in[None, None]], [core], [u_out.T[None, None]] + ([bias] if layer.use_bias else [])]
        return block, weights, {"layer": layer.name, "type": "Conv2D", "method": "tucker2", "rank": [r1, r2]}
    (r,) = ranks
    if tuple(layer.dilation_rate) != (1, 1):
        raise DecompositionError(f"Layer {layer.name!r}: CP decomposition supports dilation 1 only; "
                                 "use method='tucker2'.")
    a, b, c, d = cp_factors(kernel, r)
    sh, sw = layer.strides
    l1 = keras.layers.Conv2D(r, 1, use_bias=False, name=f"{layer.name}_cp_in")
    l2 = keras.layers.DepthwiseConv2D((kh, 1), strides=(sh, 1), use_bias=False, name=f"{layer.name}_cp_h", **cfg)
    l3 = keras.layers.DepthwiseConv2D((1, kw), strides=(1, sw), use_bias=False, name=f"{layer.name}_cp_w", **cfg)
    l4 = keras.layers.Conv2D(co, 1, use_bias=layer.use_bias, activation=layer.activation,
                             name=f"{layer.name}_cp_out")
    block = keras.Sequential([l1, l2, l3, l4], name=layer.name)
    weights = [[c[None, None]], [a[:, None, :, None]], [b[None, :, :, None]],
               [d.T[None, None]] + ([bias] if layer.use_bias else [])]
    return block, weights, {"layer": layer.name, "type": "Conv2D", "method": "cp", "rank": [r]}


def _supported(layer):
    if type(layer) is keras.layers.Dense:
        return True
    if type(layer) is keras.layers.Conv2D:
        return layer.groups == 1 and layer.data_format == "channels_last"
    return False


def decompose(model, *, rank_ratio=None, energy=None, param_ratio=None, method="tucker2",
              layers=None, min_params=0):
    """Return a copy of ``model`` with Dense and Conv2D layers replaced by low-rank factors.

    Args:
        rank_ratio: keep this fraction of each layer's full rank (per mode for Tucker-2).
        energy: keep the smallest rank holding this share of the squared singular values.
        param_ratio: largest rank whose factors hold at most this share of the layer's
            parameters (for a model-wide "50% parameters" target).
        method: ``"tucker2"`` (default) or ``"cp"`` for Conv2D layers.
        layers: names of the layers to decompose (default: every plain Dense/Conv2D with more
            than ``min_params`` kernel parameters). Naming a layer of another type is an error.

    Returns:
        the new model; ``model.lowrank_report`` lists layer, method and rank.

    Raises:
        DecompositionError: no or several rank options, ratio outside (0, 1], unknown method,
            a named layer that is missing or not decomposable.
    """
    check_tf_keras_model(model, "lowrank.decompose", DecompositionError)
    _check_options(rank_ratio, energy, param_ratio, method)
    by_name = {la.name: la for la in model.layers}
    if layers is not None:
        for name in layers:
            if name not in by_name:
                raise DecompositionError(f"No layer named {name!r} in model {model.name!r}.")
            if not _supported(by_name[name]):
                raise DecompositionError(
                    f"Layer {name!r} ({type(by_name[name]).__name__}) cannot be decomposed: only "
                    "plain Dense and Conv2D layers (groups=1, channels_last) are supported.")
        targets = set(layers)
    else:
        targets = {la.name for la in model.layers if _supported(la)
                   and int(np.prod(la.kernel.shape)) > min_params}
    if not targets:
        raise DecompositionError(f"Model {model.name!r} has no Dense or Conv2D layer to decompose.")
    report = []
    pending = {}    # factor weights, set once clone_model has built the blocks

    def clone(layer):
        if layer.name not in targets:
            return layer.__class__.from_config(layer.get_config())
        kernel = layer.kernel.numpy()
        bias = layer.bias.numpy() if layer.use_bias else None
        params = kernel.size
        if isinstance(layer, keras.layers.Dense):
            full = min(kernel.shape)
            s = np.linalg.svd(kernel, compute_uv=False)
            r = _rank(full, s, layer, rank_ratio, energy, lambda k: k * sum(kernel.shape), param_ratio, params)
            block, weights, info = _dense_block(layer, kernel, bias, r)
        else:
            kh, kw, ci, co = kernel.shape
            if method == "tucker2":
                s_in = np.linalg.svd(_unfold(kernel, 2), compute_uv=False)
                s_out = np.linalg.svd(_unfold(kernel, 3), compute_uv=False)
                if param_ratio is not None:
                    # the largest core (r1 * r2, ties to balanced ranks) within the budget
                    best, key = (1, 1), (-1, 0)
                    for r1 in range(1, ci + 1):
                        for r2 in range(1, co + 1):
                            if ci * r1 + kh * kw * r1 * r2 + r2 * co <= param_ratio * params:
                                k = (r1 * r2, -abs(r1 / ci - r2 / co))
                                if k > key:
                                    best, key = (r1, r2), k
                    ranks = best
                else:
                    ranks = (_rank(ci, s_in, layer, rank_ratio, energy, None, None, params),
                             _rank(co, s_out, layer, rank_ratio, energy, None, None, params))
            else:
                s = np.linalg.svd(_unfold(kernel, 3), compute_uv=False)
                full = kh * kw * ci
                ranks = (_rank(full, np.pad(s, (0, max(0, full - len(s)))), layer, rank_ratio, energy,
                               lambda r: r * (ci + kh + kw + co), param_ratio, params),)
            block, weights, info = _conv_block(layer, kernel, bias, method, ranks)
        info["params_before"] = int(params)
        info["params_after"] = int(sum(np.prod(w.shape) for ws in weights for w in ws)
                                   - (0 if bias is None else bias.size))
        report.append(info)
        pending[layer.name] = weights
        return block

    new = keras.models.clone_model(model, clone_function=clone)
    for name, weights in pending.items():
        for sub, w in zip(new.get_layer(name).layers, weights):
            sub.set_weights(w)
    for layer in model.layers:
        if layer.name not in targets and layer.weights:
            new.get_layer(layer.name).set_weights(layer.get_weights())
    new.__dict__["lowrank_report"] = report    # a plain list, outside Keras' tracking
    return new


def fine_tune(model, x, y=None, *, epochs=1, learning_rate=1e-3, loss="sparse_categorical_crossentropy",
              metrics=("accuracy",), batch_size=128, verbose=0, **fit_kwargs):
    """Compile ``model`` with Adam(``learning_rate``) and fit it (a recovery step after
    decomposition). Returns the Keras ``History``."""
    model.compile(keras.optimizers.Adam(learning_rate), loss, list(metrics))
    return model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=verbose, **fit_kwargs)
