// AVX-512 kernels (F, BW, DQ, VL and VPOPCNTDQ): vpxorq + vpopcntq + vpaddq on
// zmm registers, 4 output pixels x 32 output channels per micro-kernel.
//
// Compiled with a target pragma instead of global flags so the rest of the
// library runs on any x86-64 CPU; only called after DetectIsa() said yes.
// Everything here has internal linkage (no inline function leaks out of this
// translation unit compiled for AVX-512).
#if defined(__x86_64__) || defined(_M_X64)

#include <immintrin.h>
#include <stdint.h>

#include "kernels.h"

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512vpopcntdq,popcnt"))), apply_to = function)
#elif defined(__GNUC__)
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,avx512vpopcntdq,popcnt")
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"  // GCC 12 false positives in intrinsics
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

namespace tfc {
namespace {

// Tile reading the patch rows straight from the input (see KernelTable::bgemm_direct).
template <int MR, int NR>
void TileDirect(const uint64_t* const* rows, int kh, int run, long long off, long long step,
                int K64, const uint64_t* W, int32_t* C, int ldc) {
  __m512i acc[MR][NR];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) acc[i][j] = _mm512_setzero_si512();
  const size_t block = static_cast<size_t>(K64) * 8;
  int k = 0;
  for (int fy = 0; fy < kh; ++fy) {
    const uint64_t* base = rows[fy] + off;
    for (int r = 0; r < run; ++r, ++k) {
      __m512i w[NR];
      for (int j = 0; j < NR; ++j) w[j] = _mm512_loadu_si512(W + j * block + k * 8);
      for (int i = 0; i < MR; ++i) {
        const __m512i x = _mm512_set1_epi64(static_cast<long long>(base[i * step + r]));
        for (int j = 0; j < NR; ++j)
          acc[i][j] = _mm512_add_epi64(acc[i][j], _mm512_popcnt_epi64(_mm512_xor_si512(x, w[j])));
      }
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j)
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(C + i * ldc + j * 8),
                          _mm512_cvtepi64_epi32(acc[i][j]));
}

template <int MR>
void RowDirect(const uint64_t* const* rows, int kh, int run, long long off, long long step,
               const uint64_t* W, int NB, int32_t* C, int ldc) {
  const int K64 = kh * run;
  const size_t block = static_cast<size_t>(K64) * 8;
  int nb = 0;
  for (; nb + 4 <= NB; nb += 4)
    TileDirect<MR, 4>(rows, kh, run, off, step, K64, W + nb * block, C + nb * 8, ldc);
  switch (NB - nb) {
    case 3: TileDirect<MR, 3>(rows, kh, run, off, step, K64, W + nb * block, C + nb * 8, ldc); break;
    case 2: TileDirect<MR, 2>(rows, kh, run, off, step, K64, W + nb * block, C + nb * 8, ldc); break;
    case 1: TileDirect<MR, 1>(rows, kh, run, off, step, K64, W + nb * block, C + nb * 8, ldc); break;
    default: break;
  }
}

void BgemmDirect(const uint64_t* const* rows, int kh, int run, long long step, int M,
                 const uint64_t* W, int NB, int32_t* C, int ldc) {
  int m = 0;
  for (; m + 4 <= M; m += 4)
    RowDirect<4>(rows, kh, run, m * step, step, W, NB, C + static_cast<size_t>(m) * ldc, ldc);
  int32_t* c = C + static_cast<size_t>(m) * ldc;
  switch (M - m) {
    case 3: RowDirect<3>(rows, kh, run, m * step, step, W, NB, c, ldc); break;
    case 2: RowDirect<2>(rows, kh, run, m * step, step, W, NB, c, ldc); break;
    case 1: RowDirect<1>(rows, kh, run, m * step, step, W, NB, c, ldc); break;
    default: break;
  }
}

// The im2col bit GEMM: rows of P are K64 words apart, i.e. the direct GEMM with one window
// row of K64 words.
void Bgemm(const uint64_t* P, int M, int K64, const uint64_t* W, int NB, int32_t* C, int ldc) {
  BgemmDirect(&P, 1, K64, K64, M, W, NB, C, ldc);
}

inline __mmask16 TailMask(int n) { return n >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << n) - 1); }

void PackF32(const float* x, int n, int32_t* out) {
  const __m512 zero = _mm512_setzero_ps();
  for (int w = 0; w * 32 < n; ++w) {
    const int rem = n - w * 32;
    const __mmask16 m0 = TailMask(rem), m1 = TailMask(rem - 16 > 0 ? rem - 16 : 0);
    const __m512 a = _mm512_maskz_loadu_ps(m0, x + w * 32);
    const __m512 b = _mm512_maskz_loadu_ps(m1, x + w * 32 + 16);
    const uint32_t lo = _mm512_mask_cmp_ps_mask(m0, a, zero, _CMP_LT_OQ);
    const uint32_t hi = _mm512_mask_cmp_ps_mask(m1, b, zero, _CMP_LT_OQ);
    out[w] = static_cast<int32_t>(lo | (hi << 16));
  }
}

void MulAddPack(const float* x, const float* mul, const float* add, int n, int32_t* out) {
  const __m512 zero = _mm512_setzero_ps();
  for (int w = 0; w * 32 < n; ++w) {
    const int rem = n - w * 32;
    const __mmask16 m0 = TailMask(rem), m1 = TailMask(rem - 16 > 0 ? rem - 16 : 0);
    const int i = w * 32;
    const __m512 a = _mm512_add_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(m0, x + i),
                                                 _mm512_maskz_loadu_ps(m0, mul + i)),
                                   _mm512_maskz_loadu_ps(m0, add + i));
    const __m512 b = _mm512_add_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(m1, x + i + 16),
                                                 _mm512_maskz_loadu_ps(m1, mul + i + 16)),
                                   _mm512_maskz_loadu_ps(m1, add + i + 16));
    const uint32_t lo = _mm512_mask_cmp_ps_mask(m0, a, zero, _CMP_LT_OQ);
    const uint32_t hi = _mm512_mask_cmp_ps_mask(m1, b, zero, _CMP_LT_OQ);
    out[w] = static_cast<int32_t>(lo | (hi << 16));
  }
}

void PackI8(const int8_t* x, int n, int32_t zero_point, int32_t* out) {
  if (zero_point < -128 || zero_point > 127) {
    PackI8Portable(x, n, zero_point, out);
    return;
  }
  const __m512i zp = _mm512_set1_epi8(static_cast<char>(zero_point));
  for (int w = 0; w * 32 < n; ++w) {
    const int rem = n - w * 32 < 32 ? n - w * 32 : 32;
    const __mmask64 m = rem >= 64 ? ~0ULL : ((1ULL << rem) - 1);
    const __m512i v = _mm512_maskz_loadu_epi8(m, x + w * 32);
    out[w] = static_cast<int32_t>(static_cast<uint32_t>(_mm512_mask_cmplt_epi8_mask(m, v, zp)));
  }
}

void OutF32(const int32_t* c, int n, const FloatTransform& t, const int32_t* corr, float* out) {
  const __m512i add = _mm512_set1_epi32(t.backtransform_add);
  const __m512i lo = _mm512_set1_epi32(t.clamp_min), hi = _mm512_set1_epi32(t.clamp_max);
  for (int i = 0; i < n; i += 16) {
    const __mmask16 m = TailMask(n - i);
    __m512i v = _mm512_sub_epi32(add, _mm512_slli_epi32(_mm512_maskz_loadu_epi32(m, c + i), 1));
    if (corr) v = _mm512_sub_epi32(v, _mm512_maskz_loadu_epi32(m, corr + i));
    v = _mm512_min_epi32(_mm512_max_epi32(v, lo), hi);
    const __m512 y = _mm512_add_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(v), _mm512_maskz_loadu_ps(m, t.mul + i)),
                                   _mm512_maskz_loadu_ps(m, t.bias + i));
    _mm512_mask_storeu_ps(out + i, m, y);
  }
}

void OutBits(const int32_t* c, int n, const int32_t* thresholds, int32_t* out) {
  for (int w = 0; w * 32 < n; ++w) {
    const int rem = n - w * 32;
    const __mmask16 m0 = TailMask(rem), m1 = TailMask(rem - 16 > 0 ? rem - 16 : 0);
    const int32_t* cw = c + w * 32;
    const int32_t* tw = thresholds + w * 32;
    const uint32_t lo = _mm512_mask_cmpgt_epi32_mask(m0, _mm512_maskz_loadu_epi32(m0, cw),
                                                     _mm512_maskz_loadu_epi32(m0, tw));
    const uint32_t hi = _mm512_mask_cmpgt_epi32_mask(m1, _mm512_maskz_loadu_epi32(m1, cw + 16),
                                                     _mm512_maskz_loadu_epi32(m1, tw + 16));
    out[w] = static_cast<int32_t>(lo | (hi << 16));
  }
}

// The fused output transform over many rows, specialised on which parts of the epilogue
// exist, with every per-row constant in registers.
template <bool kResidual, bool kClamp, bool kOut, bool kBits>
void OutFusedRowsT(const int32_t* c, int ldc, int rows, int n, const FloatTransform& t,
                   const int32_t* const* corr, const FusedOut& f, const FusedStrides& s) {
  const __m512i add = _mm512_set1_epi32(t.backtransform_add);
  const __m512i lo = _mm512_set1_epi32(t.clamp_min), hi = _mm512_set1_epi32(t.clamp_max);
  const __m512 flo = _mm512_set1_ps(f.lo), fhi = _mm512_set1_ps(f.hi);
  const float* mul = t.mul;
  const float* bias = t.bias;
  const float* residual = f.residual;
  float* out = f.out;
  int32_t* bits = f.bits;
  for (int r = 0; r < rows; ++r) {
    const int32_t* cr = c + static_cast<long long>(r) * ldc;
    const int32_t* kr = corr ? corr[r] : nullptr;
    uint32_t word = 0;
    for (int i = 0; i < n; i += 16) {
      const __mmask16 m = TailMask(n - i);
      __m512i v = _mm512_sub_epi32(add, _mm512_slli_epi32(_mm512_maskz_loadu_epi32(m, cr + i), 1));
      if (kr) v = _mm512_sub_epi32(v, _mm512_maskz_loadu_epi32(m, kr + i));
      v = _mm512_min_epi32(_mm512_max_epi32(v, lo), hi);
      __m512 y = _mm512_add_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(v), _mm512_maskz_loadu_ps(m, mul + i)),
                               _mm512_maskz_loadu_ps(m, bias + i));
      if (kResidual) y = _mm512_add_ps(y, _mm512_maskz_loadu_ps(m, residual + i));
      if (kClamp) y = _mm512_min_ps(fhi, _mm512_max_ps(flo, y));
      if (kOut) _mm512_mask_storeu_ps(out + i, m, y);
      if (kBits) {
        const uint32_t b = _mm512_mask_cmp_ps_mask(m, y, _mm512_setzero_ps(), _CMP_LT_OQ);
        word |= b << (i & 16);
        if ((i & 16) || i + 16 >= n) {
          bits[i / 32] = static_cast<int32_t>(word);
          word = 0;
        }
      }
    }
    if (kResidual) residual += s.residual;
    if (kOut) out += s.out;
    if (kBits) bits += s.bits;
  }
}

void OutFusedRows(const int32_t* c, int ldc, int rows, int n, const FloatTransform& t,
                  const int32_t* const* corr, const FusedOut& f, const FusedStrides& s) {
  const int key = (f.residual ? 8 : 0) | (f.clamp ? 4 : 0) | (f.out ? 2 : 0) | (f.bits ? 1 : 0);
  switch (key) {
#define TFC_CASE(k) \
  case k: OutFusedRowsT<(k & 8) != 0, (k & 4) != 0, (k & 2) != 0, (k & 1) != 0>(c, ldc, rows, n, t, corr, f, s); break;
    TFC_CASE(1) TFC_CASE(2) TFC_CASE(3) TFC_CASE(5) TFC_CASE(6) TFC_CASE(7)
    TFC_CASE(9) TFC_CASE(10) TFC_CASE(11) TFC_CASE(13) TFC_CASE(14) TFC_CASE(15)
#undef TFC_CASE
    default: break;  // nothing written: nothing to do
  }
}

// Dot product with four 16-lane accumulators.
float Dot512(const float* a, const float* b, int n) {
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps(), acc2 = _mm512_setzero_ps(),
         acc3 = _mm512_setzero_ps();
  int i = 0;
  for (; i + 64 <= n; i += 64) {
    acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc0);
    acc1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), acc1);
    acc2 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 32), _mm512_loadu_ps(b + i + 32), acc2);
    acc3 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 48), _mm512_loadu_ps(b + i + 48), acc3);
  }
  for (; i < n; i += 16) {
    const __mmask16 m = TailMask(n - i);
    acc0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), acc0);
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(acc0, acc1), _mm512_add_ps(acc2, acc3)));
}

}  // namespace

const KernelTable kAvx512Kernels = {"avx512", Bgemm, BgemmDirect, PackF32, MulAddPack, PackI8, OutF32, OutBits,
                                    Dot512, OutFusedRows};

}  // namespace tfc

#if defined(__clang__)
#pragma clang attribute pop
#elif defined(__GNUC__)
#pragma GCC pop_options
#endif

#endif  // x86-64
