/* int8 kernels with TFLite's quantization rules (the reference kernels of TFLite/LiteRT:
 * MultiplyByQuantizedMultiplier with gemmlowp's double rounding, fixed-point softmax), so the
 * outputs are bit-exact. With -DTFC_USE_CMSIS_NN the kernels that CMSIS-NN implements with the
 * same arithmetic are routed to it (cmsis flag set by the code generator per layer).
 */
#include "tfc_kernels.h"

#ifdef TFC_USE_CMSIS_NN
#include "arm_nnfunctions.h"
#endif

#define TFC_I32_MIN (-2147483647 - 1)
#define TFC_I32_MAX 2147483647

/* ------------------------------------------------------------------ fixed point */
static int32_t srdhm(int32_t a, int32_t b) { /* SaturatingRoundingDoublingHighMul */
  const int64_t ab = (int64_t)a * (int64_t)b;
  const int64_t nudge = ab >= 0 ? (1 << 30) : (1 - (1 << 30));
  if (a == b && a == TFC_I32_MIN) return TFC_I32_MAX;
  return (int32_t)((ab + nudge) / ((int64_t)1 << 31));
}

static int32_t rdivpot(int32_t x, int e) { /* RoundingDivideByPOT */
  const int32_t mask = (int32_t)(((int64_t)1 << e) - 1);
  const int32_t rem = x & mask;
  const int32_t thr = (mask >> 1) + (x < 0 ? 1 : 0);
  return (x >> e) + (rem > thr ? 1 : 0);
}

int32_t tfc_mbqm(int32_t x, int32_t mult, int32_t shift) {
  const int left = shift > 0 ? shift : 0, right = shift > 0 ? 0 : -shift;
  return rdivpot(srdhm((int32_t)((uint32_t)x << left), mult), right);
}

static int8_t sat8(int32_t v, int32_t lo, int32_t hi) {
  v = v < lo ? lo : v;
  return (int8_t)(v > hi ? hi : v);
}

/* gemmlowp FixedPoint<int32_t, I> helpers: raw values, products via srdhm. */
static int32_t fp_add(int32_t a, int32_t b) { return (int32_t)((uint32_t)a + (uint32_t)b); }
static int32_t fp_sub(int32_t a, int32_t b) { return (int32_t)((uint32_t)a - (uint32_t)b); }

static int32_t sat_mul_pot(int32_t x, int e) { /* SaturatingRoundingMultiplyByPOT<e>, e > 0 */
  const int32_t thr = (int32_t)(((int64_t)1 << (31 - e)) - 1);
  if (x > thr) return TFC_I32_MAX;
  if (x < -thr) return TFC_I32_MIN;
  return (int32_t)((uint32_t)x << e);
}

/* exp(a) for a in [-1/4, 0), Q0.31 in and out */
static int32_t exp_quarter(int32_t a) {
  const int32_t constant_term = 1895147668, one_third = 715827883;
  const int32_t x = fp_add(a, 1 << 28);
  const int32_t x2 = srdhm(x, x), x3 = srdhm(x2, x), x4 = srdhm(x2, x2);
  const int32_t x4_over_4 = rdivpot(x4, 2);
  const int32_t poly = rdivpot(fp_add(srdhm(fp_add(x4_over_4, x3), one_third), x2), 1);
  return fp_add(constant_term, srdhm(constant_term, fp_add(x, poly)));
}

/* exp(a) for a <= 0 given in Q5.26 (FixedPoint<int32, 5>); result Q0.31 */
static int32_t exp_on_negative_values_q5(int32_t a) {
  const int frac = 26;
  const int32_t one_quarter = 1 << (frac - 2);
  const int32_t mask = one_quarter - 1;
  const int32_t a_mod = fp_sub(a & mask, one_quarter);
  int32_t result = exp_quarter(sat_mul_pot(a_mod, 5)); /* Rescale<0> from 5 integer bits */
  const int32_t remainder = fp_sub(a_mod, a);
  static const int32_t mults[7] = {1672461947, 1302514674, 790015084, 290630308, 39332535, 720401, 242};
  int k;
  for (k = 0; k < 7; ++k) { /* exponents -2 .. 4, all < 5 integer bits */
    if (remainder & (1 << (frac - 2 + k))) result = srdhm(result, mults[k]);
  }
  if (a == 0) result = TFC_I32_MAX;
  return result;
}

/* 1 / (1 + x) for x in [0, 1), Q0.31 in and out (gemmlowp one_over_one_plus_x_for_x_in_0_1) */
static int32_t one_over_one_plus_x(int32_t a) {
  const int64_t sum = (int64_t)a + TFC_I32_MAX;
  const int32_t half_denominator = (int32_t)((sum + (sum >= 0 ? 1 : -1)) / 2);
  const int32_t c48_17 = 1515870810, cneg32_17 = -1010580540; /* Q2.29 */
  int32_t x = fp_add(c48_17, srdhm(half_denominator, cneg32_17));
  int i;
  for (i = 0; i < 3; ++i) {
    const int32_t hdx = srdhm(half_denominator, x);              /* Q2 */
    const int32_t one_minus = fp_sub(1 << 29, hdx);              /* F2::One() - hdx */
    x = fp_add(x, sat_mul_pot(srdhm(x, one_minus), 2));           /* Rescale<2>(Q4) */
  }
  return sat_mul_pot(x, 1); /* Rescale<0>(ExactMulByPot<-1>(x)): same raw, Q1 -> Q0 */
}

static int clz32(uint32_t x) {
  int n = 0;
  if (x == 0) return 32;
  while (!(x & 0x80000000u)) { x <<= 1; ++n; }
  return n;
}

/* ------------------------------------------------------------------ convolutions */
int tfc_conv2d_s8(const tfc_conv_s8_t *p, const int8_t *in, int8_t *out, int oy0, int oy1,
                  int in_row0, int out_row0, void *scratch) {
  const tfc_geom_t *g = &p->g;
  const int cin_g = g->in_c / p->groups, cout_g = g->out_c / p->groups;
  int oy, ox, oc, fy, fx, ic;
#ifdef TFC_USE_CMSIS_NN
  if (p->cmsis) {
    cmsis_nn_context ctx;
    cmsis_nn_conv_params cp;
    cmsis_nn_per_channel_quant_params qp;
    cmsis_nn_dims id, fd, bd, od;
    const int ya = oy0 * g->stride_h - g->pad_t;
    const int iy_a = ya > 0 ? ya : 0;
    int iy_b = (oy1 - 1) * g->stride_h - g->pad_t + (g->k_h - 1) * g->dil_h + 1;
    iy_b = iy_b < g->in_h ? iy_b : g->in_h;
    ctx.buf = scratch;
    ctx.size = p->scratch_bytes;
    cp.input_offset = p->input_offset;
    cp.output_offset = p->output_offset;
    cp.stride.h = g->stride_h; cp.stride.w = g->stride_w;
    cp.padding.h = iy_a - ya; cp.padding.w = g->pad_l;
    cp.dilation.h = g->dil_h; cp.dilation.w = g->dil_w;
    cp.activation.min = p->act_min; cp.activation.max = p->act_max;
    qp.multiplier = (int32_t *)p->mult;
    qp.shift = (int32_t *)p->shift;
    id.n = 1; id.h = iy_b - iy_a; id.w = g->in_w; id.c = g->in_c;
    fd.n = g->out_c; fd.h = g->k_h; fd.w = g->k_w; fd.c = cin_g;
    bd.n = 1; bd.h = 1; bd.w = 1; bd.c = g->out_c;
    od.n = 1; od.h = oy1 - oy0; od.w = g->out_w; od.c = g->out_c;
    if (arm_convolve_wrapper_s8_get_buffer_size(&cp, &id, &fd, &od) > p->scratch_bytes) return -2;
    if (arm_convolve_wrapper_s8(&ctx, &cp, &qp, &id,
                                in + (size_t)(iy_a - in_row0) * g->in_w * g->in_c, &fd,
                                p->filter, &bd, p->bias, &od,
                                out + (size_t)(oy0 - out_row0) * g->out_w * g->out_c) !=
        ARM_CMSIS_NN_SUCCESS)
      return -3;
    return 0;
  }
#endif
  (void)scratch;
  for (oy = oy0; oy < oy1; ++oy) {
    const int iy0 = oy * g->stride_h - g->pad_t;
    int8_t *orow = out + (size_t)(oy - out_row0) * g->out_w * g->out_c;
    for (ox = 0; ox < g->out_w; ++ox) {
      const int ix0 = ox * g->stride_w - g->pad_l;
      for (oc = 0; oc < g->out_c; ++oc) {
        const int group = oc / cout_g;
        const int8_t *f = p->filter + (size_t)oc * g->k_h * g->k_w * cin_g;
        int32_t acc = 0;
        for (fy = 0; fy < g->k_h; ++fy) {
          const int iy = iy0 + fy * g->dil_h;
          if (iy < 0 || iy >= g->in_h) continue;
          for (fx = 0; fx < g->k_w; ++fx) {
            const int ix = ix0 + fx * g->dil_w;
            const int8_t *x, *w;
            if (ix < 0 || ix >= g->in_w) continue;
            x = in + ((size_t)(iy - in_row0) * g->in_w + ix) * g->in_c + group * cin_g;
            w = f + (fy * g->k_w + fx) * cin_g;
            for (ic = 0; ic < cin_g; ++ic) acc += (int32_t)w[ic] * ((int32_t)x[ic] + p->input_offset);
          }
        }
        if (p->bias) acc += p->bias[oc];
        acc = tfc_mbqm(acc, p->mult[oc], p->shift[oc]) + p->output_offset;
        orow[ox * g->out_c + oc] = sat8(acc, p->act_min, p->act_max);
      }
    }
  }
  return 0;
}

int tfc_dwconv2d_s8(const tfc_dwconv_s8_t *p, const int8_t *in, int8_t *out, int oy0, int oy1,
                    int in_row0, int out_row0, void *scratch) {
  const tfc_geom_t *g = &p->g;
  int oy, ox, ic, m, fy, fx;
#ifdef TFC_USE_CMSIS_NN
  if (p->cmsis) {
    cmsis_nn_context ctx;
    cmsis_nn_dw_conv_params cp;
    cmsis_nn_per_channel_quant_params qp;
    cmsis_nn_dims id, fd, bd, od;
    const int ya = oy0 * g->stride_h - g->pad_t;
    const int iy_a = ya > 0 ? ya : 0;
    int iy_b = (oy1 - 1) * g->stride_h - g->pad_t + (g->k_h - 1) * g->dil_h + 1;
    iy_b = iy_b < g->in_h ? iy_b : g->in_h;
    ctx.buf = scratch;
    ctx.size = p->scratch_bytes;
    cp.input_offset = p->input_offset;
    cp.output_offset = p->output_offset;
    cp.ch_mult = p->depth_mult;
    cp.stride.h = g->stride_h; cp.stride.w = g->stride_w;
    cp.padding.h = iy_a - ya; cp.padding.w = g->pad_l;
    cp.dilation.h = g->dil_h; cp.dilation.w = g->dil_w;
    cp.activation.min = p->act_min; cp.activation.max = p->act_max;
    qp.multiplier = (int32_t *)p->mult;
    qp.shift = (int32_t *)p->shift;
    id.n = 1; id.h = iy_b - iy_a; id.w = g->in_w; id.c = g->in_c;
    fd.n = 1; fd.h = g->k_h; fd.w = g->k_w; fd.c = g->out_c;
    bd.n = 1; bd.h = 1; bd.w = 1; bd.c = g->out_c;
    od.n = 1; od.h = oy1 - oy0; od.w = g->out_w; od.c = g->out_c;
    if (arm_depthwise_conv_wrapper_s8_get_buffer_size(&cp, &id, &fd, &od) > p->scratch_bytes)
      return -2;
    if (arm_depthwise_conv_wrapper_s8(&ctx, &cp, &qp, &id,
                                      in + (size_t)(iy_a - in_row0) * g->in_w * g->in_c, &fd,
                                      p->filter, &bd, p->bias, &od,
                                      out + (size_t)(oy0 - out_row0) * g->out_w * g->out_c) !=
        ARM_CMSIS_NN_SUCCESS)
      return -3;
    return 0;
  }
#endif
  (void)scratch;
  for (oy = oy0; oy < oy1; ++oy) {
    const int iy0 = oy * g->stride_h - g->pad_t;
    int8_t *orow = out + (size_t)(oy - out_row0) * g->out_w * g->out_c;
    for (ox = 0; ox < g->out_w; ++ox) {
      const int ix0 = ox * g->stride_w - g->pad_l;
      for (ic = 0; ic < g->in_c; ++ic) {
        for (m = 0; m < p->depth_mult; ++m) {
          const int oc = m + ic * p->depth_mult;
          int32_t acc = 0;
          for (fy = 0; fy < g->k_h; ++fy) {
            const int iy = iy0 + fy * g->dil_h;
            if (iy < 0 || iy >= g->in_h) continue;
            for (fx = 0; fx < g->k_w; ++fx) {
              const int ix = ix0 + fx * g->dil_w;
              if (ix < 0 || ix >= g->in_w) continue;
              acc += (int32_t)p->filter[(fy * g->k_w + fx) * g->out_c + oc] *
                     ((int32_t)in[((size_t)(iy - in_row0) * g->in_w + ix) * g->in_c + ic] +
                      p->input_offset);
            }
          }
          if (p->bias) acc += p->bias[oc];
          acc = tfc_mbqm(acc, p->mult[oc], p->shift[oc]) + p->output_offset;
          orow[ox * g->out_c + oc] = sat8(acc, p->act_min, p->act_max);
        }
      }
    }
  }
  return 0;
}

int tfc_fc_s8(const tfc_fc_s8_t *p, const int8_t *in, int8_t *out, void *scratch) {
  int b, o, d;
#ifdef TFC_USE_CMSIS_NN
  if (p->cmsis) {
    cmsis_nn_context ctx;
    cmsis_nn_fc_params fp;
    cmsis_nn_per_tensor_quant_params qp;
    cmsis_nn_dims id, fd, bd, od;
    ctx.buf = scratch;
    ctx.size = p->scratch_bytes;
    fp.input_offset = p->input_offset;
    fp.filter_offset = p->filter_offset;
    fp.output_offset = p->output_offset;
    fp.activation.min = p->act_min;
    fp.activation.max = p->act_max;
    qp.multiplier = p->mult[0];
    qp.shift = p->shift[0];
    id.n = p->batches; id.h = 1; id.w = 1; id.c = p->in_features;
    fd.n = p->in_features; fd.h = 1; fd.w = 1; fd.c = p->out_features;
    bd.n = 1; bd.h = 1; bd.w = 1; bd.c = p->out_features;
    od.n = p->batches; od.h = 1; od.w = 1; od.c = p->out_features;
    if (arm_fully_connected_s8_get_buffer_size(&fd) > p->scratch_bytes) return -2;
#if defined(ARM_MATH_MVEI)
    arm_vector_sum_s8((int32_t *)scratch, p->in_features, p->out_features, p->weights,
                      p->input_offset, p->filter_offset, p->bias);
#else
    ctx.buf = 0;
    ctx.size = 0;
#endif
    if (arm_fully_connected_s8(&ctx, &fp, &qp, &id, in, &fd, p->weights, &bd, p->bias, &od,
                               out) != ARM_CMSIS_NN_SUCCESS)
      return -3;
    return 0;
  }
#endif
  (void)scratch;
  for (b = 0; b < p->batches; ++b) {
    const int8_t *x = in + (size_t)b * p->in_features;
    for (o = 0; o < p->out_features; ++o) {
      const int8_t *w = p->weights + (size_t)o * p->in_features;
      const int k = p->per_channel ? o : 0;
      int32_t acc = 0;
      for (d = 0; d < p->in_features; ++d)
        acc += ((int32_t)w[d] + p->filter_offset) * ((int32_t)x[d] + p->input_offset);
      if (p->bias) acc += p->bias[o];
      acc = tfc_mbqm(acc, p->mult[k], p->shift[k]) + p->output_offset;
      out[(size_t)b * p->out_features + o] = sat8(acc, p->act_min, p->act_max);
    }
  }
  return 0;
}

/* ------------------------------------------------------------------ pooling */
#ifdef TFC_USE_CMSIS_NN
static void pool_cmsis_dims(const tfc_pool_s8_t *p, int oy0, int oy1, cmsis_nn_pool_params *pp,
                            cmsis_nn_dims *id, cmsis_nn_dims *fd, cmsis_nn_dims *od, int *iy_a) {
  const tfc_geom_t *g = &p->g;
  const int ya = oy0 * g->stride_h - g->pad_t;
  int iy_b = (oy1 - 1) * g->stride_h - g->pad_t + g->k_h;
  *iy_a = ya > 0 ? ya : 0;
  iy_b = iy_b < g->in_h ? iy_b : g->in_h;
  pp->stride.h = g->stride_h; pp->stride.w = g->stride_w;
  pp->padding.h = *iy_a - ya; pp->padding.w = g->pad_l;
  pp->activation.min = p->act_min; pp->activation.max = p->act_max;
  id->n = 1; id->h = iy_b - *iy_a; id->w = g->in_w; id->c = g->in_c;
  fd->n = 1; fd->h = g->k_h; fd->w = g->k_w; fd->c = 1;
  od->n = 1; od->h = oy1 - oy0; od->w = g->out_w; od->c = g->out_c;
}
#endif

static void pool_s8(const tfc_pool_s8_t *p, const int8_t *in, int8_t *out, int oy0, int oy1,
                    int in_row0, int out_row0, int average) {
  const tfc_geom_t *g = &p->g;
  int oy, ox, c, fy, fx;
  for (oy = oy0; oy < oy1; ++oy) {
    const int iy0 = oy * g->stride_h - g->pad_t;
    const int fy0 = iy0 < 0 ? -iy0 : 0;
    const int fy1 = g->k_h < g->in_h - iy0 ? g->k_h : g->in_h - iy0;
    int8_t *orow = out + (size_t)(oy - out_row0) * g->out_w * g->out_c;
    for (ox = 0; ox < g->out_w; ++ox) {
      const int ix0 = ox * g->stride_w - g->pad_l;
      const int fx0 = ix0 < 0 ? -ix0 : 0;
      const int fx1 = g->k_w < g->in_w - ix0 ? g->k_w : g->in_w - ix0;
      for (c = 0; c < g->out_c; ++c) {
        int32_t acc = average ? 0 : -128;
        int count = 0;
        for (fy = fy0; fy < fy1; ++fy)
          for (fx = fx0; fx < fx1; ++fx) {
            const int32_t v = in[((size_t)(iy0 + fy - in_row0) * g->in_w + ix0 + fx) * g->in_c + c];
            if (average) acc += v;
            else acc = v > acc ? v : acc;
            ++count;
          }
        if (average && count)
          acc = acc > 0 ? (acc + count / 2) / count : (acc - count / 2) / count;
        orow[ox * g->out_c + c] = sat8(acc, p->act_min, p->act_max);
      }
    }
  }
}

int tfc_maxpool_s8(const tfc_pool_s8_t *p, const int8_t *in, int8_t *out, int oy0, int oy1,
                   int in_row0, int out_row0) {
#ifdef TFC_USE_CMSIS_NN
  if (p->cmsis) {
    cmsis_nn_context ctx;
    cmsis_nn_pool_params pp;
    cmsis_nn_dims id, fd, od;
    int iy_a;
    ctx.buf = 0;
    ctx.size = 0;
    pool_cmsis_dims(p, oy0, oy1, &pp, &id, &fd, &od, &iy_a);
    if (arm_max_pool_s8(&ctx, &pp, &id, in + (size_t)(iy_a - in_row0) * p->g.in_w * p->g.in_c,
                        &fd, &od, out + (size_t)(oy0 - out_row0) * p->g.out_w * p->g.out_c) !=
        ARM_CMSIS_NN_SUCCESS)
      return -3;
    return 0;
  }
#endif
  pool_s8(p, in, out, oy0, oy1, in_row0, out_row0, 0);
  return 0;
}

int tfc_avgpool_s8(const tfc_pool_s8_t *p, const int8_t *in, int8_t *out, int oy0, int oy1,
                   int in_row0, int out_row0, void *scratch) {
#ifdef TFC_USE_CMSIS_NN
  if (p->cmsis) {
    cmsis_nn_context ctx;
    cmsis_nn_pool_params pp;
    cmsis_nn_dims id, fd, od;
    int iy_a;
    ctx.buf = scratch;
    ctx.size = p->scratch_bytes;
    pool_cmsis_dims(p, oy0, oy1, &pp, &id, &fd, &od, &iy_a);
    if (arm_avgpool_s8_get_buffer_size(od.w, id.c) > p->scratch_bytes) return -2;
    if (arm_avgpool_s8(&ctx, &pp, &id, in + (size_t)(iy_a - in_row0) * p->g.in_w * p->g.in_c,
                       &fd, &od, out + (size_t)(oy0 - out_row0) * p->g.out_w * p->g.out_c) !=
        ARM_CMSIS_NN_SUCCESS)
      return -3;
    return 0;
  }
#endif
  (void)scratch;
  pool_s8(p, in, out, oy0, oy1, in_row0, out_row0, 1);
  return 0;
}

void tfc_mean_s8(const int8_t *in, int8_t *out, int outer, int reduce, int inner,
                 int32_t input_zero_point, int32_t mult, int32_t shift, int32_t output_zero_point) {
  int o, r, i;
  for (o = 0; o < outer; ++o)
    for (i = 0; i < inner; ++i) {
      int32_t sum = 0;
      for (r = 0; r < reduce; ++r) sum += in[((size_t)o * reduce + r) * inner + i];
      sum -= input_zero_point * reduce;
      out[(size_t)o * inner + i] = sat8(tfc_mbqm(sum, mult, shift) + output_zero_point, -128, 127);
    }
}

/* ------------------------------------------------------------------ elementwise */

static int8_t add_one(const tfc_add_s8_t *p, int32_t x, int32_t y) {
  const int32_t a = (int32_t)((uint32_t)(p->in1_offset + x) << p->left_shift);
  const int32_t b = (int32_t)((uint32_t)(p->in2_offset + y) << p->left_shift);
  const int32_t sa = tfc_mbqm(a, p->in1_mult, p->in1_shift);
  const int32_t sb = tfc_mbqm(b, p->in2_mult, p->in2_shift);
  const int32_t r = tfc_mbqm(sa + sb, p->out_mult, p->out_shift) + p->output_offset;
  return sat8(r, p->act_min, p->act_max);
}

int tfc_add_s8(const tfc_add_s8_t *p, const int8_t *a, const int8_t *c, int8_t *out) {
#ifdef TFC_USE_CMSIS_NN
  if (p->cmsis && p->b.flat) {
    if (arm_elementwise_add_s8(a, c, p->in1_offset, p->in1_mult, p->in1_shift, p->in2_offset,
                               p->in2_mult, p->in2_shift, p->left_shift, out, p->output_offset,
                               p->out_mult, p->out_shift, p->act_min, p->act_max,
                               p->b.dims[4]) != ARM_CMSIS_NN_SUCCESS)
      return -3;
    return 0;
  }
#endif
  TFC_BCAST_LOOP(&p->b, out[o_] = add_one(p, a[i1_], c[i2_]));
  return 0;
}

int tfc_mul_s8(const tfc_mul_s8_t *p, const int8_t *a, const int8_t *c, int8_t *out) {
#ifdef TFC_USE_CMSIS_NN
  if (p->cmsis && p->b.flat) {
    if (arm_elementwise_mul_s8(a, c, p->in1_offset, p->in2_offset, out, p->output_offset,
                               p->out_mult, p->out_shift, p->act_min, p->act_max,
                               p->b.dims[4]) != ARM_CMSIS_NN_SUCCESS)
      return -3;
    return 0;
  }
#endif
  TFC_BCAST_LOOP(&p->b,
                 out[o_] = sat8(tfc_mbqm((p->in1_offset + a[i1_]) * (p->in2_offset + c[i2_]),
                                         p->out_mult, p->out_shift) + p->output_offset,
                                p->act_min, p->act_max));
  return 0;
}

int tfc_softmax_s8(const tfc_softmax_s8_t *p, const int8_t *in, int8_t *out) {
  int r, c;
#ifdef TFC_USE_CMSIS_NN
  if (p->cmsis) {
    arm_softmax_s8(in, p->rows, p->depth, p->input_multiplier, p->input_left_shift, p->diff_min,
                   out);
    return 0;
  }
#endif
  for (r = 0; r < p->rows; ++r) {
    const int8_t *x = in + (size_t)r * p->depth;
    int8_t *y = out + (size_t)r * p->depth;
    int32_t mx = -128, sum = 0, shifted_scale, bits_over_unit, exponent;
    uint32_t sum_u;
    int headroom;
    for (c = 0; c < p->depth; ++c) mx = x[c] > mx ? x[c] : mx;
    for (c = 0; c < p->depth; ++c) {
      const int32_t diff = (int32_t)x[c] - mx;
      if (diff >= p->diff_min) {
        const int32_t scaled = tfc_mbqm(diff, p->input_multiplier, p->input_left_shift);
        sum = fp_add(sum, rdivpot(exp_on_negative_values_q5(scaled), 12)); /* Rescale<12> */
      }
    }
    /* GetReciprocal(sum, 12) */
    sum_u = (uint32_t)sum;
    headroom = clz32(sum_u);
    bits_over_unit = 12 - headroom;
    shifted_scale = one_over_one_plus_x((int32_t)((sum_u << headroom) - 0x80000000u));
    exponent = bits_over_unit + 31 - 8;
    for (c = 0; c < p->depth; ++c) {
      const int32_t diff = (int32_t)x[c] - mx;
      if (diff >= p->diff_min) {
        const int32_t scaled = tfc_mbqm(diff, p->input_multiplier, p->input_left_shift);
        const int32_t e = exp_on_negative_values_q5(scaled);
        const int32_t v = rdivpot(srdhm(shifted_scale, e), exponent) - 128;
        y[c] = sat8(v, -128, 127);
      } else {
        y[c] = -128;
      }
    }
  }
  return 0;
}

void tfc_relu_s8(const int8_t *in, int8_t *out, int n, int32_t input_zero_point,
                 int32_t output_zero_point, int32_t mult, int32_t shift, int32_t lo, int32_t hi) {
  int i;
  for (i = 0; i < n; ++i)
    out[i] = sat8(output_zero_point + tfc_mbqm((int32_t)in[i] - input_zero_point, mult, shift),
                  lo, hi);
}

void tfc_lut_s8(const int8_t *in, int8_t *out, int n, const int8_t *table) {
  int i;
  for (i = 0; i < n; ++i) out[i] = table[(uint8_t)in[i]];
}

void tfc_requantize_s8(const int8_t *in, int8_t *out, int n, int32_t input_zero_point,
                       int32_t output_zero_point, int32_t mult, int32_t shift) {
  int i;
  for (i = 0; i < n; ++i)
    out[i] = sat8(tfc_mbqm((int32_t)in[i] - input_zero_point, mult, shift) + output_zero_point,
                  -128, 127);
}
