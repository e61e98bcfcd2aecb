// Compute kernels for the Larq Compute Engine ops, one table per ISA level.
//
// Bit conventions (those of LCE): a bitpacked tensor stores 32 channels per
// int32 word, channel c in bit (c % 32) of word (c / 32); bit 1 means -1
// (negative), bit 0 means +1; unused high bits of the last word are 0.
//
// Binary convolution is computed as im2col + bit GEMM on 64-bit words:
//   patches P: M rows (output pixels) x K64 uint64 words,
//   filter  W: packed in blocks of 8 output channels, W[nb][k][lane],
//   counts  C[m][n] = sum_k popcount(P[m][k] ^ W[n/8][k][n%8]) (xor-popcount).
// Where the taps are whole 64-bit words (channels a multiple of 64, one group, no horizontal
// dilation) and the ISA has it, the bit GEMM reads the rows of P straight from a zero-bordered
// copy of the input instead (bgemm_direct): the same counts without the im2col copy.
#ifndef TFCOMPRESS_KERNELS_KERNELS_H_
#define TFCOMPRESS_KERNELS_KERNELS_H_

#include <stddef.h>
#include <stdint.h>

namespace tfc {

enum Isa { kIsaPortable = 0, kIsaAvx2 = 1, kIsaAvx512 = 2 };

// How counts become float/int8 values: y = float(clamp(K - 2*c - corr)) * mul + bias.
struct FloatTransform {
  int32_t backtransform_add;  // K = kernel_h * kernel_w * channels_in_per_group
  int32_t clamp_min, clamp_max;
  const float* mul;   // per output channel
  const float* bias;  // per output channel
};

// A bound epilogue (epilogue.h) in plain data, for the ISA-specific runners.
enum StepKind : uint8_t { kStepAdd, kStepSub, kStepRSub, kStepMul, kStepPrelu, kStepLogistic,
                          kStepClamp };
// How a step's second operand lines up with the rows: the same shape (one row per row), one
// value per channel ([C] or [1, ..., 1, C]), one row per batch item ([N, 1, 1, C]) or one value.
enum OperandKind : uint8_t { kOperandNone, kOperandFull, kOperandChannel, kOperandBatch,
                             kOperandScalar };
enum ActionKind : uint8_t { kActStep, kActWrite, kActPack };

struct EpAction {
  ActionKind kind;
  StepKind step;
  OperandKind operand;
  const float* src;  // operand base
  void* dst;         // destination base (float for Write, int32 words for Pack)
  float lo, hi;      // clamp bounds
  long long dst_stride;  // Write: floats from row to row of the destination
};

struct EpRun {
  const EpAction* acts;
  int n_acts;
  int channels, words;
  long long rows_per_batch;
};

// The common epilogue of a binary conv with float output, fused into its output transform:
// y = transform(counts) [+ residual row] [clamped to lo..hi], stored to `out` and/or its signs
// packed into `bits` (either may be null).
struct FusedOut {
  const float* residual;
  bool clamp;
  float lo, hi;
  float* out;
  int32_t* bits;
};

// Per-row advance of FusedOut's pointers, in elements (floats or int32 words).
struct FusedStrides {
  long long residual, out, bits;
};

struct KernelTable {
  const char* name;
  // C[m][0..NB*8) = counts for M rows; ldc = row stride of C in int32.
  void (*bgemm)(const uint64_t* P, int M, int K64, const uint64_t* W, int NB, int32_t* C,
                int ldc);
  // bgemm without the im2col copy (nullptr: not available). Row m of P is the concatenation,
  // over fy in [0, kh), of the `run` words at rows[fy] + m * step: M consecutive output
  // pixels of one image row whose filter windows lie inside the input horizontally (rows
  // of the window above or below the image point at zeros). K64 = kh * run.
  void (*bgemm_direct)(const uint64_t* const* rows, int kh, int run, long long step, int M,
                       const uint64_t* W, int NB, int32_t* C, int ldc);
  // Bitpack n floats (x < 0 -> 1) into ceil(n/32) words.
  void (*pack_f32)(const float* x, int n, int32_t* out);
  // Bitpack (x * mul + add) < 0 for n floats, the product and the sum rounded one by one as
  // MUL and ADD round them (a BatchNorm left as MUL and ADD, then LceQuantize).
  void (*mul_add_pack)(const float* x, const float* mul, const float* add, int n, int32_t* out);
  // Bitpack n int8 values (x < zero_point -> 1).
  void (*pack_i8)(const int8_t* x, int n, int32_t zero_point, int32_t* out);
  // One row of counts -> n floats. corr may be null (no zero-padding correction).
  void (*out_f32)(const int32_t* c, int n, const FloatTransform& t, const int32_t* corr,
                  float* out);
  // One row of counts -> n bits (c > threshold -> 1), ceil(n/32) words.
  void (*out_bits)(const int32_t* c, int n, const int32_t* thresholds, int32_t* out);
  // sum_i a[i] * b[i]
  float (*dot)(const float* a, const float* b, int n);
  // Counts -> the fused output (see FusedOut) for `rows` consecutive rows in one call.
  // Row r reads c + r * ldc and corr[r] (corr itself may be null: no correction anywhere);
  // f's pointers are those of row 0 and advance by `strides` per row.
  void (*out_fused_rows)(const int32_t* c, int ldc, int rows, int n, const FloatTransform& t,
                         const int32_t* const* corr, const FusedOut& f,
                         const FusedStrides& strides);
};

extern const KernelTable kPortableKernels;
#if defined(__x86_64__) || defined(_M_X64)
extern const KernelTable kAvx2Kernels;
extern const KernelTable kAvx512Kernels;
#endif

// Highest level this CPU (and OS) supports.
Isa DetectIsa();
// Table for a level (nullptr if not compiled in).
const KernelTable* KernelsFor(Isa isa);
const char* IsaName(Isa isa);
// Parses "portable"/"avx2"/"avx512"; returns false for anything else.
bool ParseIsa(const char* s, Isa* out);

// Shared portable helpers (used by every table for the less hot paths).
void PackF32Portable(const float* x, int n, int32_t* out);
void MulAddPackPortable(const float* x, const float* mul, const float* add, int n, int32_t* out);
void PackI8Portable(const int8_t* x, int n, int32_t zero_point, int32_t* out);
void OutF32Portable(const int32_t* c, int n, const FloatTransform& t, const int32_t* corr,
                    float* out);
void OutBitsPortable(const int32_t* c, int n, const int32_t* thresholds, int32_t* out);
float DotPortable(const float* a, const float* b, int n);
void OutFusedPortable(const int32_t* c, int n, const FloatTransform& t, const int32_t* corr,
                      const FusedOut& f);
void OutFusedRowsPortable(const int32_t* c, int ldc, int rows, int n, const FloatTransform& t,
                          const int32_t* const* corr, const FusedOut& f, const FusedStrides& s);

}  // namespace tfc

#endif  // TFCOMPRESS_KERNELS_KERNELS_H_
