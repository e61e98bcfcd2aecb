"""A Keras model as a list of layer calls, and rebuilding it call by call.

Structured pruning changes layers (fewer filters, fewer input channels) and inserts or drops
mask layers, which ``keras.models.clone_model`` cannot do. :func:`parse` reads a Sequential or
functional model (from its public ``get_config()`` wiring) into :class:`Graph`;
:func:`rebuild` replays it on fresh ``keras.Input`` tensors, letting a callback replace each
call. Shared layers, nested models and subclassed models are refused with a
:class:`~tfcompress.errors.PruningError` naming the layer.
"""

from dataclasses import dataclass, field

from tfcompress._keras import keras
from tfcompress.errors import PruningError


@dataclass
class Call:
    """One layer call: the layer, where its inputs come from, and its call kwargs."""

    name: str
    layer: object
    inbound: list                    # [(source layer name, tensor index)]
    kwargs: dict = field(default_factory=dict)
    multi: bool = False              # called on a list of tensors (Add, Concatenate, ...)


@dataclass
class Graph:
    """Layer calls in topological order plus the model's inputs and outputs."""

    model: object
    calls: list                      # [Call], topological, InputLayers excluded
    inputs: list                     # [InputLayer name]
    outputs: list                    # [(layer name, tensor index)]
    sequential: bool = False

    def __post_init__(self):
        self.by_name = {c.name: c for c in self.calls}
        self.consumers = {}
        for c in self.calls:
            for src, _ in c.inbound:
                self.consumers.setdefault(src, []).append(c.name)

    def consumers_of(self, name):
        return self.consumers.get(name, [])

    def is_output(self, name):
        return any(src == name for src, _ in self.outputs)


def _check_layer(model, layer):
    if isinstance(layer, keras.Model):
        raise PruningError(
            f"Layer {layer.name!r} of model {model.name!r} is a nested model; structured "
            "pruning needs a flat model (rebuild it with the nested model's layers inline).")


def parse(model):
    """Read ``model`` into a :class:`Graph`.

    Raises:
        PruningError: subclassed, unbuilt or nested models, or shared layers (named).
    """
    if not isinstance(model, keras.Model):
        raise PruningError(f"Expected a tf_keras Model, got {type(model).__name__}.")
    if not model.built or not model.inputs:
        raise PruningError(f"Model {model.name!r} is not built; give it a keras.Input first.")
    if isinstance(model, keras.Sequential):
        layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
        in_name = model.inputs[0].name.split(":")[0]
        calls, prev = [], in_name
        for layer in layers:
            _check_layer(model, layer)
            calls.append(Call(layer.name, layer, [(prev, 0)]))
            prev = layer.name
        g = Graph(model, calls, [in_name], [(prev, 0)], sequential=True)
        g.input_shapes = {in_name: tuple(model.inputs[0].shape[1:])}
        g.input_dtypes = {in_name: model.inputs[0].dtype}
        return g
    if not getattr(model, "_is_graph_network", False):
        raise PruningError(f"Model {model.name!r} is a subclassed model; structured pruning "
                           "supports Sequential and functional models.")
    cfg = model.get_config()
    calls, inputs = [], [name for name, _, _ in cfg["input_layers"]]
    for entry in cfg["layers"]:
        name = entry["name"]
        layer = model.get_layer(name)
        if isinstance(layer, keras.layers.InputLayer):
            continue
        _check_layer(model, layer)
        nodes = entry.get("inbound_nodes", [])
        if len(nodes) != 1:
            raise PruningError(
                f"Layer {name!r} is called {len(nodes)} times in model {model.name!r} (a shared "
                "layer); structured pruning needs each layer called once.")
        node = nodes[0]
        if not isinstance(node, list):
            raise PruningError(f"Layer {name!r}: unsupported call structure {node!r}.")
        inbound, kwargs = [], {}
        for src, node_index, tensor_index, kw in node:
            if node_index != 0:
                raise PruningError(f"Layer {name!r} reads call {node_index} of shared layer "
                                   f"{src!r}; structured pruning needs each layer called once.")
            inbound.append((src, tensor_index))
            kwargs.update(kw or {})
        calls.append(Call(name, layer, inbound, kwargs, multi=len(inbound) > 1))
    order = _toposort(calls, set(inputs))
    outputs = [(name, t) for name, _, t in cfg["output_layers"]]
    g = Graph(model, order, inputs, outputs)
    g.input_shapes = {name: tuple(t.shape[1:]) for name, t in zip(inputs, model.inputs)}
    g.input_dtypes = {name: t.dtype for name, t in zip(inputs, model.inputs)}
    return g


def _toposort(calls, ready):
    ready = set(ready)
    pending, order = list(calls), []
    while pending:
        progress = False
        for c in list(pending):
            if all(src in ready for src, _ in c.inbound):
                order.append(c)
                ready.add(c.name)
                pending.remove(c)
                progress = True
        if not progress:
            raise PruningError(f"Cannot order layers {[c.name for c in pending]} (cycle or "
                               "missing inputs).")
    return order


def clone_layer(layer, **changes):
    """A new, unbuilt layer of the same class with ``changes`` applied to its config.

    tf_keras' ``BatchNormalization.get_config`` leaves out ``synchronized``; it is carried
    over here, or a pruned or shrunk model would silently normalize each replica's own batch
    under ``tf.distribute`` where the original synchronized the batch statistics.
    """
    cfg = layer.get_config()
    if getattr(layer, "synchronized", False) and "synchronized" not in cfg:
        cfg.update(synchronized=True, fused=False)
    cfg.update(changes)
    return type(layer).from_config(cfg)


def rebuild(graph, build, name=None):
    """Replay ``graph`` on new inputs.

    Args:
        graph: from :func:`parse`.
        build: ``build(call, inputs) -> output tensor``, where ``inputs`` is a tensor (or a
            list for multi-input calls). Returning the input tensor drops the layer.

    Returns:
        A new functional model, or a Sequential one if the original was Sequential and every
        call was replaced by exactly one layer call.
    """
    tensors = {}
    new_inputs = []
    for in_name in graph.inputs:
        t = keras.Input(shape=graph.input_shapes[in_name], dtype=graph.input_dtypes[in_name],
                        name=in_name)
        tensors[(in_name, 0)] = t
        new_inputs.append(t)
    for call in graph.calls:
        ins = [tensors[(src, idx)] for src, idx in call.inbound]
        out = build(call, ins if call.multi else ins[0])
        outs = out if isinstance(out, (list, tuple)) else [out]
        for i, t in enumerate(outs):
            tensors[(call.name, i)] = t
    outputs = [tensors[key] for key in graph.outputs]
    model = keras.Model(new_inputs, outputs if len(outputs) > 1 else outputs[0],
                        name=name or graph.model.name)
    if graph.sequential:
        layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
        if _is_chain(model, layers):
            seq = keras.Sequential([keras.Input(shape=graph.input_shapes[graph.inputs[0]],
                                                dtype=graph.input_dtypes[graph.inputs[0]])]
                                   + layers, name=name or graph.model.name)
            return seq
    return model


def _is_chain(model, layers):
    cfg = model.get_config()
    prev = cfg["input_layers"][0][0]
    for entry in cfg["layers"][1:]:
        nodes = entry["inbound_nodes"]
        if len(nodes) != 1 or len(nodes[0]) != 1 or nodes[0][0][0] != prev:
            return False
        prev = entry["name"]
    return len(cfg["layers"]) == len(layers) + 1
