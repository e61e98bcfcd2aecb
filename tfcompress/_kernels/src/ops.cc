// LceQuantize, LceDequantize and LceBMaxPool2d, and the op factory.
#include "ops.h"

#include <math.h>

#include "op_util.h"

namespace tfc {

std::unique_ptr<Op> MakeBconv2d(const uint8_t* options, size_t size);  // bconv2d.cc

namespace {

// ------------------------------------------------------------------ LceQuantize
class QuantizeOp : public Op {
 public:
  bool Prepare(TfcContext* context, std::string* error) override {
    if (inputs.size() != 1 || outputs.size() != 1) {
      *error = "LceQuantize: expected 1 input and 1 output";
      return false;
    }
    const TfcTensor* in = GetTensor(context, inputs[0]);
    TfcTensor* out = GetTensor(context, outputs[0]);
    if (in->type != kTfcFloat32 && in->type != kTfcInt8) {
      *error = Format("LceQuantize: input must be float32 or int8, got %s", TypeName(in->type));
      return false;
    }
    if (out->type != kTfcInt32) {
      *error = Format("LceQuantize: output must be int32 (bitpacked), got %s", TypeName(out->type));
      return false;
    }
    std::vector<int> d = Dims(in);
    if (d.empty() || d.back() < 1) {
      *error = "LceQuantize: input needs a channel dimension, got " + DimsStr(d);
      return false;
    }
    channels_ = d.back();
    d.back() = Bitpacked(channels_);
    pixels_ = NumElements(d) / d.back();
    return EnsureShape(context, out, d, error);
  }

  bool Eval(TfcContext* context, std::string*) override {
    const TfcTensor* in = GetTensor(context, inputs[0]);
    int32_t* out = static_cast<int32_t*>(GetTensor(context, outputs[0])->data);
    const int words = Bitpacked(channels_);
    const KernelTable* k = runtime->kernels;
    if (in->type == kTfcFloat32) {
      const float* x = static_cast<const float*>(in->data);
      for (long long p = 0; p < pixels_; ++p) k->pack_f32(x + p * channels_, channels_, out + p * words);
    } else {
      const int8_t* x = static_cast<const int8_t*>(in->data);
      const int32_t zp = in->params.zero_point;
      for (long long p = 0; p < pixels_; ++p) k->pack_i8(x + p * channels_, channels_, zp, out + p * words);
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
  bool Prepare(TfcContext* context, std::string* error) override {
    if (inputs.size() != 1 || outputs.size() != 1) {
      *error = "LceDequantize: expected 1 input and 1 output";
      return false;
    }
    const TfcTensor* in = GetTensor(context, inputs[0]);
    const TfcTensor* out = GetTensor(context, outputs[0]);
    if (in->type != kTfcInt32) {
      *error = Format("LceDequantize: input must be int32 (bitpacked), got %s", TypeName(in->type));
      return false;
    }
    if (out->type != kTfcFloat32 && out->type != kTfcInt8) {
      *error = Format("LceDequantize: output must be float32 or int8, got %s", TypeName(out->type));
      return false;
    }
    const std::vector<int> di = Dims(in), dout = Dims(out);
    if (di.empty() || di.size() != dout.size() || Bitpacked(dout.back()) != di.back() ||
        !std::equal(di.begin(), di.end() - 1, dout.begin())) {
      *error = "LceDequantize: output shape " + DimsStr(dout) + " does not match bitpacked input " +
               DimsStr(di);
      return false;
    }
    channels_ = dout.back();
    pixels_ = NumElements(dout) / std::max(channels_, 1);
    if (out->type == kTfcInt8) {
      const float scale = out->params.scale;
      if (!(scale > 0.0f)) {
        *error = "LceDequantize: int8 output has no valid quantization scale";
        return false;
      }
      const int zp = out->params.zero_point;
      auto q = [&](float v) {
        const long r = lroundf(v / scale) + zp;
        return static_cast<int8_t>(std::min(127L, std::max(-128L, r)));
      };
      plus_ = q(1.0f);
      minus_ = q(-1.0f);
    }
    return true;
  }

  bool Eval(TfcContext* context, std::string*) override {
    const int32_t* in = static_cast<const int32_t*>(GetTensor(context, inputs[0])->data);
    TfcTensor* out = GetTensor(context, outputs[0]);
    const int words = Bitpacked(channels_);
    if (out->type == kTfcFloat32) {
      Unpack(in, words, static_cast<float*>(out->data), -1.0f, 1.0f);
    } else {
      Unpack(in, words, static_cast<int8_t*>(out->data), minus_, plus_);
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
        const int delta = static_cast<int>(minus) - static_cast<int>(plus);  // branch-free: bits are random
        for (int i = 0; i < n; ++i)
          out[c0 + i] = static_cast<T>(plus + static_cast<T>(delta * static_cast<int>((bits >> i) & 1)));
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

  bool Prepare(TfcContext* context, std::string* error) override {
    if (inputs.size() != 1 || outputs.size() != 1) {
      *error = "LceBMaxPool2d: expected 1 input and 1 output";
      return false;
    }
    const TfcTensor* in = GetTensor(context, inputs[0]);
    TfcTensor* out = GetTensor(context, outputs[0]);
    const std::vector<int> d = Dims(in);
    if (in->type != kTfcInt32 || out->type != kTfcInt32 || d.size() != 4) {
      *error = "LceBMaxPool2d: input and output must be 4-D int32 (bitpacked); input is " +
               std::string(TypeName(in->type)) + " " + DimsStr(d);
      return false;
    }
    n_ = d[0], h_ = d[1], w_ = d[2], words_ = d[3];
    const bool same = padding_ == 0;
    if (!OutputSize(h_, fh_, sh_, 1, same, &oh_, &pt_) || !OutputSize(w_, fw_, sw_, 1, same, &ow_, &pl_)) {
      *error = Format("LceBMaxPool2d: %dx%d filter does not fit the %dx%d input", fh_, fw_, h_, w_);
      return false;
    }
    return EnsureShape(context, out, {n_, oh_, ow_, words_}, error);
  }

  bool Eval(TfcContext* context, std::string*) override {
    const uint32_t* x = static_cast<const uint32_t*>(GetTensor(context, inputs[0])->data);
    uint32_t* y = static_cast<uint32_t*>(GetTensor(context, outputs[0])->data);
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

const char* OpKindName(OpKind kind) {
  switch (kind) {
    case kOpQuantize: return "LceQuantize";
    case kOpDequantize: return "LceDequantize";
    case kOpBconv2d: return "LceBconv2d";
    case kOpBMaxPool2d: return "LceBMaxPool2d";
    default: return "unknown";
  }
}

std::unique_ptr<Op> CreateOp(OpKind kind, const uint8_t* options, size_t size) {
  switch (kind) {
    case kOpQuantize: return std::unique_ptr<Op>(new QuantizeOp());
    case kOpDequantize: return std::unique_ptr<Op>(new DequantizeOp());
    case kOpBconv2d: return MakeBconv2d(options, size);
    case kOpBMaxPool2d: return std::unique_ptr<Op>(new BMaxPoolOp(options, size));
    default: return nullptr;
  }
}

}  // namespace tfc
