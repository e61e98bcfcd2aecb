"""Pruning schedules: pure, serializable callables ``step -> (should_prune, sparsity)``.

The maths lives in two plain functions (:func:`should_prune`, :func:`polynomial_sparsity`);
the classes only store arguments, validate them and round-trip through ``get_config`` /
``from_config``. Steps are training batches counted from 1 (the first batch is step 1), as
TF-MOT's ``UpdatePruningStep`` counts them.

Unlike TF-MOT (``frequency=100``, which on a short run prunes once or never; STACK.md trap 3),
the default here is ``frequency=10`` steps, and the final step of a decay is always a pruning
step so the final sparsity is reached even when ``end_step - begin_step`` is not a multiple of
``frequency``.
"""

from tfcompress._keras import keras

DEFAULT_FREQUENCY = 10


def should_prune(step, begin_step, end_step, frequency):
    """Whether masks are updated at ``step``.

    True for ``step`` in ``[begin_step, end_step]`` (``end_step=-1``: no end) with
    ``(step - begin_step) % frequency == 0``, and at ``step == end_step``.
    """
    step = int(step)
    if step < begin_step or (end_step >= 0 and step > end_step):
        return False
    return (step - begin_step) % frequency == 0 or step == end_step


def polynomial_sparsity(step, initial_sparsity, final_sparsity, begin_step, end_step, power=3):
    """Gradual pruning sparsity of Zhu & Gupta (2017, arXiv:1710.01878), eq. (1).

    .. math::
        s_t = s_f + (s_i - s_f)\\left(1 - \\frac{t - t_0}{n\\Delta t}\\right)^3

    with :math:`t_0` = ``begin_step``, :math:`t_0 + n\\Delta t` = ``end_step`` and the exponent
    ``power`` (3 in the paper). Before ``begin_step`` the sparsity is ``initial_sparsity``,
    after ``end_step`` it stays at ``final_sparsity``.

    >>> round(polynomial_sparsity(50, 0.0, 0.8, 0, 100), 4)
    0.7
    """
    step = int(step)
    if end_step == begin_step:
        progress = 1.0 if step >= begin_step else 0.0
    else:
        progress = min(1.0, max(0.0, (step - begin_step) / (end_step - begin_step)))
    return float(final_sparsity + (initial_sparsity - final_sparsity) * (1.0 - progress) ** power)


def _check_sparsity(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}.")
    return float(value)


def _check_steps(begin_step, end_step, frequency, allow_no_end):
    for name, v in (("begin_step", begin_step), ("end_step", end_step), ("frequency", frequency)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError(f"{name} must be an int, got {v!r}.")
    if begin_step < 0:
        raise ValueError(f"begin_step must be >= 0, got {begin_step}.")
    if end_step == -1 and not allow_no_end:
        raise ValueError("end_step must be given (>= begin_step) for a decaying schedule.")
    if end_step != -1 and end_step < begin_step:
        raise ValueError(f"end_step ({end_step}) must be -1 or >= begin_step ({begin_step}).")
    if frequency < 1:
        raise ValueError(f"frequency must be >= 1 step, got {frequency}.")


class PruningSchedule:
    """Base class: a callable ``step -> (should_prune: bool, sparsity: float)``.

    Subclasses set ``final_sparsity`` (the sparsity reached at the end), implement
    ``__call__`` and ``get_config``; ``from_config(get_config())`` rebuilds an equal schedule.
    """

    final_sparsity = 0.0

    def __call__(self, step):  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__} must define __call__(step) -> sparsity.")

    def get_config(self):  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__} must define get_config().")

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def to_tfmot(self):  # pragma: no cover - abstract
        """The equivalent ``tfmot.sparsity.keras`` schedule (for ``prune_low_magnitude``)."""
        raise NotImplementedError(f"{type(self).__name__} has no TF-MOT equivalent (to_tfmot).")

    def __eq__(self, other):
        return type(self) is type(other) and self.get_config() == other.get_config()

    def __hash__(self):
        return hash((type(self).__name__, tuple(sorted(self.get_config().items()))))

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


@keras.utils.register_keras_serializable(package="tfcompress")
class ConstantSparsity(PruningSchedule):
    """Prune to ``target_sparsity`` at ``begin_step``, then re-apply every ``frequency`` steps.

    Args:
        target_sparsity: fraction of weights (or filters) to remove, in [0, 1).
        begin_step: first pruning step (steps count from 1; 0 = the first batch).
        end_step: last pruning step, ``-1`` for no end.
        frequency: prune every this many steps (default 10, suited to short runs).

    >>> ConstantSparsity(0.5, begin_step=10, frequency=5)(15)
    (True, 0.5)
    """

    def __init__(self, target_sparsity, begin_step=0, end_step=-1, frequency=DEFAULT_FREQUENCY):
        self.target_sparsity = _check_sparsity(target_sparsity, "target_sparsity")
        _check_steps(begin_step, end_step, frequency, allow_no_end=True)
        self.begin_step, self.end_step, self.frequency = begin_step, end_step, frequency

    @property
    def final_sparsity(self):
        return self.target_sparsity

    def __call__(self, step):
        return (should_prune(step, self.begin_step, self.end_step, self.frequency),
                self.target_sparsity)

    def get_config(self):
        return {"target_sparsity": self.target_sparsity, "begin_step": self.begin_step,
                "end_step": self.end_step, "frequency": self.frequency}

    def to_tfmot(self):
        import tensorflow_model_optimization as tfmot

        return tfmot.sparsity.keras.ConstantSparsity(
            self.target_sparsity, self.begin_step, end_step=self.end_step,
            frequency=self.frequency)


@keras.utils.register_keras_serializable(package="tfcompress")
class PolynomialDecay(PruningSchedule):
    """Gradual pruning of Zhu & Gupta (2017): sparsity rises along a cubic curve.

    ``sparsity(step)`` is :func:`polynomial_sparsity`; masks are updated every ``frequency``
    steps from ``begin_step`` to ``end_step`` (inclusive; the last step always prunes).

    Args:
        initial_sparsity, final_sparsity: :math:`s_i`, :math:`s_f` in [0, 1).
        begin_step: :math:`t_0`.
        end_step: :math:`t_0 + n\\Delta t`.
        power: exponent (3 in the paper).
        frequency: :math:`\\Delta t` in steps (default 10; TF-MOT's default is 100).

    >>> s = PolynomialDecay(0.0, 0.8, begin_step=0, end_step=100, frequency=10)
    >>> prune, sparsity = s(50)
    >>> prune, round(sparsity, 6)
    (True, 0.7)
    >>> s(55)[0]
    False
    """

    def __init__(self, initial_sparsity, final_sparsity, begin_step, end_step, power=3,
                 frequency=DEFAULT_FREQUENCY):
        self.initial_sparsity = _check_sparsity(initial_sparsity, "initial_sparsity")
        self._final = _check_sparsity(final_sparsity, "final_sparsity")
        _check_steps(begin_step, end_step, frequency, allow_no_end=False)
        if isinstance(power, bool) or not isinstance(power, (int, float)) or power <= 0:
            raise ValueError(f"power must be a positive number, got {power!r}.")
        self.begin_step, self.end_step = begin_step, end_step
        self.power, self.frequency = power, frequency

    @property
    def final_sparsity(self):
        return self._final

    def __call__(self, step):
        return (should_prune(step, self.begin_step, self.end_step, self.frequency),
                polynomial_sparsity(step, self.initial_sparsity, self._final, self.begin_step,
                                    self.end_step, self.power))

    def get_config(self):
        return {"initial_sparsity": self.initial_sparsity, "final_sparsity": self._final,
                "begin_step": self.begin_step, "end_step": self.end_step, "power": self.power,
                "frequency": self.frequency}

    def to_tfmot(self):
        """TF-MOT's ``PolynomialDecay`` with the same parameters.

        Raises:
            ValueError: ``end_step - begin_step`` is not a multiple of ``frequency``: TF-MOT
                prunes only at ``begin_step + k * frequency`` and would never reach
                ``final_sparsity``.
        """
        import tensorflow_model_optimization as tfmot

        if (self.end_step - self.begin_step) % self.frequency:
            raise ValueError(
                f"end_step - begin_step ({self.end_step - self.begin_step}) is not a multiple of "
                f"frequency ({self.frequency}); TF-MOT would never prune at end_step and never "
                "reach final_sparsity. Choose end_step = begin_step + n * frequency."
            )
        return tfmot.sparsity.keras.PolynomialDecay(
            self.initial_sparsity, self._final, self.begin_step, self.end_step,
            power=self.power, frequency=self.frequency)


_ALIASES = {"constant": ConstantSparsity, "constant_sparsity": ConstantSparsity,
            "constantsparsity": ConstantSparsity, "polynomial_decay": PolynomialDecay,
            "polynomialdecay": PolynomialDecay}
_SPARSITY_KEY = {ConstantSparsity: "target_sparsity", PolynomialDecay: "final_sparsity"}


def serialize(schedule):
    """``{"class_name": ..., "config": ...}`` for a tfcompress schedule."""
    if not isinstance(schedule, PruningSchedule):
        raise ValueError(f"Only tfcompress schedules can be serialized, got {schedule!r}.")
    return {"class_name": type(schedule).__name__, "config": schedule.get_config()}


def get(identifier, *, sparsity=None):
    """A schedule from ``None``, a name, a config dict, a schedule or any callable.

    Args:
        identifier: ``None`` (constant ``sparsity`` from step 0 every 10 steps); a name
            (``"constant"``, ``"polynomial_decay"``); a dict, either ``{"class_name": ...,
            "config": {...}}`` or ``{"class_name": ..., **config}``; a schedule object or any
            callable ``step -> (should_prune, sparsity)``, returned unchanged.
        sparsity: fills the target/final sparsity when the name or dict leaves it out.

    Raises:
        ValueError: anything else, naming the valid choices.

    >>> get("constant", sparsity=0.5)
    ConstantSparsity(target_sparsity=0.5, begin_step=0, end_step=-1, frequency=10)
    """
    if identifier is None:
        identifier = "constant"
    if callable(identifier) and not isinstance(identifier, type):
        return identifier
    if isinstance(identifier, str):
        cls = _ALIASES.get(identifier.split(">")[-1].lower())
        if cls is None:
            raise ValueError(f"Unknown pruning schedule {identifier!r}; valid names: "
                             f"{', '.join(sorted(_ALIASES))}, a config dict or a callable.")
        config = {}
    elif isinstance(identifier, dict):
        if "class_name" not in identifier:
            raise ValueError(f"A schedule dict needs a 'class_name' key, got {identifier!r}.")
        cls = _ALIASES.get(str(identifier["class_name"]).split(">")[-1].lower())
        if cls is None:
            raise ValueError(f"Unknown pruning schedule class {identifier['class_name']!r}; "
                             f"valid: ConstantSparsity, PolynomialDecay.")
        config = dict(identifier.get("config", {k: v for k, v in identifier.items()
                                                 if k != "class_name"}))
    else:
        raise ValueError(f"Cannot interpret {identifier!r} as a pruning schedule; pass None, "
                         "'constant', 'polynomial_decay', a config dict or a callable "
                         "step -> (should_prune, sparsity).")
    key = _SPARSITY_KEY[cls]
    if key not in config:
        if sparsity is None:
            raise ValueError(f"Schedule {cls.__name__} needs {key}; pass it in the config or "
                             "as sparsity=.")
        config[key] = sparsity
    try:
        return cls.from_config(config)
    except TypeError as err:
        raise ValueError(f"Bad config for {cls.__name__}: {err}") from err
