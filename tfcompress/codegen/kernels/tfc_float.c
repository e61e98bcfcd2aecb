/* float32 kernels (TFLite reference semantics and summation order) and the layout kernels.
 *
 * exp/tanh are computed here from +, -, *, / only (no libm), so the host build and the
 * Cortex-M build give the same bits; they are within a few ulp of libm.
 */
#include "tfc_kernels.h"

/* patch buffer (on the stack) of the float convolution's interior fast path */
#define TFC_PATCH_MAX 64

static float clampf(float x, float lo, float hi) {
  x = x < lo ? lo : x;
  return x > hi ? hi : x;
}

/* ----------------------------------------------------------------- math */
int32_t tfc_round_f32(float x) {
  int32_t t;
  float d;
  if (!(x == x)) return 0;
  if (x >= 2147483520.0f) return 2147483647;
  if (x <= -2147483648.0f) return (-2147483647 - 1);
  t = (int32_t)x;         /* toward zero */
  d = x - (float)t;       /* exact */
  if (d >= 0.5f) t += 1;  /* half away from zero, as std::round */
  else if (d <= -0.5f) t -= 1;
  return t;
}

static float pow2i(int k) { /* 2^k for -126 <= k <= 127 */
  union { uint32_t u; float f; } v;
  v.u = (uint32_t)(k + 127) << 23;
  return v.f;
}

float tfc_expf(float x) {
  /* Cody-Waite reduction x = k ln2 + r, |r| <= ln2/2, then a degree-7 Taylor polynomial. */
  const float ln2_hi = 0.693145751953125f, ln2_lo = 1.428606765330187045e-06f;
  float r, p;
  int32_t k;
  if (!(x == x)) return x;
  if (x > 88.72283935546875f) return pow2i(127) * 2.0f;  /* +inf */
  if (x < -103.972084045410f) return 0.0f;
  k = tfc_round_f32(x * 1.44269504088896341f);
  r = (x - (float)k * ln2_hi) - (float)k * ln2_lo;
  p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  if (k > 127) return p * pow2i(127) * pow2i(k - 127);
  if (k < -126) return p * pow2i(-126) * pow2i(k + 126);
  return p * pow2i(k);
}

static float tanh_f32(float x) {
  float a = x < 0.0f ? -x : x, y;
  if (a < 0.3f) {
    const float x2 = x * x;
    float p = 21844.0f / 6081075.0f;
    p = p * x2 - 1382.0f / 155925.0f;
    p = p * x2 + 62.0f / 2835.0f;
    p = p * x2 - 17.0f / 315.0f;
    p = p * x2 + 2.0f / 15.0f;
    p = p * x2 - 1.0f / 3.0f;
    return x + x * x2 * p;
  }
  if (a > 9.1f) y = 1.0f;
  else y = 1.0f - 2.0f / (tfc_expf(2.0f * a) + 1.0f);
  return x < 0.0f ? -y : y;
}

/* ----------------------------------------------------------------- convolutions */
/* Valid filter taps [k0, k1) of a window starting at input index i0 (stride of taps d). */
static void tap_range(int i0, int k, int d, int n, int *k0, int *k1) {
  int a = 0, b = k;
  while (a < k && i0 + a * d < 0) ++a;
  while (b > a && i0 + (b - 1) * d >= n) --b;
  *k0 = a;
  *k1 = b;
}

void tfc_conv2d_f32(const tfc_conv_f32_t *p, const float *in, float *out, int oy0, int oy1,
                    int in_row0, int out_row0) {
  /* Same summation order as TFLite's reference conv (taps row by row, channels innermost,
   * out-of-image taps skipped); four output channels share each input load. */
  const tfc_geom_t *g = &p->g;
  const int cin_g = g->in_c / p->groups, cout_g = g->out_c / p->groups;
  const int ksz = g->k_h * g->k_w * cin_g;
  int oy, ox, oc, fy, fx, ic;
  for (oy = oy0; oy < oy1; ++oy) {
    const int iy0 = oy * g->stride_h - g->pad_t;
    int fy0, fy1;
    float *orow = out + (size_t)(oy - out_row0) * g->out_w * g->out_c;
    tap_range(iy0, g->k_h, g->dil_h, g->in_h, &fy0, &fy1);
    for (ox = 0; ox < g->out_w; ++ox) {
      const int ix0 = ox * g->stride_w - g->pad_l;
      int fx0, fx1;
      float *o = orow + ox * g->out_c;
      tap_range(ix0, g->k_w, g->dil_w, g->in_w, &fx0, &fx1);
      if (p->groups == 1 && ksz <= TFC_PATCH_MAX && fy1 - fy0 == g->k_h && fx1 - fx0 == g->k_w) {
        /* interior pixel, small filter: gather the patch once, then one contiguous dot product
         * per output channel (same summation order: taps row by row, channels innermost) */
        float patch[TFC_PATCH_MAX];
        int k = 0;
        for (fy = 0; fy < g->k_h; ++fy) {
          const float *xrow = in + ((size_t)(iy0 + fy * g->dil_h - in_row0) * g->in_w) * g->in_c;
          for (fx = 0; fx < g->k_w; ++fx) {
            const float *x = xrow + (size_t)(ix0 + fx * g->dil_w) * g->in_c;
            for (ic = 0; ic < cin_g; ++ic) patch[k++] = x[ic];
          }
        }
        for (oc = 0; oc + 4 <= g->out_c; oc += 4) {
          const float *w0 = p->filter + (size_t)oc * ksz, *w1 = w0 + ksz, *w2 = w1 + ksz,
                      *w3 = w2 + ksz;
          float t0 = 0.0f, t1 = 0.0f, t2 = 0.0f, t3 = 0.0f;
          for (k = 0; k < ksz; ++k) {
            const float v = patch[k];
            t0 += v * w0[k];
            t1 += v * w1[k];
            t2 += v * w2[k];
            t3 += v * w3[k];
          }
          o[oc] = clampf(t0 + (p->bias ? p->bias[oc] : 0.0f), p->act_min, p->act_max);
          o[oc + 1] = clampf(t1 + (p->bias ? p->bias[oc + 1] : 0.0f), p->act_min, p->act_max);
          o[oc + 2] = clampf(t2 + (p->bias ? p->bias[oc + 2] : 0.0f), p->act_min, p->act_max);
          o[oc + 3] = clampf(t3 + (p->bias ? p->bias[oc + 3] : 0.0f), p->act_min, p->act_max);
        }
        for (; oc < g->out_c; ++oc) {
          const float *w0 = p->filter + (size_t)oc * ksz;
          float t0 = 0.0f;
          for (k = 0; k < ksz; ++k) t0 += patch[k] * w0[k];
          o[oc] = clampf(t0 + (p->bias ? p->bias[oc] : 0.0f), p->act_min, p->act_max);
        }
        continue;
      }
      for (oc = 0; oc < g->out_c; oc += 4) {
        const int group = oc / cout_g;
        const int n = (oc / cout_g == (oc + 3) / cout_g && oc + 4 <= g->out_c) ? 4 : 1;
        const float *f0 = p->filter + (size_t)oc * ksz;
        float t0 = 0.0f, t1 = 0.0f, t2 = 0.0f, t3 = 0.0f;
        for (fy = fy0; fy < fy1; ++fy) {
          const float *xrow = in + ((size_t)(iy0 + fy * g->dil_h - in_row0) * g->in_w) * g->in_c +
                              group * cin_g;
          if (p->groups == 1 && g->dil_w == 1) {
            /* the valid taps of this filter row are one contiguous run in input and filter */
            const float *x = xrow + (size_t)(ix0 + fx0) * g->in_c;
            const float *w0 = f0 + (fy * g->k_w + fx0) * cin_g;
            const int run = (fx1 - fx0) * cin_g;
            if (n == 4) {
              const float *w1 = w0 + ksz, *w2 = w1 + ksz, *w3 = w2 + ksz;
              for (ic = 0; ic < run; ++ic) {
                const float v = x[ic];
                t0 += v * w0[ic];
                t1 += v * w1[ic];
                t2 += v * w2[ic];
                t3 += v * w3[ic];
              }
            } else {
              for (ic = 0; ic < run; ++ic) t0 += x[ic] * w0[ic];
            }
            continue;
          }
          for (fx = fx0; fx < fx1; ++fx) {
            const float *x = xrow + (size_t)(ix0 + fx * g->dil_w) * g->in_c;
            const float *w0 = f0 + (fy * g->k_w + fx) * cin_g;
            if (n == 4) {
              const float *w1 = w0 + ksz, *w2 = w1 + ksz, *w3 = w2 + ksz;
              for (ic = 0; ic < cin_g; ++ic) {
                const float v = x[ic];
                t0 += v * w0[ic];
                t1 += v * w1[ic];
                t2 += v * w2[ic];
                t3 += v * w3[ic];
              }
            } else {
              for (ic = 0; ic < cin_g; ++ic) t0 += x[ic] * w0[ic];
            }
          }
        }
        if (n == 4) {
          o[oc] = clampf(t0 + (p->bias ? p->bias[oc] : 0.0f), p->act_min, p->act_max);
          o[oc + 1] = clampf(t1 + (p->bias ? p->bias[oc + 1] : 0.0f), p->act_min, p->act_max);
          o[oc + 2] = clampf(t2 + (p->bias ? p->bias[oc + 2] : 0.0f), p->act_min, p->act_max);
          o[oc + 3] = clampf(t3 + (p->bias ? p->bias[oc + 3] : 0.0f), p->act_min, p->act_max);
        } else {
          o[oc] = clampf(t0 + (p->bias ? p->bias[oc] : 0.0f), p->act_min, p->act_max);
          oc -= 3;
        }
      }
    }
  }
}

void tfc_dwconv2d_f32(const tfc_dwconv_f32_t *p, const float *in, float *out, int oy0, int oy1,
                      int in_row0, int out_row0) {
  const tfc_geom_t *g = &p->g;
  int oy, ox, ic, m, fy, fx;
  for (oy = oy0; oy < oy1; ++oy) {
    const int iy0 = oy * g->stride_h - g->pad_t;
    float *orow = out + (size_t)(oy - out_row0) * g->out_w * g->out_c;
    for (ox = 0; ox < g->out_w; ++ox) {
      const int ix0 = ox * g->stride_w - g->pad_l;
      for (ic = 0; ic < g->in_c; ++ic) {
        for (m = 0; m < p->depth_mult; ++m) {
          const int oc = m + ic * p->depth_mult;
          float total = 0.0f;
          for (fy = 0; fy < g->k_h; ++fy) {
            const int iy = iy0 + fy * g->dil_h;
            if (iy < 0 || iy >= g->in_h) continue;
            for (fx = 0; fx < g->k_w; ++fx) {
              const int ix = ix0 + fx * g->dil_w;
              if (ix < 0 || ix >= g->in_w) continue;
              total += in[((size_t)(iy - in_row0) * g->in_w + ix) * g->in_c + ic] *
                       p->filter[(fy * g->k_w + fx) * g->out_c + oc];
            }
          }
          orow[ox * g->out_c + oc] = clampf(total + (p->bias ? p->bias[oc] : 0.0f), p->act_min, p->act_max);
        }
      }
    }
  }
}

void tfc_fc_f32(const tfc_fc_f32_t *p, const float *in, float *out) {
  int b, o, d;
  for (b = 0; b < p->batches; ++b) {
    const float *x = in + (size_t)b * p->in_features;
    for (o = 0; o < p->out_features; ++o) {
      const float *w = p->weights + (size_t)o * p->in_features;
      float total = 0.0f;
      for (d = 0; d < p->in_features; ++d) total += x[d] * w[d];
      out[(size_t)b * p->out_features + o] =
          clampf(total + (p->bias ? p->bias[o] : 0.0f), p->act_min, p->act_max);
    }
  }
}

/* ----------------------------------------------------------------- pooling */
static void pool_f32(const tfc_pool_f32_t *p, const float *in, float *out, int oy0, int oy1,
                     int in_row0, int out_row0, int average) {
  /* Per output pixel the valid window is found once; taps are visited in the reference order
   * (row by row) with the channels innermost, accumulating in the output row. */
  const tfc_geom_t *g = &p->g;
  const int C = g->out_c;
  int oy, ox, c, fy, fx;
  for (oy = oy0; oy < oy1; ++oy) {
    const int iy0 = oy * g->stride_h - g->pad_t;
    int fy0, fy1;
    float *orow = out + (size_t)(oy - out_row0) * g->out_w * C;
    tap_range(iy0, g->k_h, 1, g->in_h, &fy0, &fy1);
    for (ox = 0; ox < g->out_w; ++ox) {
      const int ix0 = ox * g->stride_w - g->pad_l;
      int fx0, fx1, count;
      float *o = orow + ox * C;
      tap_range(ix0, g->k_w, 1, g->in_w, &fx0, &fx1);
      count = (fy1 - fy0) * (fx1 - fx0);
      for (c = 0; c < C; ++c) o[c] = average ? 0.0f : -3.402823466e+38f;
      for (fy = fy0; fy < fy1; ++fy)
        for (fx = fx0; fx < fx1; ++fx) {
          const float *x = in + ((size_t)(iy0 + fy - in_row0) * g->in_w + ix0 + fx) * g->in_c;
          if (average) {
            for (c = 0; c < C; ++c) o[c] += x[c];
          } else {
            for (c = 0; c < C; ++c) o[c] = x[c] > o[c] ? x[c] : o[c];
          }
        }
      for (c = 0; c < C; ++c) {
        float v = o[c];
        if (average) v = count ? v / (float)count : 0.0f;
        o[c] = clampf(v, p->act_min, p->act_max);
      }
    }
  }
}

void tfc_maxpool_f32(const tfc_pool_f32_t *p, const float *in, float *out, int oy0, int oy1,
                     int in_row0, int out_row0) {
  pool_f32(p, in, out, oy0, oy1, in_row0, out_row0, 0);
}

void tfc_avgpool_f32(const tfc_pool_f32_t *p, const float *in, float *out, int oy0, int oy1,
                     int in_row0, int out_row0) {
  pool_f32(p, in, out, oy0, oy1, in_row0, out_row0, 1);
}

void tfc_mean_f32(const float *in, float *out, int outer, int reduce, int inner) {
  int o, r, i;
  for (o = 0; o < outer; ++o)
    for (i = 0; i < inner; ++i) {
      float sum = 0.0f;
      for (r = 0; r < reduce; ++r) sum += in[((size_t)o * reduce + r) * inner + i];
      out[(size_t)o * inner + i] = sum / (float)reduce;
    }
}

/* ----------------------------------------------------------------- elementwise */

void tfc_add_f32(const tfc_bcast_t *b, const float *a, const float *c, float *out, float lo,
                 float hi) {
  TFC_BCAST_LOOP(b, out[o_] = clampf(a[i1_] + c[i2_], lo, hi));
}

void tfc_mul_f32(const tfc_bcast_t *b, const float *a, const float *c, float *out, float lo,
                 float hi) {
  TFC_BCAST_LOOP(b, out[o_] = clampf(a[i1_] * c[i2_], lo, hi));
}

void tfc_softmax_f32(const float *in, float *out, int rows, int depth, float beta) {
  int r, c;
  for (r = 0; r < rows; ++r) {
    const float *x = in + (size_t)r * depth;
    float *y = out + (size_t)r * depth;
    float mx = -3.402823466e+38f, sum = 0.0f;
    for (c = 0; c < depth; ++c) mx = x[c] > mx ? x[c] : mx;
    for (c = 0; c < depth; ++c) {
      const float e = tfc_expf((x[c] - mx) * beta);
      y[c] = e;
      sum += e;
    }
    for (c = 0; c < depth; ++c) y[c] = y[c] / sum;
  }
}

void tfc_clamp_f32(const float *in, float *out, int n, float lo, float hi) {
  int i;
  for (i = 0; i < n; ++i) out[i] = clampf(in[i], lo, hi);
}

void tfc_logistic_f32(const float *in, float *out, int n) {
  int i;
  for (i = 0; i < n; ++i) {
    const float v = in[i];
    if (v > 16.619047164916992188f) out[i] = 1.0f;
    else if (v < -9.0f) out[i] = tfc_expf(v);
    else out[i] = 1.0f / (1.0f + tfc_expf(-v));
  }
}

void tfc_tanh_f32(const float *in, float *out, int n) {
  int i;
  for (i = 0; i < n; ++i) out[i] = tanh_f32(in[i]);
}

void tfc_quantize_f32_s8(const float *in, int8_t *out, int n, float scale, int32_t zero_point) {
  int i;
  for (i = 0; i < n; ++i) {
    int32_t q = tfc_round_f32(in[i] / scale);
    q = (q > 2147483647 - 256) ? 127 : q + zero_point;
    out[i] = (int8_t)(q < -128 ? -128 : (q > 127 ? 127 : q));
  }
}

void tfc_dequantize_s8_f32(const int8_t *in, float *out, int n, float scale, int32_t zero_point) {
  int i;
  for (i = 0; i < n; ++i) out[i] = scale * (float)((int32_t)in[i] - zero_point);
}

/* ----------------------------------------------------------------- layout */
void tfc_copy(const void *in, void *out, int bytes) {
  if (in != out) memcpy(out, in, (size_t)bytes); /* planner: never a partial overlap */
}

void tfc_pad(const tfc_pad_t *p, const void *in, void *out) {
  const int32_t *d = p->in_dims;
  const int e = p->elem;
  int o[4], i0, i1, i2, i3;
  const unsigned char *src = (const unsigned char *)in;
  unsigned char *dst = (unsigned char *)out;
  size_t k = 0;
  for (i0 = 0; i0 < 4; ++i0) o[i0] = p->before[i0] + d[i0] + p->after[i0];
  for (i0 = 0; i0 < o[0]; ++i0)
    for (i1 = 0; i1 < o[1]; ++i1)
      for (i2 = 0; i2 < o[2]; ++i2)
        for (i3 = 0; i3 < o[3]; ++i3, ++k) {
          const int j0 = i0 - p->before[0], j1 = i1 - p->before[1], j2 = i2 - p->before[2],
                    j3 = i3 - p->before[3];
          if (j0 < 0 || j0 >= d[0] || j1 < 0 || j1 >= d[1] || j2 < 0 || j2 >= d[2] || j3 < 0 ||
              j3 >= d[3]) {
            memcpy(dst + k * e, p->value, (size_t)e);
          } else {
            memcpy(dst + k * e,
                   src + ((((size_t)j0 * d[1] + j1) * d[2] + j2) * d[3] + j3) * e, (size_t)e);
          }
        }
}

void tfc_concat(const void *const *ins, const int32_t *sizes, int n_in, int outer, void *out) {
  unsigned char *dst = (unsigned char *)out;
  int o, i;
  for (o = 0; o < outer; ++o)
    for (i = 0; i < n_in; ++i) {
      memcpy(dst, (const unsigned char *)ins[i] + (size_t)o * sizes[i], (size_t)sizes[i]);
      dst += sizes[i];
    }
}
