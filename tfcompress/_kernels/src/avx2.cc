// AVX2 kernels: no vector popcount, so bytes are counted with a 4-bit lookup
// table (vpshufb), summed in byte lanes for up to 31 words, then widened with
// vpsadbw. 4 output pixels x 8 output channels per micro-kernel.
#if defined(__x86_64__) || defined(_M_X64)

#include <immintrin.h>
#include <stdint.h>

#include "kernels.h"

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,popcnt"))), apply_to = function)
#elif defined(__GNUC__)
#pragma GCC push_options
#pragma GCC target("avx2,popcnt")
#endif

namespace tfc {
namespace {

inline __m256i Popcnt8(__m256i v, __m256i lut, __m256i low) {
  const __m256i a = _mm256_shuffle_epi8(lut, _mm256_and_si256(v, low));
  const __m256i b = _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16(v, 4), low));
  return _mm256_add_epi8(a, b);
}

template <int MR>
void Tile(const uint64_t* P, int K64, const uint64_t* W, int32_t* C, int ldc) {
  const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
                                       0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
  const __m256i low = _mm256_set1_epi8(0x0f);
  const __m256i zero = _mm256_setzero_si256();
  __m256i tot[MR][2];
  for (int i = 0; i < MR; ++i) tot[i][0] = tot[i][1] = zero;
  for (int k0 = 0; k0 < K64; k0 += 31) {
    const int k1 = K64 - k0 > 31 ? k0 + 31 : K64;
    __m256i acc[MR][2];
    for (int i = 0; i < MR; ++i) acc[i][0] = acc[i][1] = zero;
    for (int k = k0; k < k1; ++k) {
      const __m256i w0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(W + k * 8));
      const __m256i w1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(W + k * 8 + 4));
      for (int i = 0; i < MR; ++i) {
        const __m256i x = _mm256_set1_epi64x(static_cast<long long>(P[i * K64 + k]));
        acc[i][0] = _mm256_add_epi8(acc[i][0], Popcnt8(_mm256_xor_si256(x, w0), lut, low));
        acc[i][1] = _mm256_add_epi8(acc[i][1], Popcnt8(_mm256_xor_si256(x, w1), lut, low));
      }
    }
    for (int i = 0; i < MR; ++i) {
      tot[i][0] = _mm256_add_epi64(tot[i][0], _mm256_sad_epu8(acc[i][0], zero));
      tot[i][1] = _mm256_add_epi64(tot[i][1], _mm256_sad_epu8(acc[i][1], zero));
    }
  }
  // 8 x u64 -> 8 x i32 (counts are far below 2^31).
  const __m256i pick = _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6);
  for (int i = 0; i < MR; ++i) {
    const __m256i a = _mm256_permutevar8x32_epi32(tot[i][0], pick);
    const __m256i b = _mm256_permutevar8x32_epi32(tot[i][1], pick);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(C + i * ldc), _mm256_blend_epi32(a, b, 0xF0));
  }
}

void Bgemm(const uint64_t* P, int M, int K64, const uint64_t* W, int NB, int32_t* C, int ldc) {
  const size_t block = static_cast<size_t>(K64) * 8;
  for (int nb = 0; nb < NB; ++nb) {
    const uint64_t* w = W + nb * block;
    int m = 0;
    for (; m + 4 <= M; m += 4)
      Tile<4>(P + static_cast<size_t>(m) * K64, K64, w, C + static_cast<size_t>(m) * ldc + nb * 8, ldc);
    const uint64_t* p = P + static_cast<size_t>(m) * K64;
    int32_t* c = C + static_cast<size_t>(m) * ldc + nb * 8;
    switch (M - m) {
      case 3: Tile<3>(p, K64, w, c, ldc); break;
      case 2: Tile<2>(p, K64, w, c, ldc); break;
      case 1: Tile<1>(p, K64, w, c, ldc); break;
      default: break;
    }
  }
}

void PackF32(const float* x, int n, int32_t* out) {
  const int full = n / 32;
  const __m256 zero = _mm256_setzero_ps();
  for (int w = 0; w < full; ++w) {
    uint32_t bits = 0;
    for (int q = 0; q < 4; ++q) {
      const __m256 v = _mm256_loadu_ps(x + w * 32 + q * 8);
      bits |= static_cast<uint32_t>(_mm256_movemask_ps(_mm256_cmp_ps(v, zero, _CMP_LT_OQ))) << (8 * q);
    }
    out[w] = static_cast<int32_t>(bits);
  }
  if (n > full * 32) PackF32Portable(x + full * 32, n - full * 32, out + full);
}

void OutF32(const int32_t* c, int n, const FloatTransform& t, const int32_t* corr, float* out) {
  const __m256i add = _mm256_set1_epi32(t.backtransform_add);
  const __m256i lo = _mm256_set1_epi32(t.clamp_min), hi = _mm256_set1_epi32(t.clamp_max);
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256i v = _mm256_sub_epi32(
        add, _mm256_slli_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(c + i)), 1));
    if (corr) v = _mm256_sub_epi32(v, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(corr + i)));
    v = _mm256_min_epi32(_mm256_max_epi32(v, lo), hi);
    const __m256 y = _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(v), _mm256_loadu_ps(t.mul + i)),
                                   _mm256_loadu_ps(t.bias + i));
    _mm256_storeu_ps(out + i, y);
  }
  if (i < n) {
    FloatTransform rest = t;
    rest.mul += i;
    rest.bias += i;
    OutF32Portable(c + i, n - i, rest, corr ? corr + i : nullptr, out + i);
  }
}

void OutBits(const int32_t* c, int n, const int32_t* thresholds, int32_t* out) {
  const int full = n / 32;
  for (int w = 0; w < full; ++w) {
    uint32_t bits = 0;
    for (int q = 0; q < 4; ++q) {
      const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c + w * 32 + q * 8));
      const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(thresholds + w * 32 + q * 8));
      bits |= static_cast<uint32_t>(_mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(a, b)))) << (8 * q);
    }
    out[w] = static_cast<int32_t>(bits);
  }
  if (n > full * 32) OutBitsPortable(c + full * 32, n - full * 32, thresholds + full * 32, out + full);
}

}  // namespace

const KernelTable kAvx2Kernels = {"avx2", Bgemm, nullptr, PackF32, MulAddPackPortable, PackI8Portable, OutF32, OutBits,
                                  DotPortable, OutFusedRowsPortable};

}  // namespace tfc

#if defined(__clang__)
#pragma clang attribute pop
#elif defined(__GNUC__)
#pragma GCC pop_options
#endif

#endif  // x86-64
