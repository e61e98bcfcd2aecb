/* tfcompress generated-code kernels: plain C99, no heap, no OS, no libc beyond memcpy/memset.
 *
 * Layouts are TFLite's: activations NHWC with batch 1, convolution filters OHWI, depthwise
 * filters 1HWC, fully-connected weights [out][in]. Bit-packed tensors (Larq Compute Engine)
 * hold 32 channels per 32-bit word, channel c in bit c % 32, bit 1 = -1, bit 0 = +1.
 *
 * Spatial kernels compute output rows [oy0, oy1). Their input buffer holds input rows from
 * in_row0 on and their output buffer holds output rows from out_row0 on, so the generated code
 * can stream a few rows at a time through a chain of layers (whole tensors: 0, OH, 0, 0).
 *
 * Build with -DTFC_USE_CMSIS_NN (and CMSIS-NN's Include/ on the include path, its int8 sources
 * compiled in) to run int8 convolutions, pooling, fully-connected, add, mul and softmax through
 * Arm CMSIS-NN; the results are the same bytes as the portable kernels.
 */
#ifndef TFC_KERNELS_H_
#define TFC_KERNELS_H_

#include <stdint.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------ shared types */
typedef struct {
  int32_t in_h, in_w, in_c;
  int32_t out_h, out_w, out_c;
  int32_t k_h, k_w, stride_h, stride_w, dil_h, dil_w, pad_t, pad_l;
} tfc_geom_t;


/* Internal: loop over a tfc_bcast_t; BODY sees o_ (output index), i1_, i2_ (input indices). */
#define TFC_BCAST_LOOP(B, BODY)                                                            \
  do {                                                                                     \
    if ((B)->flat) {                                                                       \
      int o_;                                                                              \
      for (o_ = 0; o_ < (B)->dims[4]; ++o_) {                                              \
        const int i1_ = o_, i2_ = o_;                                                      \
        BODY;                                                                              \
      }                                                                                    \
    } else {                                                                               \
      int d0, d1, d2, d3, d4, o_ = 0;                                                      \
      for (d0 = 0; d0 < (B)->dims[0]; ++d0)                                                \
        for (d1 = 0; d1 < (B)->dims[1]; ++d1)                                              \
          for (d2 = 0; d2 < (B)->dims[2]; ++d2)                                            \
            for (d3 = 0; d3 < (B)->dims[3]; ++d3) {                                        \
              int i1_ = d0 * (B)->stride1[0] + d1 * (B)->stride1[1] +                      \
                        d2 * (B)->stride1[2] + d3 * (B)->stride1[3];                       \
              int i2_ = d0 * (B)->stride2[0] + d1 * (B)->stride2[1] +                      \
                        d2 * (B)->stride2[2] + d3 * (B)->stride2[3];                       \
              const int s1_ = (B)->stride1[4], s2_ = (B)->stride2[4];                      \
              for (d4 = 0; d4 < (B)->dims[4]; ++d4, ++o_, i1_ += s1_, i2_ += s2_) {        \
                BODY;                                                                      \
              }                                                                            \
            }                                                                              \
    }                                                                                      \
  } while (0)

/* ------------------------------------------------------------------ float32 */
typedef struct {
  tfc_geom_t g;
  int32_t groups;            /* in_c / filter depth */
  const float *filter;       /* [out_c][k_h][k_w][in_c / groups] */
  const float *bias;         /* [out_c] or NULL */
  float act_min, act_max;
} tfc_conv_f32_t;

typedef struct {
  tfc_geom_t g;
  int32_t depth_mult;        /* out_c = in_c * depth_mult */
  const float *filter;       /* [k_h][k_w][out_c] */
  const float *bias;
  float act_min, act_max;
} tfc_dwconv_f32_t;

typedef struct {
  int32_t batches, in_features, out_features;
  const float *weights;      /* [out_features][in_features] */
  const float *bias;
  float act_min, act_max;
} tfc_fc_f32_t;

typedef struct {
  tfc_geom_t g;
  float act_min, act_max;
} tfc_pool_f32_t;

/* Broadcasting binary op over up to 5 dimensions (shapes right-aligned, stride 0 broadcasts). */
typedef struct {
  int32_t dims[5];
  int32_t stride1[5], stride2[5];
  int32_t flat;              /* 1: same shapes, a flat loop of dims[4] elements */
} tfc_bcast_t;

void tfc_conv2d_f32(const tfc_conv_f32_t *p, const float *in, float *out, int oy0, int oy1,
                    int in_row0, int out_row0);
void tfc_dwconv2d_f32(const tfc_dwconv_f32_t *p, const float *in, float *out, int oy0, int oy1,
                      int in_row0, int out_row0);
void tfc_fc_f32(const tfc_fc_f32_t *p, const float *in, float *out);
void tfc_maxpool_f32(const tfc_pool_f32_t *p, const float *in, float *out, int oy0, int oy1,
                     int in_row0, int out_row0);
void tfc_avgpool_f32(const tfc_pool_f32_t *p, const float *in, float *out, int oy0, int oy1,
                     int in_row0, int out_row0);
void tfc_mean_f32(const float *in, float *out, int outer, int reduce, int inner);
void tfc_add_f32(const tfc_bcast_t *b, const float *a, const float *c, float *out, float lo,
                 float hi);
void tfc_mul_f32(const tfc_bcast_t *b, const float *a, const float *c, float *out, float lo,
                 float hi);
void tfc_softmax_f32(const float *in, float *out, int rows, int depth, float beta);
void tfc_clamp_f32(const float *in, float *out, int n, float lo, float hi);
void tfc_logistic_f32(const float *in, float *out, int n);
void tfc_tanh_f32(const float *in, float *out, int n);
void tfc_quantize_f32_s8(const float *in, int8_t *out, int n, float scale, int32_t zero_point);
void tfc_dequantize_s8_f32(const int8_t *in, float *out, int n, float scale, int32_t zero_point);
float tfc_expf(float x);
int32_t tfc_round_f32(float x);

/* ------------------------------------------------------------------ layout (any type) */
typedef struct {
  int32_t in_dims[4];        /* right-aligned 4-D input shape */
  int32_t before[4], after[4];
  int32_t elem;              /* bytes per element */
  const void *value;         /* one element: the padding value */
} tfc_pad_t;

void tfc_pad(const tfc_pad_t *p, const void *in, void *out);
void tfc_copy(const void *in, void *out, int bytes);
/* Concatenation: `outer` blocks; input i contributes sizes[i] bytes per block. */
void tfc_concat(const void *const *ins, const int32_t *sizes, int n_in, int outer, void *out);

/* ------------------------------------------------------------------ int8 */
typedef struct {
  tfc_geom_t g;
  int32_t groups;
  int32_t input_offset, output_offset;   /* -input zero point, output zero point */
  int32_t act_min, act_max;
  const int8_t *filter;                  /* [out_c][k_h][k_w][in_c / groups] */
  const int32_t *bias;                   /* or NULL */
  const int32_t *mult, *shift;           /* per output channel */
  int32_t cmsis;                         /* 1: CMSIS-NN handles these attributes */
  int32_t scratch_bytes;                 /* arena scratch planned for CMSIS-NN */
} tfc_conv_s8_t;

typedef struct {
  tfc_geom_t g;
  int32_t depth_mult;
  int32_t input_offset, output_offset;
  int32_t act_min, act_max;
  const int8_t *filter;                  /* [k_h][k_w][out_c] */
  const int32_t *bias;
  const int32_t *mult, *shift;
  int32_t cmsis;
  int32_t scratch_bytes;
} tfc_dwconv_s8_t;

typedef struct {
  int32_t batches, in_features, out_features;
  int32_t input_offset, filter_offset, output_offset;
  int32_t act_min, act_max;
  const int8_t *weights;                 /* [out_features][in_features] */
  const int32_t *bias;
  const int32_t *mult, *shift;           /* one entry, or one per output (per-channel) */
  int32_t per_channel;
  int32_t cmsis;
  int32_t scratch_bytes;
} tfc_fc_s8_t;

typedef struct {
  tfc_geom_t g;
  int32_t act_min, act_max;
  int32_t cmsis;
  int32_t scratch_bytes;
} tfc_pool_s8_t;

typedef struct {
  tfc_bcast_t b;
  int32_t in1_offset, in2_offset, output_offset;
  int32_t in1_mult, in1_shift, in2_mult, in2_shift, out_mult, out_shift, left_shift;
  int32_t act_min, act_max;
  int32_t cmsis;
} tfc_add_s8_t;

typedef struct {
  tfc_bcast_t b;
  int32_t in1_offset, in2_offset, output_offset;
  int32_t out_mult, out_shift;
  int32_t act_min, act_max;
  int32_t cmsis;
} tfc_mul_s8_t;

typedef struct {
  int32_t rows, depth;
  int32_t input_multiplier, input_left_shift, diff_min;
  int32_t cmsis;
} tfc_softmax_s8_t;

int32_t tfc_mbqm(int32_t x, int32_t mult, int32_t shift);  /* MultiplyByQuantizedMultiplier */
int tfc_conv2d_s8(const tfc_conv_s8_t *p, const int8_t *in, int8_t *out, int oy0, int oy1,
                  int in_row0, int out_row0, void *scratch);
int tfc_dwconv2d_s8(const tfc_dwconv_s8_t *p, const int8_t *in, int8_t *out, int oy0, int oy1,
                    int in_row0, int out_row0, void *scratch);
int tfc_fc_s8(const tfc_fc_s8_t *p, const int8_t *in, int8_t *out, void *scratch);
int tfc_maxpool_s8(const tfc_pool_s8_t *p, const int8_t *in, int8_t *out, int oy0, int oy1,
                   int in_row0, int out_row0);
int tfc_avgpool_s8(const tfc_pool_s8_t *p, const int8_t *in, int8_t *out, int oy0, int oy1,
                   int in_row0, int out_row0, void *scratch);
void tfc_mean_s8(const int8_t *in, int8_t *out, int outer, int reduce, int inner,
                 int32_t input_zero_point, int32_t mult, int32_t shift, int32_t output_zero_point);
int tfc_add_s8(const tfc_add_s8_t *p, const int8_t *a, const int8_t *c, int8_t *out);
int tfc_mul_s8(const tfc_mul_s8_t *p, const int8_t *a, const int8_t *c, int8_t *out);
int tfc_softmax_s8(const tfc_softmax_s8_t *p, const int8_t *in, int8_t *out);
void tfc_relu_s8(const int8_t *in, int8_t *out, int n, int32_t input_zero_point,
                 int32_t output_zero_point, int32_t mult, int32_t shift, int32_t lo, int32_t hi);
void tfc_lut_s8(const int8_t *in, int8_t *out, int n, const int8_t *table /* [256], index uint8 */);
void tfc_requantize_s8(const int8_t *in, int8_t *out, int n, int32_t input_zero_point,
                       int32_t output_zero_point, int32_t mult, int32_t shift);

/* ------------------------------------------------------------------ binary (LCE) */
enum { TFC_BOUT_FLOAT = 0, TFC_BOUT_INT8 = 1, TFC_BOUT_BITS = 2 };
enum { TFC_BPAD_NONE = 0, TFC_BPAD_ONE = 1, TFC_BPAD_ZERO = 2 };

typedef struct {
  tfc_geom_t g;              /* in_c / out_c: unpacked channel counts */
  int32_t groups;
  int32_t words_in;          /* packed words per input pixel */
  int32_t words_g;           /* packed words per filter tap (per group) */
  int32_t cin_g;             /* input channels per group */
  int32_t pad_mode;          /* TFC_BPAD_* */
  int32_t out_type;          /* TFC_BOUT_* */
  const uint32_t *filter;    /* [out_c][k_h][k_w][words_g] */
  const float *mul, *bias;   /* fused output transform (float/int8 output) */
  int32_t clamp_min, clamp_max;
  const int32_t *thresholds; /* bitpacked output */
} tfc_bconv_t;

typedef struct {
  tfc_geom_t g;              /* in_c = out_c = packed words per pixel */
} tfc_bmaxpool_t;

void tfc_lce_quantize_f32(const float *in, uint32_t *out, int pixels, int channels);
void tfc_lce_quantize_s8(const int8_t *in, uint32_t *out, int pixels, int channels,
                         int32_t zero_point);
void tfc_lce_dequantize_f32(const uint32_t *in, float *out, int pixels, int channels);
void tfc_lce_dequantize_s8(const uint32_t *in, int8_t *out, int pixels, int channels,
                           int8_t plus, int8_t minus);
/* scratch: k_h * k_w * words_in 32-bit words (one gathered patch) */
void tfc_bconv2d(const tfc_bconv_t *p, const uint32_t *in, void *out, int oy0, int oy1,
                 int in_row0, int out_row0, uint32_t *scratch);
void tfc_bmaxpool2d(const tfc_bmaxpool_t *p, const uint32_t *in, uint32_t *out, int oy0,
                    int oy1, int in_row0, int out_row0);

#ifdef __cplusplus
}
#endif

#endif /* TFC_KERNELS_H_ */
