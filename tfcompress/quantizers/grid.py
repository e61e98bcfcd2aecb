"""The integer grid behind a fake-quantizer: what an integer runtime must store to compute
exactly what the quantizer computed in float.

A quantizer whose outputs are ``real = scale * (q - zero_point)`` with integers
``q in [qmin, qmax]`` (optionally only the listed ``levels``) exports that grid with
``quantizer.integer_grid(tensor)`` (tfcompress quantizers) or :func:`integer_grid` (any
quantizer, including larq's ``DoReFa`` and ``SteTern``). The converter reads the grid instead of
re-calibrating a range (Jacob et al. 2018, arXiv 1712.05877: ``r = S (q - Z)``), so every
trained level lands on one integer level of the file.

>>> import numpy as np
>>> g = IntegerGrid(bits=2, scale=np.float64(0.5), zero_point=np.float64(0.0), qmin=-2, qmax=1)
>>> g.integers(np.array([-1.0, 0.0, 0.5])).tolist()
[-2, 0, 1]
"""

from dataclasses import dataclass

import numpy as np

__all__ = ["IntegerGrid", "integer_grid"]

# |q - round(q)| above this (in units of one level) means the values are not on the grid.
GRID_TOLERANCE = 2e-3


@dataclass(frozen=True)
class IntegerGrid:
    """``real = scale * (q - zero_point)`` with integer ``q`` in ``[qmin, qmax]``.

    Attributes:
        bits: the trained bit width (the quantizer's ``precision``).
        scale: positive float array, shape ``()`` (per tensor) or broadcastable to the tensor
            it quantizes (per channel, the channel axis kept, the others of size 1).
        zero_point: float array of the same shape; integral for every quantizer except LSQ+
            (whose learned offset ``beta`` gives ``zero_point = -beta / scale``).
        qmin, qmax: the integer range.
        levels: the integers actually produced when not every integer of the range is
            (power-of-two, DoReFa weights, TRQ with an even number of signs); ``None`` = all.
        static: True when the grid does not depend on the tensor it is applied to (a fixed
            or learned range). Activation grids must be static to be exported.
        kind: a short name of the quantizer, for messages and reports.
    """

    bits: int
    scale: np.ndarray
    zero_point: np.ndarray
    qmin: int
    qmax: int
    levels: tuple = None
    static: bool = True
    kind: str = ""

    def __post_init__(self):
        scale = np.asarray(self.scale, np.float64)
        zero = np.broadcast_to(np.asarray(self.zero_point, np.float64), scale.shape).copy()
        object.__setattr__(self, "scale", scale)
        object.__setattr__(self, "zero_point", zero)
        if not np.all(np.isfinite(scale)) or not np.all(scale > 0):
            raise ValueError(f"{self.kind or 'grid'}: every scale must be positive and finite, "
                             f"got {scale.ravel()[:4].tolist()}.")
        if self.qmin >= self.qmax:
            raise ValueError(f"{self.kind or 'grid'}: qmin {self.qmin} must be < qmax {self.qmax}.")

    @property
    def per_tensor(self):
        return self.scale.size == 1

    @property
    def integral_zero_point(self):
        """True when every zero point is an integer (an int8 tensor can hold it exactly)."""
        return bool(np.all(np.abs(self.zero_point - np.round(self.zero_point)) < 1e-6))

    @property
    def centered_range(self):
        """``(qmin - z, qmax - z)`` of a per-tensor grid: the clamp around real zero in levels."""
        if not self.per_tensor:
            raise ValueError(f"{self.kind}: a per-channel grid has no single centered range.")
        z = float(self.zero_point.ravel()[0])
        return self.qmin - z, self.qmax - z

    def integers(self, values, *, name="tensor"):
        """The integers ``q`` of ``values`` (already quantized by the quantizer).

        Raises:
            ValueError: a value is not on the grid (more than ``GRID_TOLERANCE`` of a level
                away), outside ``[qmin, qmax]``, or not one of ``levels``.
        """
        v = np.asarray(values, np.float64)
        q = v / self.scale + self.zero_point
        r = np.round(q)
        err = float(np.max(np.abs(q - r))) if q.size else 0.0
        if err > GRID_TOLERANCE:
            raise ValueError(
                f"{name}: values are not on the {self.kind or 'quantizer'} grid (a value lies "
                f"{err:.3g} levels from the nearest integer level); the quantizer's exported grid "
                "does not match its output.")
        if r.size and (r.min() < self.qmin or r.max() > self.qmax):
            raise ValueError(f"{name}: integers span [{r.min():.0f}, {r.max():.0f}], outside the "
                             f"grid range [{self.qmin}, {self.qmax}].")
        if r.size and np.abs(r).max() >= 2.0 ** 62:
            raise ValueError(f"{name}: integers up to {np.abs(r).max():.3g} do not fit 64 bits.")
        r = r.astype(np.int64)
        if self.levels is not None and r.size:
            bad = np.setdiff1d(np.unique(r), np.asarray(self.levels))
            if bad.size:
                raise ValueError(f"{name}: integers {bad[:5].tolist()} are not levels of the "
                                 f"{self.kind} grid.")
        return r


def _larq_grid(quantizer, tensor):
    import larq as lq

    if isinstance(quantizer, lq.quantizers.DoReFa):
        k = int(quantizer.precision)
        n = 2 ** k - 1
        if quantizer.mode == "activations":
            return IntegerGrid(k, 1.0 / n, 0.0, 0, n, kind=f"DoReFa {k}-bit activations")
        # weights: 2 round(x n)/n - 1 = (2 j - n)/n, j in [0, n]: odd/even integers like n.
        levels = tuple(range(-n, n + 1, 2))
        return IntegerGrid(k, 1.0 / n, 0.0, -n, n, levels=levels, kind=f"DoReFa {k}-bit weights")
    if isinstance(quantizer, lq.quantizers.SteTern):
        return IntegerGrid(2, 1.0, 0.0, -1, 1, kind="SteTern")
    return None


def integer_grid(quantizer, tensor=None):
    """The :class:`IntegerGrid` of ``quantizer`` (applied to ``tensor`` for grids that depend on
    the tensor, such as weight ranges taken from the weights themselves).

    Args:
        quantizer: a tfcompress quantizer (has ``integer_grid``) or larq's ``DoReFa`` /
            ``SteTern``.
        tensor: the float tensor the quantizer is applied to (needed for tensor-dependent
            grids: ``Uniform`` without ``ema_decay``, ``PowerOfTwo``).

    Returns:
        :class:`IntegerGrid`.

    Raises:
        ValueError: 1-bit quantizers (sign has no zero level: they are binary, not integer
            grids), quantizers that do not declare a grid, or a tensor-dependent grid without
            ``tensor``.
    """
    precision = getattr(quantizer, "precision", None)
    name = type(quantizer).__name__ if not callable(quantizer) or hasattr(quantizer, "get_config") \
        else getattr(quantizer, "__name__", type(quantizer).__name__)
    if precision == 1:
        raise ValueError(f"{name} is a 1-bit (sign) quantizer: its two levels -a, +a have no zero "
                         "level, so it is not an integer grid an int8 tensor can carry.")
    own = getattr(quantizer, "integer_grid", None)
    if callable(own):
        return own(tensor)
    grid = _larq_grid(quantizer, tensor)
    if grid is not None:
        return grid
    raise ValueError(f"Quantizer {name!r} does not export its integer grid (no `integer_grid` "
                     "method); only tfcompress quantizers, larq DoReFa and SteTern do.")
