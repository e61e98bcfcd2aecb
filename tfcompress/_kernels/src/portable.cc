// Portable (any CPU) kernels and ISA selection.
#include <stdlib.h>
#include <string.h>

#include "kernels.h"

namespace tfc {

namespace {

inline int Popcount64(uint64_t x) {
#if defined(__GNUC__) || defined(__clang__)
  return __builtin_popcountll(x);
#else
  x = x - ((x >> 1) & 0x5555555555555555ULL);
  x = (x & 0x3333333333333333ULL) + ((x >> 2) & 0x3333333333333333ULL);
  x = (x + (x >> 4)) & 0x0F0F0F0F0F0F0F0FULL;
  return static_cast<int>((x * 0x0101010101010101ULL) >> 56);
#endif
}

void BgemmPortable(const uint64_t* P, int M, int K64, const uint64_t* W, int NB, int32_t* C,
                   int ldc) {
  for (int m = 0; m < M; ++m) {
    const uint64_t* p = P + static_cast<size_t>(m) * K64;
    int32_t* c = C + static_cast<size_t>(m) * ldc;
    for (int nb = 0; nb < NB; ++nb) {
      const uint64_t* w = W + static_cast<size_t>(nb) * K64 * 8;
      int32_t acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
      for (int k = 0; k < K64; ++k) {
        const uint64_t x = p[k];
        for (int l = 0; l < 8; ++l) acc[l] += Popcount64(x ^ w[k * 8 + l]);
      }
      for (int l = 0; l < 8; ++l) c[nb * 8 + l] = acc[l];
    }
  }
}

}  // namespace

void PackF32Portable(const float* x, int n, int32_t* out) {
  for (int w = 0; w * 32 < n; ++w) {
    uint32_t bits = 0;
    const int end = n - w * 32 < 32 ? n - w * 32 : 32;
    for (int i = 0; i < end; ++i) bits |= static_cast<uint32_t>(x[w * 32 + i] < 0.0f) << i;
    out[w] = static_cast<int32_t>(bits);
  }
}

void PackI8Portable(const int8_t* x, int n, int32_t zero_point, int32_t* out) {
  for (int w = 0; w * 32 < n; ++w) {
    uint32_t bits = 0;
    const int end = n - w * 32 < 32 ? n - w * 32 : 32;
    for (int i = 0; i < end; ++i)
      bits |= static_cast<uint32_t>(static_cast<int32_t>(x[w * 32 + i]) < zero_point) << i;
    out[w] = static_cast<int32_t>(bits);
  }
}

void OutF32Portable(const int32_t* c, int n, const FloatTransform& t, const int32_t* corr,
                    float* out) {
  for (int i = 0; i < n; ++i) {
    int32_t v = t.backtransform_add - 2 * c[i] - (corr ? corr[i] : 0);
    v = v < t.clamp_min ? t.clamp_min : (v > t.clamp_max ? t.clamp_max : v);
    out[i] = static_cast<float>(v) * t.mul[i] + t.bias[i];
  }
}

void OutFusedPortable(const int32_t* c, int n, const FloatTransform& t, const int32_t* corr,
                      const FusedOut& f) {
  for (int w = 0; w * 32 < n; ++w) {
    uint32_t bits = 0;
    const int end = n - w * 32 < 32 ? n - w * 32 : 32;
    for (int j = 0; j < end; ++j) {
      const int i = w * 32 + j;
      int32_t v = t.backtransform_add - 2 * c[i] - (corr ? corr[i] : 0);
      v = v < t.clamp_min ? t.clamp_min : (v > t.clamp_max ? t.clamp_max : v);
      float y = static_cast<float>(v) * t.mul[i] + t.bias[i];
      if (f.residual) y = y + f.residual[i];
      if (f.clamp) y = y < f.lo ? f.lo : (y > f.hi ? f.hi : y);
      if (f.out) f.out[i] = y;
      bits |= static_cast<uint32_t>(y < 0.0f) << j;
    }
    if (f.bits) f.bits[w] = static_cast<int32_t>(bits);
  }
}

void MulAddPackPortable(const float* x, const float* mul, const float* add, int n, int32_t* out) {
  for (int w = 0; w * 32 < n; ++w) {
    uint32_t bits = 0;
    const int end = n - w * 32 < 32 ? n - w * 32 : 32;
    for (int j = 0; j < end; ++j) {
      const int i = w * 32 + j;
      const float p = x[i] * mul[i];
      const float y = p + add[i];
      bits |= static_cast<uint32_t>(y < 0.0f) << j;
    }
    out[w] = static_cast<int32_t>(bits);
  }
}

void OutFusedRowsPortable(const int32_t* c, int ldc, int rows, int n, const FloatTransform& t,
                          const int32_t* const* corr, const FusedOut& f, const FusedStrides& s) {
  for (int r = 0; r < rows; ++r) {
    FusedOut fr{f.residual ? f.residual + r * s.residual : nullptr, f.clamp, f.lo, f.hi,
                f.out ? f.out + r * s.out : nullptr, f.bits ? f.bits + r * s.bits : nullptr};
    OutFusedPortable(c + static_cast<long long>(r) * ldc, n, t, corr ? corr[r] : nullptr, fr);
  }
}

void OutBitsPortable(const int32_t* c, int n, const int32_t* thresholds, int32_t* out) {
  for (int w = 0; w * 32 < n; ++w) {
    uint32_t bits = 0;
    const int end = n - w * 32 < 32 ? n - w * 32 : 32;
    for (int i = 0; i < end; ++i)
      bits |= static_cast<uint32_t>(c[w * 32 + i] > thresholds[w * 32 + i]) << i;
    out[w] = static_cast<int32_t>(bits);
  }
}

const KernelTable kPortableKernels = {
    "portable", BgemmPortable, nullptr, PackF32Portable, MulAddPackPortable, PackI8Portable,
    OutF32Portable, OutBitsPortable,
    DotPortable, OutFusedRowsPortable,
};

Isa DetectIsa() {
#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
      __builtin_cpu_supports("avx512vpopcntdq"))
    return kIsaAvx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("popcnt")) return kIsaAvx2;
#endif
  return kIsaPortable;
}

const KernelTable* KernelsFor(Isa isa) {
  switch (isa) {
    case kIsaPortable: return &kPortableKernels;
#if defined(__x86_64__) || defined(_M_X64)
    case kIsaAvx2: return &kAvx2Kernels;
    case kIsaAvx512: return &kAvx512Kernels;
#endif
    default: return nullptr;
  }
}

const char* IsaName(Isa isa) {
  switch (isa) {
    case kIsaAvx512: return "avx512";
    case kIsaAvx2: return "avx2";
    default: return "portable";
  }
}

bool ParseIsa(const char* s, Isa* out) {
  if (s == nullptr) return false;
  if (strcmp(s, "portable") == 0) { *out = kIsaPortable; return true; }
  if (strcmp(s, "avx2") == 0) { *out = kIsaAvx2; return true; }
  if (strcmp(s, "avx512") == 0) { *out = kIsaAvx512; return true; }
  return false;
}

}  // namespace tfc
