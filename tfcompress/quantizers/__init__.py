"""Element-wise quantizers as Keras-serializable objects with a declared ``precision``.

``get(identifier)`` accepts ``None``, a string alias (see ``ALIASES``), a config dict
(``{"class_name": ..., "config": {...}}``, with an alias or a class name) or a callable, and
raises ``ValueError`` listing the aliases for anything else.

>>> get("lsq").precision, get({"class_name": "trq", "config": {"residuals": 2}}).precision
(4, 2)
"""

import larq as lq

from tfcompress._keras import keras
from tfcompress.quantizers.base import BaseQuantizer, grad_scale, round_ste
from tfcompress.quantizers.binary import (
    EDESchedule, EDESign, RSign, StateAwareSign, TanhSign, XNORWeight, ede_values, tanh_sign,
)
from tfcompress.quantizers.scaled_sign import BONNSign, RBCNSign, bonn_kernel_loss
from tfcompress.quantizers.ternary import TRQ, ste_tern
from tfcompress.quantizers.uniform import LSQ, PACT, LSQPlus, PowerOfTwo, Uniform, dorefa

# alias -> factory taking keyword arguments
ALIASES = {
    "ste_sign": lq.quantizers.SteSign,
    "approx_sign": lq.quantizers.ApproxSign,
    "swish_sign": lq.quantizers.SwishSign,
    "magnitude_aware_sign": lq.quantizers.MagnitudeAwareSign,
    "tanh_sign": TanhSign,
    "ede_sign": EDESign,
    "xnor_weight": XNORWeight,
    "state_aware_sign": StateAwareSign,
    "rsign": RSign,
    "ste_tern": ste_tern,
    "trq": TRQ,
    "uniform": Uniform,
    "affine": lambda **kw: Uniform(**{"symmetric": False, **kw}),
    "power_of_two": PowerOfTwo,
    "dorefa": dorefa,
    "pact": PACT,
    "lsq": LSQ,
    "lsq_plus": LSQPlus,
    "rbcn_sign": RBCNSign,
    "bonn_sign": BONNSign,
}

_CLASSES = {c.__name__: c for c in (
    TanhSign, EDESign, XNORWeight, StateAwareSign, RSign, TRQ, Uniform, PowerOfTwo, PACT, LSQ,
    LSQPlus, RBCNSign, BONNSign, lq.quantizers.SteSign, lq.quantizers.ApproxSign, lq.quantizers.SwishSign,
    lq.quantizers.MagnitudeAwareSign, lq.quantizers.SteTern, lq.quantizers.DoReFa,
)}


def _unknown(identifier):
    return ValueError(
        f"Unknown quantizer {identifier!r}. Valid aliases: {', '.join(sorted(ALIASES))}; or pass "
        "a quantizer object, a config dict or a callable."
    )


def get(identifier):
    """Return a quantizer for ``identifier`` (see the module docstring)."""
    if identifier is None:
        return None
    if isinstance(identifier, str):
        key = identifier.strip()
        if key.lower() in ALIASES:
            return ALIASES[key.lower()]()
        if key in _CLASSES:
            return _CLASSES[key]()
        raise _unknown(identifier)
    if isinstance(identifier, dict):
        name = identifier.get("class_name")
        config = identifier.get("config", {}) or {}
        if not isinstance(name, str):
            raise ValueError(f"A quantizer config dict needs a 'class_name' string, got {identifier!r}.")
        short = name.split(">")[-1]
        if short.lower() in ALIASES:
            return ALIASES[short.lower()](**config)
        if short in _CLASSES:
            return _CLASSES[short].from_config(config)
        try:
            return keras.utils.deserialize_keras_object(identifier)
        except (ValueError, TypeError):
            raise _unknown(name) from None
    if callable(identifier):
        return identifier
    raise _unknown(identifier)


def serialize(quantizer):
    return keras.utils.serialize_keras_object(quantizer)


__all__ = [
    "ALIASES", "BONNSign", "BaseQuantizer", "RBCNSign", "bonn_kernel_loss", "EDESchedule", "EDESign", "LSQ", "LSQPlus", "PACT", "PowerOfTwo",
    "RSign", "StateAwareSign", "TRQ", "TanhSign", "Uniform", "XNORWeight", "dorefa",
    "ede_values", "get", "grad_scale", "round_ste", "serialize", "ste_tern", "tanh_sign",
]

# The integer grid a quantizer rounds to (for exact integer deployment; issue 14).
from tfcompress.quantizers.grid import IntegerGrid, integer_grid  # noqa: E402

__all__ += ["IntegerGrid", "integer_grid"]
