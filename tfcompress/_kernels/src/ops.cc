// LceQuantize, LceDequantize and LceBMaxPool2d, and the op factory.
#include "ops.h"

#include <math.h>

#include <cmath>

#include "op_util.h"

namespace tfc {

std::unique_ptr<Op> MakeBconv2d(const uint8_t* options, size_t size);  // bconv2d.cc

namespace {

// ------------------------------------------------------------------ LceQuantize
class QuantizeOp : public Op {
 public:
  Signature signature() const override { return {"LceQuantize", 1, 1, 0, 1}; }

  bool Prepare(TfcContext* context, std::string* error) override {
    const TfcTensor* in = Input(context, 0);
    TfcTensor* out = Output(context, 0);
    if (in->type != kTfcFloat32 && in->type != kTfcInt8 && in->type != kTfcBool) {
      *error = Format("LceQuantize: input must be float32, int8 or bool, got %s",
                      TypeName(in->type));
      return false;
    }
    if (out->type != kTfcInt32) {
      *error = Format("LceQuantize: output must be int32 (bitpacked), got %s", TypeName(out->type));
      return false;
    }
    std::vector<int> d = Dims(in);
    if (!CheckShape(d, -1, "LceQuantize", "input", error)) return false;
    channels_ = d.back();
    d.back() = Bitpacked(channels_);
    pixels_ = NumElements(d) / d.back();
    return EnsureShape(context, out, d, error);
  }

  bool Eval(TfcContext* context, std::string*) override {
    const TfcTensor* in = Input(context, 0);
    int32_t* out = static_cast<int32_t*>(Data(context, outputs[0]));
    const void* in_data = Data(context, inputs[0]);
    const int words = Bitpacked(channels_);
    const KernelTable* k = runtime->kernels;
    if (in->type == kTfcFloat32) {
      const float* x = static_cast<const float*>(in_data);
      for (long long p = 0; p < pixels_; ++p) k->pack_f32(x + p * channels_, channels_, out + p * words);
    } else if (in->type == kTfcInt8) {
      const int8_t* x = static_cast<const int8_t*>(in_data);
      const int32_t zp = in->params.zero_point;
      for (long long p = 0; p < pixels_; ++p) k->pack_i8(x + p * channels_, channels_, zp, out + p * words);
    } else {
      // bool: false -> bit 1 (-1), true -> bit 0 (+1), as LCE (any non-zero byte is true)
      const uint8_t* x = static_cast<const uint8_t*>(in_data);
      for (long long p = 0; p < pixels_; ++p) {
        const uint8_t* row = x + p * channels_;
        for (int w = 0; w < words; ++w) {
          uint32_t bits = 0;
          const int end = std::min(32, channels_ - 32 * w);
          for (int i = 0; i < end; ++i) bits |= static_cast<uint32_t>(row[32 * w + i] == 0) << i;
          out[p * words + w] = static_cast<int32_t>(bits);
        }
      }
    }
    return true;
  }

 private:
  int channels_ = 0;
  long long pixels_ = 0;
};

// ---------------------------------------------------------------- LceDequantize
class DequantizeOp : public Op {
 public:
  Signature signature() const override { return {"LceDequantize", 1, 1, 0, 1}; }

  bool Prepare(TfcContext* context, std::string* error) override {
    const TfcTensor* in = Input(context, 0);
    const TfcTensor* out = Output(context, 0);
    if (in->type != kTfcInt32) {
      *error = Format("LceDequantize: input must be int32 (bitpacked), got %s", TypeName(in->type));
      return false;
    }
    if (out->type != kTfcFloat32 && out->type != kTfcInt8 && out->type != kTfcBool) {
      *error = Format("LceDequantize: output must be float32, int8 or bool, got %s",
                      TypeName(out->type));
      return false;
    }
    const std::vector<int> di = Dims(in), dout = Dims(out);
    if (!CheckShape(di, -1, "LceDequantize", "input", error) ||
        !CheckShape(dout, -1, "LceDequantize", "output", error))
      return false;
    if ( di.size() != dout.size() || Bitpacked(dout.back()) != di.back() ||
        !std::equal(di.begin(), di.end() - 1, dout.begin())) {
      *error = "LceDequantize: output shape " + DimsStr(dout) + " does not match bitpacked input " +
               DimsStr(di);
      return false;
    }
    channels_ = dout.back();
    pixels_ = NumElements(dout) / channels_;
    if (out->type == kTfcInt8) {
      const float scale = out->params.scale;
      if (!(scale > 0.0f) || !std::isfinite(scale)) {
        *error = "LceDequantize: int8 output has no valid quantization scale";
        return false;
      }
      const int zp = out->params.zero_point;
      auto q = [&](float v) {
        const float scaled = std::min(1e6f, std::max(-1e6f, v / scale));  // lroundf's range
        const long r = lroundf(scaled) + zp;
        return static_cast<int8_t>(std::min(127L, std::max(-128L, r)));
      };
      plus_ = q(1.0f);
      minus_ = q(-1.0f);
    }
    return true;
  }

  bool Eval(TfcContext* context, std::string*) override {
    const int32_t* in = static_cast<const int32_t*>(Data(context, inputs[0]));
    void* out_data = Data(context, outputs[0]);
    TfcTensor* out = Output(context, 0);
    const int words = Bitpacked(channels_);
    if (out->type == kTfcFloat32) {
      Unpack(in, words, static_cast<float*>(out_data), -1.0f, 1.0f);
    } else if (out->type == kTfcBool) {
      Unpack(in, words, static_cast<uint8_t*>(out_data), uint8_t{0}, uint8_t{1});
    } else {
      Unpack(in, words, static_cast<int8_t*>(out_data), minus_, plus_);
    }
    return true;
  }

 private:
  template <typename T>
  void Unpack(const int32_t* in, int words, T* y, T minus, T plus) const {
    for (long long p = 0; p < pixels_; ++p) {
      const int32_t* w = in + p * words;
      T* out = y + p * channels_;
      for (int c0 = 0; c0 < channels_; c0 += 32) {
        const uint32_t bits = static_cast<uint32_t>(w[c0 / 32]);
        const int n = channels_ - c0 < 32 ? channels_ - c0 : 32;
        for (int i = 0; i < n; ++i) out[c0 + i] = ((bits >> i) & 1) ? minus : plus;  // a select
      }
    }
  }

  int channels_ = 0;
  long long pixels_ = 0;
  int8_t plus_ = 0, minus_ = 0;
};

// ---------------------------------------------------------------- LceBMaxPool2d
class BMaxPoolOp : public Op {
 public:
  BMaxPoolOp(const uint8_t* options, size_t size) {
    FlexMap m(options, size);
    if (!m.ok()) {
      init_error_ = "LceBMaxPool2d: custom options are not a FlexBuffers map";
      return;
    }
    const char* op = "LceBMaxPool2d";
    (void)(ReadIntOption(m, "filter_height", true, 1, 1, 4096, &fh_, op, &init_error_) &&
           ReadIntOption(m, "filter_width", true, 1, 1, 4096, &fw_, op, &init_error_) &&
           ReadIntOption(m, "stride_height", true, 1, 1, 4096, &sh_, op, &init_error_) &&
           ReadIntOption(m, "stride_width", true, 1, 1, 4096, &sw_, op, &init_error_) &&
           ReadIntOption(m, "padding", true, 0, 0, 1, &padding_, op, &init_error_));
  }

  Signature signature() const override { return {"LceBMaxPool2d", 1, 1, 0, 1}; }

  bool Prepare(TfcContext* context, std::string* error) override {
    const TfcTensor* in = Input(context, 0);
    TfcTensor* out = Output(context, 0);
    const std::vector<int> d = Dims(in);
    if (in->type != kTfcInt32 || out->type != kTfcInt32 || d.size() != 4) {
      *error = "LceBMaxPool2d: input and output must be 4-D int32 (bitpacked); input is " +
               std::string(TypeName(in->type)) + " " + DimsStr(d);
      return false;
    }
    if (!CheckShape(d, 4, "LceBMaxPool2d", "input", error)) return false;
    n_ = d[0], h_ = d[1], w_ = d[2], words_ = d[3];
    const bool same = padding_ == 0;
    if (!OutputSize(h_, fh_, sh_, 1, same, &oh_, &pt_) || !OutputSize(w_, fw_, sw_, 1, same, &ow_, &pl_)) {
      *error = Format("LceBMaxPool2d: %dx%d filter does not fit the %dx%d input", fh_, fw_, h_, w_);
      return false;
    }
    return EnsureShape(context, out, {n_, oh_, ow_, words_}, error);
  }

  bool Eval(TfcContext* context, std::string*) override {
    const uint32_t* x = static_cast<const uint32_t*>(Data(context, inputs[0]));
    uint32_t* y = static_cast<uint32_t*>(Data(context, outputs[0]));
    for (int b = 0; b < n_; ++b)
      for (int oy = 0; oy < oh_; ++oy) {
        const int y0 = std::max(oy * sh_ - pt_, 0), y1 = std::min(oy * sh_ - pt_ + fh_, h_);
        for (int ox = 0; ox < ow_; ++ox) {
          const int x0 = std::max(ox * sw_ - pl_, 0), x1 = std::min(ox * sw_ - pl_ + fw_, w_);
          uint32_t* o = y + ((static_cast<size_t>(b) * oh_ + oy) * ow_ + ox) * words_;
          for (int c = 0; c < words_; ++c) o[c] = ~0u;
          for (int iy = y0; iy < y1; ++iy)
            for (int ix = x0; ix < x1; ++ix) {
              const uint32_t* p = x + ((static_cast<size_t>(b) * h_ + iy) * w_ + ix) * words_;
              for (int c = 0; c < words_; ++c) o[c] &= p[c];  // max of +-1 = AND of sign bits
            }
        }
      }
    return true;
  }

 private:
  int fh_ = 1, fw_ = 1, sh_ = 1, sw_ = 1, padding_ = 0;
  int n_ = 0, h_ = 0, w_ = 0, words_ = 0, oh_ = 0, ow_ = 0, pt_ = 0, pl_ = 0;
};

}  // namespace

bool Op::CheckIo(TfcContext* context, std::string* error) const {
  const Signature sig = signature();
  const int n_in = static_cast<int>(inputs.size()), n_out = static_cast<int>(outputs.size());
  if (n_in < sig.min_inputs || n_in > sig.max_inputs || n_out != sig.num_outputs) {
    *error = Format("%s: expected %d..%d inputs and %d output(s), got %d and %d", sig.name,
                    sig.min_inputs, sig.max_inputs, sig.num_outputs, n_in, n_out);
    return false;
  }
  const long long size = static_cast<long long>(context->tensors_size);
  for (int i = 0; i < n_in; ++i) {
    const int idx = inputs[i];
    if (idx == kTfcOptionalTensor && ((sig.optional >> i) & 1)) continue;
    if (idx < 0 || idx >= size) {
      *error = Format("%s: input %d has tensor index %d (valid: 0..%lld%s)", sig.name, i, idx,
                      size - 1, ((sig.optional >> i) & 1) ? " or -1" : "");
      return false;
    }
  }
  for (int i = 0; i < n_out; ++i) {
    if (outputs[i] < 0 || outputs[i] >= size) {
      *error = Format("%s: output %d has tensor index %d (valid: 0..%lld)", sig.name, i,
                      outputs[i], size - 1);
      return false;
    }
  }
  std::vector<int> read, written;
  epilogue.Tensors(&read, &written);
  for (int idx : read)
    if (idx < 0 || idx >= size) return *error = Format("%s: bad fused tensor %d", sig.name, idx), false;
  for (int idx : written)
    if (idx < 0 || idx >= size) return *error = Format("%s: bad fused tensor %d", sig.name, idx), false;
  written.insert(written.end(), outputs.begin(), outputs.end());
  read.insert(read.end(), inputs.begin(), inputs.end());
  for (int out : written)
    for (int in : read)
      if (out == in) {
        *error = Format("%s: tensor %d is both an input and the output", sig.name, out);
        return false;
      }
  for (int idx : read) {
    if (idx < 0) continue;
    const TfcTensor* t = TensorAt(context, idx);
    if (t == nullptr || t->dims == nullptr || t->dims->size < 0 || t->dims->size > 16) {
      *error = Format("%s: tensor %d has no valid shape", sig.name, idx);
      return false;
    }
  }
  for (int idx : written) {
    const TfcTensor* t = TensorAt(context, idx);
    if (t == nullptr || t->dims == nullptr || t->dims->size < 0 || t->dims->size > 16) {
      *error = Format("%s: tensor %d has no valid shape", sig.name, idx);
      return false;
    }
  }
  return true;
}

bool Op::PrepareEpilogue(TfcContext* context, const std::vector<int>& shape, std::string* error) {
  if (epilogue.empty()) epilogue.AddWrite(ResultTensor());
  return epilogue.Prepare(context, shape, error);
}

namespace {
size_t BytesOf(const TfcTensor* t) {
  const long long n = NumElements(Dims(t));
  return n > 0 ? static_cast<size_t>(n) * TypeSize(t->type) : 0;
}
}  // namespace

void Op::RecordSizes(TfcContext* context) {
  // Row ops write only through their epilogue; other ops write their outputs.
  std::vector<int> read, written;
  epilogue.Tensors(&read, &written);
  checked_.clear();
  for (int idx : inputs)
    if (idx >= 0) checked_.push_back(idx);
  checked_.insert(checked_.end(), read.begin(), read.end());
  checked_.insert(checked_.end(), written.begin(), written.end());
  if (!CanCarryEpilogue()) checked_.insert(checked_.end(), outputs.begin(), outputs.end());
  std::sort(checked_.begin(), checked_.end());
  checked_.erase(std::unique(checked_.begin(), checked_.end()), checked_.end());
  checked_bytes_.clear();
  for (int idx : checked_) checked_bytes_.push_back(BytesOf(TensorAt(context, idx)));
}

bool Op::CheckData(TfcContext* context, std::string* error) const {
  for (size_t i = 0; i < checked_.size(); ++i) {
    const int idx = checked_[i];
    const void* data = Data(context, idx);
    const size_t bytes = graph != nullptr ? graph->Bytes(context, idx) : TensorAt(context, idx)->bytes;
    if (data == nullptr || bytes < checked_bytes_[i]) {
      *error = Format("%s: tensor %d has %s (need %zu bytes)", signature().name, idx,
                      data == nullptr ? "no data" : "too few bytes", checked_bytes_[i]);
      return false;
    }
  }
  return true;
}

int Runtime::Threads(const TfcContext* context) {
  ThreadPool* pool = Pool(context);
  return pool ? pool->size() : 1;
}

int Runtime::Parallel(const TfcContext* context, int n, ThreadPool::TaskFn fn, void* ctx) {
  ThreadPool* pool = Pool(context);
  if (pool == nullptr || n <= 1) {
    for (int t = 0; t < n; ++t) fn(ctx, t, 0);
    return 1;
  }
  pool->Run(n, fn, ctx);
  return pool->size();
}

ThreadPool* Runtime::Pool(const TfcContext* context) {
  int want = num_threads > 0 ? num_threads : (context ? context->recommended_num_threads : 1);
  if (want < 1) want = 1;
  if (want == 1) return nullptr;
  if (!pool || pool->size() != want) pool.reset(new ThreadPool(want));
  return pool.get();
}

OpKind OpKindFromName(const char* name) {
  if (name == nullptr) return kOpUnknown;
  if (strcmp(name, "LceQuantize") == 0) return kOpQuantize;
  if (strcmp(name, "LceDequantize") == 0) return kOpDequantize;
  if (strcmp(name, "LceBconv2d") == 0) return kOpBconv2d;
  if (strcmp(name, "LceBMaxPool2d") == 0) return kOpBMaxPool2d;
  return kOpUnknown;
}

OpKind OpKindFromBuiltin(int code) {
  switch (code) {
    case kTfcBuiltinAdd: return kOpAdd;
    case kTfcBuiltinSub: return kOpSub;
    case kTfcBuiltinMul: return kOpMul;
    case kTfcBuiltinPrelu: return kOpPrelu;
    case kTfcBuiltinRelu: return kOpRelu;
    case kTfcBuiltinRelu6: return kOpRelu6;
    case kTfcBuiltinReluN1To1: return kOpReluN1To1;
    case kTfcBuiltinLogistic: return kOpLogistic;
    case kTfcBuiltinConcatenation: return kOpConcat;
    case kTfcBuiltinMaxPool2d: return kOpMaxPool;
    case kTfcBuiltinAveragePool2d: return kOpAvgPool;
    case kTfcBuiltinReshape: return kOpReshape;
    case kTfcBuiltinFullyConnected: return kOpFullyConnected;
    default: return kOpUnknown;
  }
}

const char* OpKindName(OpKind kind) {
  switch (kind) {
    case kOpQuantize: return "LceQuantize";
    case kOpDequantize: return "LceDequantize";
    case kOpBconv2d: return "LceBconv2d";
    case kOpBMaxPool2d: return "LceBMaxPool2d";
    case kOpAdd: return "ADD";
    case kOpSub: return "SUB";
    case kOpMul: return "MUL";
    case kOpPrelu: return "PRELU";
    case kOpRelu: return "RELU";
    case kOpRelu6: return "RELU6";
    case kOpReluN1To1: return "RELU_N1_TO_1";
    case kOpLogistic: return "LOGISTIC";
    case kOpConcat: return "CONCATENATION";
    case kOpMaxPool: return "MAX_POOL_2D";
    case kOpAvgPool: return "AVERAGE_POOL_2D";
    case kOpReshape: return "RESHAPE";
    case kOpFullyConnected: return "FULLY_CONNECTED";
    default: return "unknown";
  }
}

bool IsElementwise(OpKind kind) {
  switch (kind) {
    case kOpAdd: case kOpSub: case kOpMul: case kOpPrelu: case kOpRelu: case kOpRelu6:
    case kOpReluN1To1: case kOpLogistic: return true;
    default: return false;
  }
}

// float_ops.cc
std::unique_ptr<Op> MakeChain(OpKind kind);
std::unique_ptr<Op> MakeConcat();
std::unique_ptr<Op> MakePool(bool max);
std::unique_ptr<Op> MakeReshape();
std::unique_ptr<Op> MakeFullyConnected();

std::unique_ptr<Op> CreateOp(OpKind kind, const uint8_t* options, size_t size) {
  if (IsElementwise(kind)) return MakeChain(kind);
  switch (kind) {
    case kOpQuantize: return std::unique_ptr<Op>(new QuantizeOp());
    case kOpDequantize: return std::unique_ptr<Op>(new DequantizeOp());
    case kOpBconv2d: return MakeBconv2d(options, size);
    case kOpBMaxPool2d: return std::unique_ptr<Op>(new BMaxPoolOp(options, size));
    case kOpConcat: return MakeConcat();
    case kOpMaxPool: return MakePool(true);
    case kOpAvgPool: return MakePool(false);
    case kOpReshape: return MakeReshape();
    case kOpFullyConnected: return MakeFullyConnected();
    default: return nullptr;
  }
}

}  // namespace tfc
