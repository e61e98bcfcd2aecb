"""Turn a failed TFLite / LCE conversion into a message about the user's own model.

The converters report the TensorFlow op they could not lower (``'tf.TensorListReserve' op ...``,
``Custom ops: PyFunc``) with source locations in TensorFlow's tracing code, not the Keras layer
that made the op. :func:`explain_failure` traces the model once, finds which layer's name scope
produced each failing op (following function calls, e.g. into the LSTM's loop body), and says:

- which layer(s) and which op(s) failed, and why in words a Keras user knows;
- the way out for that kind of layer (a fixed batch size or ``unroll=True`` for RNNs, TensorFlow
  ops instead of Python inside a ``Lambda``, ...);
- which tfcompress target does take the model, found by trying the float32 conversion when the
  failing target was another one (a real conversion, not a guess).

The converter's own text follows, shortened, for the details.
"""

import re

from tfcompress._keras import keras, tf
from tfcompress.inspection import iter_layers

__all__ = ["explain_failure", "failing_ops", "layers_producing"]

# TensorFlow op types -> what they mean for a Keras user, and the way out.
_RNN_OPS = {"TensorListReserve", "TensorListFromTensor", "TensorListStack", "TensorListGetItem",
            "TensorListSetItem", "TensorListLength", "TensorListElementShape", "While",
            "StatelessWhile"}
_PYTHON_OPS = {"PyFunc", "EagerPyFunc", "PyFuncStateless", "NumpyFunction"}
_CALL_ATTRS = ("f", "body", "cond", "then_branch", "else_branch", "branches")
_MAX_TEXT = 1500


def failing_ops(text):
    """The TensorFlow op types a converter error names, in order of appearance."""
    found = re.findall(r"'tf\.(\w+)'", text)
    for line in re.findall(r"(?:Custom ops|Flex ops): ([\w, ]+)", text):
        found += [name.strip() for name in line.split(",") if name.strip()]
    found += re.findall(r"\btf\.(\w+)\(", text)
    seen = []
    for op in found:
        if op not in seen:
            seen.append(op)
    return seen


def _traced_graph(model):
    spec = [tf.TensorSpec((1,) + tuple(t.shape[1:]), t.dtype) for t in model.inputs]
    fn = tf.function(lambda *args: model(list(args) if len(args) > 1 else args[0]))
    return fn.get_concrete_function(*spec).graph.as_graph_def()


def _callers(graph_def):
    """function name -> names of the nodes (in the main graph or in other functions) calling
    it, and function name -> its own nodes."""
    callers, bodies = {}, {"": list(graph_def.node)}
    for f in graph_def.library.function:
        bodies[f.signature.name] = list(f.node_def)
    for owner, nodes in bodies.items():
        for node in nodes:
            for attr in _CALL_ATTRS:
                if attr not in node.attr:
                    continue
                value = node.attr[attr]
                names = [value.func.name] if value.HasField("func") else \
                    [f.name for f in value.list.func]
                for name in names:
                    callers.setdefault(name, []).append((owner, node.name))
    return callers, bodies


def layers_producing(model, op_types):
    """``{op type: [layer names]}`` for the layers of ``model`` whose call makes those ops."""
    names = {layer.name for layer in iter_layers(model)}
    try:
        graph_def = _traced_graph(model)
    except Exception:          # a model that cannot even be traced: nothing to map
        return {}
    callers, bodies = _callers(graph_def)

    def scopes(owner, node_name, depth=0):
        if owner == "":
            return [node_name]
        if depth > 20:
            return []
        out = []
        for caller_owner, caller in callers.get(owner, []):
            out += scopes(caller_owner, caller, depth + 1)
        return out

    found = {}
    for owner, nodes in bodies.items():
        for node in nodes:
            if node.op not in op_types:
                continue
            for path in scopes(owner, node.name):
                parts = path.split("/")
                layer = next((p for p in reversed(parts) if p in names), None)
                if layer is not None and layer not in found.setdefault(node.op, []):
                    found[node.op].append(layer)
    return found


def _advice(op, layer):
    kind = type(layer).__name__ if layer is not None else "layer"
    if op in _RNN_OPS:
        return (f"{kind} runs a TensorFlow while-loop over the sequence, which TFLite cannot "
                "lower for a variable batch size: pass unroll=True to the layer (fixed sequence "
                "length; plain ops, exact), or build the model with keras.Input(shape, "
                "batch_size=1) to get TFLite's fused LSTM op, whose state persists between "
                "invocations (reset it before each sequence, as tfcompress.Interpreter does)")
    if op in _PYTHON_OPS:
        return (f"{kind} calls Python code (tf.py_function / tf.numpy_function), which a "
                ".tflite file cannot hold; write the computation with TensorFlow ops")
    return (f"{kind} uses the TensorFlow op {op}, which has no TFLite builtin kernel (and "
            "tfcompress does not enable TensorFlow 'flex' ops, which most devices lack); "
            "rewrite the layer with ops from TFLite's builtin list, or replace it before "
            "converting")


def _other_target(model, target):
    """A target that does convert the model (tried for real), or None."""
    if target == "float32":
        return None
    from tfcompress.conversion.tflite_internals import quiet

    try:
        with quiet():
            tf.lite.TFLiteConverter.from_keras_model(model).convert()
        return "float32"
    except Exception:
        return None


def explain_failure(model, target, error_text, *, converter="TFLite"):
    """A message for a failed conversion of ``model`` to ``target`` (see the module doc)."""
    ops = failing_ops(error_text)
    mapped = layers_producing(model, set(ops)) if ops and isinstance(model, keras.Model) else {}
    by_name = {layer.name: layer for layer in iter_layers(model)} if mapped else {}
    lines = []
    for op in ops:
        for name in mapped.get(op, []):
            layer = by_name.get(name)
            lines.append(f"layer {name!r} ({type(layer).__name__}) -> op {op}: "
                         f"{_advice(op, layer)}.")
    unmapped = [op for op in ops if op not in mapped]
    if unmapped:
        lines.append(f"op(s) {', '.join(unmapped)} (not traced back to a layer): "
                     f"{_advice(unmapped[0], None)}.")
    other = _other_target(model, target)
    head = f"The {converter} converter failed for target {target!r}"
    if lines:
        head += ":\n  " + "\n  ".join(lines)
    else:
        head += "."
    if other:
        head += (f"\nTarget {other!r} does convert this model: the failure is specific to "
                 f"{target!r} (quantization or its op set).")
    text = error_text.strip()
    if len(text) > _MAX_TEXT:
        text = text[:_MAX_TEXT] + " [...]"
    return f"{head}\nConverter output: {text}"
