// Epilogue checks and execution, and the vectorised row helpers.
#include "epilogue.h"

#include <math.h>
#include <string.h>

#include <algorithm>
#include <limits>

#include "op_util.h"

// Each helper is compiled three times (AVX-512, AVX2, baseline x86-64) and the loader picks
// the best for the CPU (GCC/clang function multi-versioning). The loops are plain element-
// wise IEEE operations, identical in every version.
#if defined(__x86_64__) && defined(__ELF__) && (defined(__GNUC__) || defined(__clang__)) && \
    !defined(__SANITIZE_ADDRESS__)
#define TFC_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define TFC_CLONES
#endif

namespace tfc {

TFC_CLONES void RowAdd(float* y, const float* b, int n) {
  for (int i = 0; i < n; ++i) y[i] = y[i] + b[i];
}
TFC_CLONES void RowSub(float* y, const float* b, int n) {
  for (int i = 0; i < n; ++i) y[i] = y[i] - b[i];
}
TFC_CLONES void RowRSub(float* y, const float* b, int n) {
  for (int i = 0; i < n; ++i) y[i] = b[i] - y[i];
}
TFC_CLONES void RowMul(float* y, const float* b, int n) {
  for (int i = 0; i < n; ++i) y[i] = y[i] * b[i];
}
TFC_CLONES void RowAddScalar(float* y, float b, int n) {
  for (int i = 0; i < n; ++i) y[i] = y[i] + b;
}
TFC_CLONES void RowSubScalar(float* y, float b, int n) {
  for (int i = 0; i < n; ++i) y[i] = y[i] - b;
}
TFC_CLONES void RowRSubScalar(float* y, float b, int n) {
  for (int i = 0; i < n; ++i) y[i] = b - y[i];
}
TFC_CLONES void RowMulScalar(float* y, float b, int n) {
  for (int i = 0; i < n; ++i) y[i] = y[i] * b;
}
TFC_CLONES void RowPrelu(float* y, const float* alpha, int n) {
  for (int i = 0; i < n; ++i) y[i] = y[i] >= 0.0f ? y[i] : y[i] * alpha[i];
}
TFC_CLONES void RowPreluScalar(float* y, float alpha, int n) {
  for (int i = 0; i < n; ++i) y[i] = y[i] >= 0.0f ? y[i] : y[i] * alpha;
}
TFC_CLONES void RowClamp(float* y, float lo, float hi, int n) {
  for (int i = 0; i < n; ++i) y[i] = std::min(std::max(y[i], lo), hi);
}
TFC_CLONES void RowMax(float* y, const float* b, int n) {
  for (int i = 0; i < n; ++i) y[i] = std::max(y[i], b[i]);
}
TFC_CLONES void RowCopy(float* y, const float* b, int n) {
  for (int i = 0; i < n; ++i) y[i] = b[i];
}
void RowLogistic(float* y, int n) {
  // 1 / (1 + exp(-x)), saturating like TFLite's reference for large |x|
  for (int i = 0; i < n; ++i) {
    const float x = y[i];
    y[i] = x > 16.619047164916992188f ? 1.0f
           : x < -9.0f               ? expf(x)
                                     : 1.0f / (1.0f + expf(-x));
  }
}
TFC_CLONES void PoolWindow(const float* src, long long row_stride, int y0, int y1, int x0,
                           int x1, int c, bool max, float* y) {
  const float* first = src + y0 * row_stride + static_cast<long long>(x0) * c;
  for (int i = 0; i < c; ++i) y[i] = first[i];
  for (int iy = y0; iy < y1; ++iy)
    for (int ix = iy == y0 ? x0 + 1 : x0; ix < x1; ++ix) {
      const float* __restrict p = src + iy * row_stride + static_cast<long long>(ix) * c;
      if (max) {
        for (int i = 0; i < c; ++i) y[i] = p[i] > y[i] ? p[i] : y[i];  // std::max(y, p)
      } else {
        for (int i = 0; i < c; ++i) y[i] = y[i] + p[i];
      }
    }
}

void Epilogue::AddClamp(int activation, int node) {
  float lo, hi;
  switch (activation) {
    case kTfcActRelu: lo = 0.0f, hi = std::numeric_limits<float>::infinity(); break;
    case kTfcActReluN1To1: lo = -1.0f, hi = 1.0f; break;
    case kTfcActRelu6: lo = 0.0f, hi = 6.0f; break;
    default: return;
  }
  Action a;
  a.kind = kActStep, a.step = kStepClamp, a.lo = lo, a.hi = hi, a.node = node;
  actions.push_back(a);
}

void Epilogue::Tensors(std::vector<int>* read, std::vector<int>* written) const {
  for (const Action& a : actions) {
    if (a.tensor < 0) continue;
    (a.kind == kActStep ? read : written)->push_back(a.tensor);
  }
}

bool Epilogue::Prepare(TfcContext* context, const std::vector<int>& shape, std::string* error) {
  if (shape.empty()) {
    *error = "fused op: the result has no channel dimension";
    return false;
  }
  channels = shape.back();
  rows = NumElements(shape) / std::max(channels, 1);
  rows_per_batch = shape.size() >= 2 ? rows / std::max(shape[0], 1) : rows;
  const int words = Bitpacked(channels);
  std::vector<int> packed_shape = shape;
  packed_shape.back() = words;
  for (Action& a : actions) {
    if (a.tensor < 0) continue;
    TfcTensor* t = TensorAt(context, a.tensor);
    std::vector<int> d = Dims(t);
    if (a.kind == kActWrite || a.kind == kActPack) {
      const int type = a.kind == kActWrite ? kTfcFloat32 : kTfcInt32;
      if (t->type != type) {
        *error = Format("fused op: tensor %d must be %s, got %s", a.tensor, TypeName(type),
                        TypeName(t->type));
        return false;
      }
      if (!EnsureShape(context, t, a.kind == kActWrite ? shape : packed_shape, error))
        return false;
      continue;
    }
    if (t->type != kTfcFloat32) {
      *error = Format("fused op: operand tensor %d must be float32, got %s", a.tensor,
                      TypeName(t->type));
      return false;
    }
    const long long n = NumElements(d);
    bool leading_ones = true;
    for (size_t i = 0; i + 1 < d.size(); ++i) leading_ones &= d[i] == 1;
    if (d == shape) {
      a.operand = kOperandFull;
    } else if (n == 1) {
      a.operand = kOperandScalar;
    } else if (n == channels && leading_ones && !d.empty()) {
      a.operand = kOperandChannel;
    } else if (d.size() == shape.size() && d.size() >= 2 && d[0] == shape[0] &&
               d.back() == channels && n == static_cast<long long>(shape[0]) * channels) {
      a.operand = kOperandBatch;
    } else {
      *error = "fused op: operand " + DimsStr(d) + " does not broadcast to " + DimsStr(shape);
      return false;
    }
  }
  return true;
}

void BoundEpilogue::Run(float* y, long long row0, int rows) const {
  const int n = run_.channels;
  const long long total = static_cast<long long>(rows) * n;
  for (const EpAction& a : acts_) {
    if (a.kind == kActWrite) {
      if (a.dst_stride == n) {
        memcpy(static_cast<float*>(a.dst) + row0 * n, y, sizeof(float) * total);
      } else {
        for (int r = 0; r < rows; ++r)
          memcpy(static_cast<float*>(a.dst) + (row0 + r) * a.dst_stride, y + r * n,
                 sizeof(float) * n);
      }
      continue;
    }
    if (a.kind == kActPack) {
      int32_t* out = static_cast<int32_t*>(a.dst) + row0 * run_.words;
      for (int r = 0; r < rows; ++r) kernels_->pack_f32(y + r * n, n, out + r * run_.words);
      continue;
    }
    if (a.step == kStepClamp) {
      RowClamp(y, a.lo, a.hi, static_cast<int>(total));
      continue;
    }
    if (a.step == kStepLogistic) {
      RowLogistic(y, static_cast<int>(total));
      continue;
    }
    if (a.operand == kOperandScalar || a.operand == kOperandFull) {
      const int len = static_cast<int>(total);
      const float* b = a.src + row0 * n;
      const float s = a.src[0];
      const bool scalar = a.operand == kOperandScalar;
      switch (a.step) {
        case kStepAdd: scalar ? RowAddScalar(y, s, len) : RowAdd(y, b, len); break;
        case kStepSub: scalar ? RowSubScalar(y, s, len) : RowSub(y, b, len); break;
        case kStepRSub: scalar ? RowRSubScalar(y, s, len) : RowRSub(y, b, len); break;
        case kStepMul: scalar ? RowMulScalar(y, s, len) : RowMul(y, b, len); break;
        case kStepPrelu: scalar ? RowPreluScalar(y, s, len) : RowPrelu(y, b, len); break;
        default: break;
      }
      continue;
    }
    for (int r = 0; r < rows; ++r) {  // one operand row per channel vector / batch item
      float* yr = y + static_cast<long long>(r) * n;
      const float* b = a.operand == kOperandBatch
                           ? a.src + ((row0 + r) / run_.rows_per_batch) * n
                           : a.src;
      switch (a.step) {
        case kStepAdd: RowAdd(yr, b, n); break;
        case kStepSub: RowSub(yr, b, n); break;
        case kStepRSub: RowRSub(yr, b, n); break;
        case kStepMul: RowMul(yr, b, n); break;
        case kStepPrelu: RowPrelu(yr, b, n); break;
        default: break;
      }
    }
  }
}

float DotPortable(const float* a, const float* b, int n) {
  float s = 0.0f;
  for (int i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

}  // namespace tfc
