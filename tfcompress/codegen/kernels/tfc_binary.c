/* Binary (1-bit) kernels with Larq Compute Engine semantics, written for Cortex-M.
 *
 * A bit-packed word holds 32 channels (bit 1 = -1). A binary convolution of +-1 values is
 *     sum_k a_k w_k = K - 2 * popcount(a XOR w)        (K = taps * channels)
 * and LCE's output transform works on x = 2 * popcount (the "accum << 1" of
 * larq_compute_engine/core/bconv2d/output_transform.h):
 *     float:  y = float(clamp(x, clamp_min, clamp_max)) * mul[c] + bias[c]
 *     int8:   saturate(round_half_away(y))   (mul/bias already hold 1/scale and the zero point)
 *     bits:   bit = popcount > threshold[c]
 * Padding: "one" padding feeds +1 (bit 0) for taps outside the image; "zero" padding makes
 * those taps contribute 0, i.e. x = 2 * popcount(inside taps) + padded_taps * channels, the
 * same as LCE's reference kernel (which adds channels/2 to the popcount per padded tap).
 *
 * Loop order (Cortex-M4/M7 have no popcount instruction): for every output pixel the packed
 * input patch is gathered once into a contiguous scratch buffer (padding words are 0); every
 * output channel's filter is then a contiguous run of the same length, and four output channels
 * are accumulated together so each loaded input word stays in a register for four XORs. The
 * popcount is the SWAR form; bit counts of two words are summed in 4-bit fields and bytes are
 * reduced to the final count only once per group of words.
 */
#include "tfc_kernels.h"

#define M1 0x55555555u
#define M2 0x33333333u
#define M4 0x0F0F0F0Fu

#if defined(__GNUC__)
#define TFC_INLINE static inline __attribute__((always_inline))
#else
#define TFC_INLINE static inline
#endif

/* Sum of the four bytes of v (each <= 63): one USADA8 on cores with the DSP extension
 * (Cortex-M4/M7/M33), a multiply elsewhere. */
#if defined(__ARM_FEATURE_SIMD32) && defined(__GNUC__)
TFC_INLINE uint32_t add_bytes(uint32_t acc, uint32_t v) {
  uint32_t r;
  __asm__("usada8 %0, %1, %2, %3" : "=r"(r) : "r"(v), "r"(0u), "r"(acc));
  return r;
}
#else
TFC_INLINE uint32_t add_bytes(uint32_t acc, uint32_t v) { return acc + ((v * 0x01010101u) >> 24); }
#endif

/* 4-bit field bit counts of a word (fields <= 4) */
TFC_INLINE uint32_t nib(uint32_t v) {
  v = v - ((v >> 1) & M1);
  return (v & M2) + ((v >> 2) & M2);
}

/* nibble sums (<= 12) -> byte sums (<= 24) */
TFC_INLINE uint32_t fold(uint32_t v) { return (v & M4) + ((v >> 4) & M4); }

static uint32_t pop32(uint32_t v) { return add_bytes(0u, fold(nib(v))); }

/* popcount(x ^ f) over n words: three words share one nibble sum and one byte reduction */
TFC_INLINE uint32_t xor_pop(const uint32_t *x, const uint32_t *f, int n) {
  uint32_t acc = 0;
  for (; n >= 3; n -= 3, x += 3, f += 3)
    acc = add_bytes(acc, fold(nib(x[0] ^ f[0]) + nib(x[1] ^ f[1]) + nib(x[2] ^ f[2])));
  for (; n > 0; --n, ++x, ++f) acc = add_bytes(acc, fold(nib(x[0] ^ f[0])));
  return acc;
}

/* Two output channels at once: every input word is loaded once for both filters. */
TFC_INLINE void xor_pop2(const uint32_t *x, const uint32_t *f0, const uint32_t *f1, int n,
                         uint32_t *acc) {
  uint32_t a0 = 0, a1 = 0;
  for (; n >= 3; n -= 3, x += 3, f0 += 3, f1 += 3) {
    const uint32_t x0 = x[0], x1 = x[1], x2 = x[2];
    a0 = add_bytes(a0, fold(nib(x0 ^ f0[0]) + nib(x1 ^ f0[1]) + nib(x2 ^ f0[2])));
    a1 = add_bytes(a1, fold(nib(x0 ^ f1[0]) + nib(x1 ^ f1[1]) + nib(x2 ^ f1[2])));
  }
  for (; n > 0; --n, ++x, ++f0, ++f1) {
    a0 = add_bytes(a0, fold(nib(x[0] ^ f0[0])));
    a1 = add_bytes(a1, fold(nib(x[0] ^ f1[0])));
  }
  acc[0] = a0;
  acc[1] = a1;
}

static int8_t round_sat8(float y) {
  int32_t r;
  if (y > 200.0f) return 127;
  if (y < -200.0f) return -128;
  r = tfc_round_f32(y);
  return (int8_t)(r < -128 ? -128 : (r > 127 ? 127 : r));
}

/* ------------------------------------------------------------------ bitpacking */
void tfc_lce_quantize_f32(const float *in, uint32_t *out, int pixels, int channels) {
  int p, c;
  for (p = 0; p < pixels; ++p) {
    const float *x = in + (size_t)p * channels;
    for (c = 0; c < channels; c += 32) {
      const int n = channels - c < 32 ? channels - c : 32;
      uint32_t bits = 0;
      int i;
      for (i = 0; i < n; ++i) bits |= (uint32_t)(x[c + i] < 0.0f) << i;
      *out++ = bits; /* in place is safe: a word is written after its 32 inputs are read */
    }
  }
}

void tfc_lce_quantize_s8(const int8_t *in, uint32_t *out, int pixels, int channels,
                         int32_t zero_point) {
  int p, c;
  for (p = 0; p < pixels; ++p) {
    const int8_t *x = in + (size_t)p * channels;
    for (c = 0; c < channels; c += 32) {
      const int n = channels - c < 32 ? channels - c : 32;
      uint32_t bits = 0;
      int i;
      for (i = 0; i < n; ++i) bits |= (uint32_t)((int32_t)x[c + i] < zero_point) << i;
      *out++ = bits;
    }
  }
}

void tfc_lce_dequantize_f32(const uint32_t *in, float *out, int pixels, int channels) {
  const int words = (channels + 31) / 32;
  int p, c;
  for (p = 0; p < pixels; ++p)
    for (c = 0; c < channels; ++c)
      out[(size_t)p * channels + c] = ((in[(size_t)p * words + c / 32] >> (c % 32)) & 1u) ? -1.0f : 1.0f;
}

void tfc_lce_dequantize_s8(const uint32_t *in, int8_t *out, int pixels, int channels,
                           int8_t plus, int8_t minus) {
  const int words = (channels + 31) / 32;
  int p, c;
  for (p = 0; p < pixels; ++p)
    for (c = 0; c < channels; ++c)
      out[(size_t)p * channels + c] = ((in[(size_t)p * words + c / 32] >> (c % 32)) & 1u) ? minus : plus;
}

/* ------------------------------------------------------------------ binary convolution */
static void transform_out(const tfc_bconv_t *p, const int32_t *x2, int c0, int n, void *out_px) {
  int j;
  for (j = 0; j < n; ++j) {
    const int c = c0 + j;
    int32_t x = x2[j];
    float y;
    x = x < p->clamp_min ? p->clamp_min : (x > p->clamp_max ? p->clamp_max : x);
    y = (float)x * p->mul[c] + p->bias[c];
    if (p->out_type == TFC_BOUT_FLOAT) ((float *)out_px)[c] = y;
    else ((int8_t *)out_px)[c] = round_sat8(y);
  }
}

void tfc_bconv2d(const tfc_bconv_t *p, const uint32_t *in, void *out, int oy0, int oy1,
                 int in_row0, int out_row0, uint32_t *scratch) {
  const tfc_geom_t *g = &p->g;
  const int taps = g->k_h * g->k_w, wg = p->words_g, K = taps * wg;
  const int cout_g = g->out_c / p->groups;
  const int words_out = (g->out_c + 31) / 32;
  const size_t out_px = p->out_type == TFC_BOUT_BITS ? (size_t)words_out * 4
                        : p->out_type == TFC_BOUT_INT8 ? (size_t)g->out_c : (size_t)g->out_c * 4;
  int oy, ox, fy, fx, grp, oc, j;
  for (oy = oy0; oy < oy1; ++oy) {
    const int iy0 = oy * g->stride_h - g->pad_t;
    for (ox = 0; ox < g->out_w; ++ox) {
      const int ix0 = ox * g->stride_w - g->pad_l;
      unsigned char *o = (unsigned char *)out + ((size_t)(oy - out_row0) * g->out_w + ox) * out_px;
      uint32_t padmask = 0; /* taps outside the image (first 32 taps; more fall back below) */
      int npad = 0;
      uint32_t bitword = 0;
      /* gather the patch: scratch[group][tap][wg] */
      for (fy = 0; fy < g->k_h; ++fy) {
        const int iy = iy0 + fy * g->dil_h;
        for (fx = 0; fx < g->k_w; ++fx) {
          const int ix = ix0 + fx * g->dil_w;
          const int t = fy * g->k_w + fx;
          if (iy < 0 || iy >= g->in_h || ix < 0 || ix >= g->in_w) {
            for (grp = 0; grp < p->groups; ++grp)
              for (j = 0; j < wg; ++j) scratch[grp * K + t * wg + j] = 0u;
            if (t < 32) padmask |= 1u << t;
            ++npad;
          } else {
            const uint32_t *src = in + ((size_t)(iy - in_row0) * g->in_w + ix) * p->words_in;
            for (grp = 0; grp < p->groups; ++grp)
              for (j = 0; j < wg; ++j) scratch[grp * K + t * wg + j] = src[grp * wg + j];
          }
        }
      }
      for (grp = 0; grp < p->groups; ++grp) {
        const uint32_t *patch = scratch + grp * K;
        for (oc = 0; oc < cout_g; oc += 2) {
          const int c0 = grp * cout_g + oc;
          const int n = cout_g - oc < 2 ? cout_g - oc : 2;
          const uint32_t *f = p->filter + (size_t)c0 * K;
          uint32_t acc[2];
          int32_t x2[2];
          if (n == 2) xor_pop2(patch, f, f + K, K, acc);
          else acc[0] = xor_pop(patch, f, K);
          if (npad && p->pad_mode == TFC_BPAD_ZERO) {
            /* padded taps were counted as +1 inputs: remove them (popcount of the filter) */
            for (j = 0; j < n; ++j) {
              uint32_t fpop = 0;
              int t;
              for (t = 0; t < taps; ++t) {
                const int iy = iy0 + (t / g->k_w) * g->dil_h, ix = ix0 + (t % g->k_w) * g->dil_w;
                const int outside = t < 32 ? (int)((padmask >> t) & 1u)
                                           : (iy < 0 || iy >= g->in_h || ix < 0 || ix >= g->in_w);
                if (outside) {
                  int w;
                  for (w = 0; w < wg; ++w) fpop += pop32(f[(size_t)j * K + t * wg + w]);
                }
              }
              acc[j] -= fpop;
              if (p->out_type == TFC_BOUT_BITS)
                acc[j] += (uint32_t)(npad * (p->cin_g / 2));  /* LCE reference: +channels/2 */
              x2[j] = 2 * (int32_t)acc[j] + (p->out_type == TFC_BOUT_BITS ? 0 : npad * p->cin_g);
            }
          } else {
            for (j = 0; j < n; ++j) x2[j] = 2 * (int32_t)acc[j];
          }
          if (p->out_type == TFC_BOUT_BITS) {
            for (j = 0; j < n; ++j) {
              const int c = c0 + j;
              bitword |= (uint32_t)((int32_t)acc[j] > p->thresholds[c]) << (c % 32);
              if (c % 32 == 31 || c == g->out_c - 1) {
                ((uint32_t *)o)[c / 32] = bitword;
                bitword = 0;
              }
            }
          } else {
            transform_out(p, x2, c0, n, o);
          }
        }
      }
    }
  }
}

void tfc_bmaxpool2d(const tfc_bmaxpool_t *p, const uint32_t *in, uint32_t *out, int oy0,
                    int oy1, int in_row0, int out_row0) {
  const tfc_geom_t *g = &p->g;
  int oy, ox, c, fy, fx;
  for (oy = oy0; oy < oy1; ++oy) {
    const int iy0 = oy * g->stride_h - g->pad_t;
    const int fy0 = iy0 < 0 ? -iy0 : 0;
    const int fy1 = g->k_h < g->in_h - iy0 ? g->k_h : g->in_h - iy0;
    for (ox = 0; ox < g->out_w; ++ox) {
      const int ix0 = ox * g->stride_w - g->pad_l;
      const int fx0 = ix0 < 0 ? -ix0 : 0;
      const int fx1 = g->k_w < g->in_w - ix0 ? g->k_w : g->in_w - ix0;
      uint32_t *o = out + ((size_t)(oy - out_row0) * g->out_w + ox) * g->out_c;
      for (c = 0; c < g->out_c; ++c) o[c] = 0xFFFFFFFFu;
      for (fy = fy0; fy < fy1; ++fy)
        for (fx = fx0; fx < fx1; ++fx) {
          const uint32_t *x = in + ((size_t)(iy0 + fy - in_row0) * g->in_w + ix0 + fx) * g->in_c;
          for (c = 0; c < g->out_c; ++c) o[c] &= x[c]; /* max of +-1 = AND of sign bits */
        }
    }
  }
}
