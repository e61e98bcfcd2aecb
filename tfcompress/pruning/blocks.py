"""Block-level pruning of residual networks (DFS's "sparse supervision" of blocks, card 5.3).

A residual block computes ``x_{b+1} = x_b + F_b(x_b)``; :func:`add_block_masks` returns a copy
of a model with a :class:`~tfcompress.pruning.masks.BlockMask` on each block's residual branch,
``x_{b+1} = x_b + m_b s_b F_b(x_b)``. DFS (``FilterPruning(method="dfs", block_penalty=...)``)
drives the scales ``s_b`` to exactly 0 with FISTA and hard-masks the lowest ones on its
schedule; :func:`remove_pruned_blocks` (called by :func:`~tfcompress.pruning.shrink`) rebuilds
the model without the branches whose ``m_b s_b`` is 0. Only the residual branch goes; the
shortcut stays (the card's pitfall), so the output is unchanged.

A block is an ``Add`` of two tensors of which one, the shortcut, is an ancestor of the other,
the branch (identity shortcuts). Blocks whose shortcut has its own layers (a projection, as at
a change of shape) are found only when named: ``blocks={"add_name": branch_input_index}``.
"""

from tfcompress._keras import keras
from tfcompress.errors import PruningError
from tfcompress.pruning.graph import clone_layer, parse, rebuild
from tfcompress.pruning.masks import BlockMask, block_masks

__all__ = ["add_block_masks", "find_blocks", "remove_pruned_blocks"]


def _ancestors(graph, name):
    seen, stack = set(), [name]
    while stack:
        n = stack.pop()
        if n in seen:
            continue
        seen.add(n)
        call = graph.by_name.get(n)
        if call is not None:
            stack.extend(src for src, _ in call.inbound)
    return seen


def find_blocks(model):
    """``{Add layer name: index of its residual-branch input}`` for every identity-shortcut
    residual block of ``model`` (an ``Add`` of two inputs, one an ancestor of the other)."""
    graph = parse(model)
    found = {}
    for call in graph.calls:
        if not isinstance(call.layer, keras.layers.Add) or len(call.inbound) != 2:
            continue
        (a, _), (b, _) = call.inbound
        if b in _ancestors(graph, a) and a != b:
            found[call.name] = 0
        elif a in _ancestors(graph, b) and a != b:
            found[call.name] = 1
    return found


def add_block_masks(model, *, blocks=None, soft=True):
    """A copy of ``model`` (same weights) with a ``BlockMask`` on each residual branch.

    Args:
        model: a built functional tf_keras model.
        blocks: ``None`` (every identity-shortcut block, :func:`find_blocks`), a list of
            ``Add`` layer names (their branch found the same way), or a dict
            ``{Add layer name: branch input index}`` (also for projection shortcuts).
        soft: give the masks a trainable scale (DFS's ``m_b``).

    Raises:
        PruningError: the model already has block masks, no residual block, or a named layer
            that is not a two-input ``Add`` or whose branch cannot be told from its shortcut.
    """
    graph = parse(model)
    if block_masks(model):
        raise PruningError(f"Model {model.name!r} already has BlockMask layers.")
    auto = find_blocks(model)
    if blocks is None:
        chosen = auto
    else:
        chosen = {}
        items = blocks.items() if isinstance(blocks, dict) else ((n, None) for n in blocks)
        for name, index in items:
            call = graph.by_name.get(name)
            if call is None or not isinstance(call.layer, keras.layers.Add) \
                    or len(call.inbound) != 2:
                raise PruningError(f"Layer {name!r} is not a two-input Add layer of model "
                                   f"{model.name!r}, so it does not close a residual block.")
            if index is None:
                if name not in auto:
                    raise PruningError(
                        f"Add layer {name!r}: neither input is an ancestor of the other (a "
                        "projection shortcut?); name its residual branch, e.g. "
                        f"blocks={{{name!r}: 0}}.")
                index = auto[name]
            if index not in (0, 1):
                raise PruningError(f"Add layer {name!r}: branch input index must be 0 or 1, "
                                   f"got {index!r}.")
            chosen[name] = index
    if not chosen:
        raise PruningError(f"Model {model.name!r} has no residual block (an Add whose inputs "
                           "are a branch and its own input); name them with blocks=.")

    def build(call, x):
        new = clone_layer(call.layer)
        if call.name in chosen:
            xs = list(x)
            i = chosen[call.name]
            xs[i] = BlockMask(block=call.name, soft=soft, name=f"{call.name}_block_mask")(xs[i])
            y = new(xs, **call.kwargs)
        else:
            y = new(x, **call.kwargs)
        new.set_weights(call.layer.get_weights())
        return y

    return rebuild(graph, build)


def remove_pruned_blocks(model):
    """Rebuild ``model`` without the residual branches whose ``BlockMask`` is 0 (mask 0 or
    soft scale exactly 0): their ``Add`` passes the shortcut alone, and the branch's layers
    (and masks) disappear. Other blocks keep their ``BlockMask`` (a scalar multiply), so the
    output is unchanged. Returns a new model (a copy when nothing is removed)."""
    graph = parse(model)
    masks = {m.name: m for m in block_masks(model).values()}
    dead = {name for name, m in masks.items() if m.effective() == 0.0}
    live, stack = set(), [src for src, _ in graph.outputs]
    while stack:
        n = stack.pop()
        if n in live or n not in graph.by_name:
            continue
        live.add(n)
        call = graph.by_name[n]
        for src, _ in call.inbound:
            if src in dead and isinstance(call.layer, keras.layers.Add):
                continue
            stack.append(src)

    def build(call, x):
        if call.name not in live:                  # only feeds removed branches
            return x[0] if call.multi else x
        ins = x if call.multi else [x]
        if isinstance(call.layer, keras.layers.Add) and any(s in dead for s, _ in call.inbound):
            ins = [t for (src, _), t in zip(call.inbound, ins) if src not in dead]
            if len(ins) == 1:
                return ins[0]
        new = clone_layer(call.layer)
        y = new(ins if call.multi else ins[0], **call.kwargs)
        new.set_weights(call.layer.get_weights())
        return y

    return rebuild(graph, build)
