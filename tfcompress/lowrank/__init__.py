"""Low-rank decomposition of Dense and Conv2D layers into sequences of standard layers.

- Dense ``W (in x out)``: truncated SVD ``W ~ (U_k S_k^1/2)(S_k^1/2 V_k^T)`` -> ``Dense(k,
  no bias)`` then ``Dense(out)`` with the original bias and activation.
- Conv2D, Tucker-2 (Kim et al. 2016): ``K (kh, kw, C_in, C_out) ~ core x_3 U_in x_4 U_out`` ->
  1x1 conv ``C_in -> R1``, ``kh x kw`` conv ``R1 -> R2`` (original strides, padding,
  dilation), 1x1 conv ``R2 -> C_out`` (bias, activation). Factors from the truncated HOSVD
  refined by HOOI; exact at full rank (``R1 = C_in``, ``R2 = C_out``).
- Conv2D, CP (Lebedev et al. 2015): ``K ~ sum_r a_r(h) b_r(w) c_r(C_in) d_r(C_out)`` -> 1x1 conv
  ``C_in -> R``, depthwise ``kh x 1``, depthwise ``1 x kw``, 1x1 conv ``R -> C_out``; factors
  by alternating least squares (CP is known to be unstable at high compression; Tucker-2 is
  the default). At ``R >= kh kw C_in`` an exact construction is used.

The factor layers of each decomposed layer sit in a nested ``Sequential`` that keeps the
original layer's name (factor layers are ``<layer>_svd_u``, ``<layer>_t_core``, ...), so the
model keeps its graph and converts to every TFLite target.

>>> small = decompose(model, rank_ratio=0.5)             # doctest: +SKIP
>>> small = decompose(model, param_ratio=0.5)            # about half the parameters  # doctest: +SKIP
"""

from tfcompress.lowrank.decompose import (
    cp_factors, decompose, fine_tune, svd_factors, tucker2_factors,
)

__all__ = ["cp_factors", "decompose", "fine_tune", "svd_factors", "tucker2_factors"]
