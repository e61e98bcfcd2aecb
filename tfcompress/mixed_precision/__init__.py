"""Mixed-precision bit allocation: OMPQ (Ma et al., AAAI 2023, arXiv 2109.07865) and baselines.

>>> plan = ompq(model, x_sample, bit_choices=(2, 4, 8), size_budget_kb=40)   # doctest: +SKIP
>>> print(plan.table()); qmodel = apply(model, plan)                         # doctest: +SKIP

OMPQ, as in the official code (``MAC-AutoML/OMPQ``): features ``X_i`` of every quantizable
layer on one small batch (inference mode) -> orthogonality ``ORM(X_i, X_j)`` = linear CKA of
the centred Gram matrices -> ``gamma_i = sum_{j != i} ORM(X_i, X_j)``,
``theta_i = exp(-beta gamma_i)`` -> a linear program that maximizes
``sum_i (b_i/8) mean_{j >= i} theta_j`` subject to the size budget
``sum_i P_i b_i / 8 <= T - T_fixed`` (first and last layers fixed, 8 bits by default).
Unlike the paper's continuous LP followed by rounding, the bit choices are solved exactly as
a mixed-integer program over ``bit_choices`` (scipy ``milp``), so the budget holds after
"rounding" by construction; an optional BOPs budget adds one more linear constraint.

Size counts kernel weights at their bits (``P_i b_i / 8`` bytes); biases and BatchNorm
parameters are not part of the budget (they stay float, as in OMPQ).
"""

from tfcompress.mixed_precision.ompq import (
    BitPlan, MixedPrecisionError, allocate, apply, layer_features, ompq, orm,
    orthogonality_matrix, quantizable_layers, sensitivity_plan, uniform_plan,
)

__all__ = ["BitPlan", "MixedPrecisionError", "allocate", "apply", "layer_features", "ompq", "orm",
           "orthogonality_matrix", "quantizable_layers", "sensitivity_plan", "uniform_plan"]
