// Helpers shared by the op implementations (tensor access, shapes, options).
#ifndef TFCOMPRESS_KERNELS_OP_UTIL_H_
#define TFCOMPRESS_KERNELS_OP_UTIL_H_

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "flexbuffers_lite.h"
#include "tflite_abi.h"

namespace tfc {

#if defined(__GNUC__) || defined(__clang__)
__attribute__((format(printf, 1, 2)))
#endif
inline std::string Format(const char* fmt, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof(buf), fmt, ap);
  va_end(ap);
  return buf;
}

inline const char* TypeName(int type) {
  switch (type) {
    case kTfcFloat32: return "float32";
    case kTfcInt32: return "int32";
    case kTfcUInt8: return "uint8";
    case kTfcInt8: return "int8";
    case kTfcBool: return "bool";
    default: return "other";
  }
}

inline size_t TypeSize(int type) {
  switch (type) {
    case kTfcFloat32: case kTfcInt32: return 4;
    case kTfcInt8: case kTfcUInt8: case kTfcBool: return 1;
    default: return 0;
  }
}

inline std::vector<int> Dims(const TfcTensor* t) {
  std::vector<int> d;
  if (t->dims != nullptr)
    for (int i = 0; i < t->dims->size; ++i) d.push_back(t->dims->data[i]);
  return d;
}

inline std::string DimsStr(const std::vector<int>& d) {
  std::string s = "[";
  for (size_t i = 0; i < d.size(); ++i) s += (i ? ", " : "") + std::to_string(d[i]);
  return s + "]";
}

inline long long NumElements(const std::vector<int>& d) {
  long long n = 1;
  for (int v : d) n *= v;
  return n;
}

// Largest element count of one tensor: the kernels index with int products of dimensions.
constexpr long long kMaxElements = (1LL << 31) - 1;

// `d` has rank `rank` (any rank if rank < 0; at least 1 then), every dimension in
// [1, 2^24] and at most kMaxElements elements; else `error` names `what` and its shape.
inline bool CheckShape(const std::vector<int>& d, int rank, const char* op, const char* what,
                       std::string* error) {
  bool ok = rank < 0 ? !d.empty() : static_cast<int>(d.size()) == rank;
  long long n = 1;
  for (int v : d) {
    if (v < 1 || v > (1 << 24)) ok = false;
    else n *= v;
    if (n > kMaxElements) ok = false;
    if (!ok) break;
  }
  if (!ok) {
    *error = std::string(op) + ": " + what + " shape " + DimsStr(d) +
             (rank >= 0 ? " is not " + std::to_string(rank) + "-D with" : " needs") +
             " every dimension in [1, 16777216] and < 2^31 elements";
    return false;
  }
  return true;
}

inline int Bitpacked(int channels) { return (channels + 31) / 32; }

inline bool IsConstant(const TfcTensor* t) {
  return t->allocation_type == kTfcMmapRo || t->allocation_type == kTfcPersistentRo;
}

inline TfcTensor* GetTensor(TfcContext* context, int index) { return TensorAt(context, index); }

// Makes `t` have shape `want` (resizing it if the interpreter's shape differs).
inline bool EnsureShape(TfcContext* context, TfcTensor* t, const std::vector<int>& want,
                 std::string* error) {
  if (Dims(t) == want) return true;
  if (context->ResizeTensorExplicit == nullptr ||
      context->ResizeTensorExplicit(context, t, static_cast<int>(want.size()), want.data()) != 0) {
    *error = "the output's shape " + DimsStr(Dims(t)) + " is not the computed " + DimsStr(want) +
             ", and LiteRT could not resize it";
    return false;
  }
  return true;
}

inline void* AlignedAlloc(size_t bytes) {
  void* p = nullptr;
  if (posix_memalign(&p, 64, bytes ? bytes : 64) != 0) return nullptr;
  return p;
}

struct AlignedDeleter {
  void operator()(void* p) const { free(p); }
};
template <typename T>
using AlignedArray = std::unique_ptr<T[], AlignedDeleter>;
template <typename T>
AlignedArray<T> MakeAligned(size_t n) {
  return AlignedArray<T>(static_cast<T*>(AlignedAlloc(n * sizeof(T))));
}

inline bool ReadIntOption(const FlexMap& m, const char* key, bool required, int64_t fallback, int64_t lo,
                   int64_t hi, int* out, const char* op, std::string* error) {
  int64_t v = fallback;
  if (m.Has(key)) {
    if (!m.GetInt(key, &v)) {
      *error = Format("%s: option '%s' is not an integer", op, key);
      return false;
    }
  } else if (required) {
    *error = Format("%s: required option '%s' is missing", op, key);
    return false;
  }
  if (v < lo || v > hi) {
    *error = Format("%s: option '%s' = %lld is out of range [%lld, %lld]", op, key,
                    static_cast<long long>(v), static_cast<long long>(lo), static_cast<long long>(hi));
    return false;
  }
  *out = static_cast<int>(v);
  return true;
}

// TFLite's padding arithmetic (SAME: out = ceil(in / stride), pad split with
// the extra pixel at the end; VALID: no padding).
inline bool OutputSize(int in, int filter, int stride, int dilation, bool same, int* out, int* pad_before) {
  const int effective = (filter - 1) * dilation + 1;
  if (same) {
    *out = (in + stride - 1) / stride;
    const int total = std::max((*out - 1) * stride + effective - in, 0);
    *pad_before = total / 2;
  } else {
    *out = in >= effective ? (in - effective + stride) / stride : 0;
    *pad_before = 0;
  }
  return *out > 0;
}

}  // namespace tfc

#endif  // TFCOMPRESS_KERNELS_OP_UTIL_H_
