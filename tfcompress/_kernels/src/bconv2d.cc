// LceBconv2d: im2col into 64-bit words (or, for whole-word taps, the direct bit GEMM on a
// zero-bordered copy of the input), bit GEMM (kernels.h), output transform (float with
// post-activation multiplier/bias and the zero-padding correction, int8, or bitpacked with
// thresholds), over chunks of output pixels on the thread pool.
#include <limits.h>
#include <math.h>

#include <cmath>

#include "op_util.h"
#include "ops.h"

namespace tfc {
namespace {

constexpr int kChunkPixels = 32;  // output pixels per task
constexpr int kMaxChunk = 4 * kChunkPixels;  // ... at most (a whole output row for the direct GEMM)

// ------------------------------------------------------------------- LceBconv2d
class Bconv2dOp : public Op {
 public:
  Signature signature() const override {
    // input, filter, post_activation_multiplier, post_activation_bias, output_threshold:
    // the last three are optional (-1) and which are needed depends on the output type.
    return {"LceBconv2d", 2, 5, 0x1C, 1};
  }

  Bconv2dOp(const uint8_t* options, size_t size) {
    FlexMap m(options, size);
    if (!m.ok()) {
      init_error_ = "LceBconv2d: custom options are not a FlexBuffers map";
      return;
    }
    const char* op = "LceBconv2d";
    (void)(ReadIntOption(m, "channels_in", true, 0, 1, 1 << 24, &channels_in_, op, &init_error_) &&
           ReadIntOption(m, "stride_height", true, 1, 1, 4096, &sh_, op, &init_error_) &&
           ReadIntOption(m, "stride_width", true, 1, 1, 4096, &sw_, op, &init_error_) &&
           ReadIntOption(m, "dilation_height_factor", true, 1, 1, 4096, &dh_, op, &init_error_) &&
           ReadIntOption(m, "dilation_width_factor", true, 1, 1, 4096, &dw_, op, &init_error_) &&
           ReadIntOption(m, "padding", true, 0, 0, 1, &padding_, op, &init_error_) &&
           ReadIntOption(m, "pad_values", true, 0, 0, 1, &pad_values_, op, &init_error_) &&
           ReadIntOption(m, "fused_activation_function", true, 0, 0, 3, &activation_, op,
                         &init_error_));
  }

  bool Prepare(TfcContext* context, std::string* error) override;
  bool Eval(TfcContext* context, std::string* error) override;
  bool CanCarryEpilogue() const override { return true; }  // float output only (checked)

 private:
  static void Task(void* self, int task, int thread) {
    static_cast<Bconv2dOp*>(self)->RunTask(task, thread);
  }
  struct Scratch;
  void RunTask(int task, int thread);
  void PackFilter(const uint32_t* filter);
  void Im2col(const uint32_t* in, int batch, int p0, int rows, int group, uint64_t* P) const;
  // Direct bit GEMM: the input copied into a zero-bordered buffer (PadInput), then the counts
  // for rows [r, r + n) of a chunk, all in output row oy from column ox on.
  void PadInput();
  void GemmDirect(Scratch& s, int batch, int oy, int ox, int r, int n) const;

  // options
  int channels_in_ = 0, sh_ = 1, sw_ = 1, dh_ = 1, dw_ = 1, padding_ = 0, pad_values_ = 0,
      activation_ = 0;
  // shapes
  int n_ = 0, h_ = 0, w_ = 0, words_in_ = 0, cout_ = 0, kh_ = 0, kw_ = 0, words_f_ = 0;
  int groups_ = 1, cin_g_ = 0, cout_g_ = 0, oh_ = 0, ow_ = 0, pt_ = 0, pl_ = 0;
  int w64_ = 0, k64_ = 0, nb_g_ = 0, ldc_ = 0;
  uint32_t last_word_mask_ = ~0u;
  int out_type_ = kTfcFloat32;
  bool filter_constant_ = false;
  // packed filter: [group][nb][k64][8]
  AlignedArray<uint64_t> packed_;
  // transform
  FloatTransform transform_{};
  std::vector<float> mul_, bias_;  // int8 output: scaled into the output's units
  const int32_t* thresholds_ = nullptr;
  // zero-padding correction: per output row / column a class; table per class pair
  std::vector<int> row_class_, col_class_, corr_index_;
  int num_col_classes_ = 1;
  std::vector<int32_t> corr_;
  // per-thread scratch
  struct Scratch {
    AlignedArray<uint64_t> patches;
    AlignedArray<int32_t> counts;
    std::vector<float> row;
    std::vector<const int32_t*> corr_rows;  // zero-padding correction per row of a chunk
    std::vector<const uint64_t*> window_rows;  // direct bgemm: one input row per filter row
  };
  // Direct bit GEMM (KernelTable::bgemm_direct, no im2col copy) when the taps are whole 64-bit
  // words, there is one group and no horizontal dilation: the input is first copied into
  // padded_, which has the zero words of the padding around it (bit 0 = +1, what im2col
  // writes for padding; zero padding is corrected afterwards in both paths), so every
  // output pixel's window is kh runs of kw * w64_ words.
  bool direct_ = false;
  int hp_ = 0, wp_ = 0;              // padded image size in pixels
  long long step_ = 0;               // u64 words from one output pixel's window to the next
  AlignedArray<uint64_t> padded_;
  std::vector<Scratch> scratch_;
  // per-Eval pointers
  const uint32_t* in_data_ = nullptr;
  void* out_data_ = nullptr;
  BoundEpilogue bound_;
  // The common epilogue [ADD same-shape tensor]? [clamp]? then store and/or pack, done
  // inside the output transform (KernelTable::out_fused_rows) instead of the generic epilogue.
  struct Fast {
    bool on = false;
    int residual = -1, write = -1, pack = -1;
    bool clamp = false;
    float lo = 0.0f, hi = 0.0f;
  } fast_;
  const float* fast_residual_ = nullptr;
  float* fast_out_ = nullptr;
  long long fast_out_stride_ = 0;  // floats per pixel of the written tensor (a view: wider)
  int32_t* fast_bits_ = nullptr;

  void MatchFastEpilogue() {
    fast_ = Fast();
    const std::vector<Action>& a = epilogue.actions;
    size_t i = 0;
    Fast f;
    if (i < a.size() && a[i].kind == kActStep && a[i].step == kStepAdd &&
        a[i].operand == kOperandFull)
      f.residual = a[i++].tensor;
    if (i < a.size() && a[i].kind == kActStep && a[i].step == kStepClamp)
      f.clamp = true, f.lo = a[i].lo, f.hi = a[i].hi, ++i;
    for (; i < a.size(); ++i) {
      if (a[i].kind == kActWrite && f.write < 0) f.write = a[i].tensor;
      else if (a[i].kind == kActPack && f.pack < 0) f.pack = a[i].tensor;
      else return;  // anything else: the generic epilogue
    }
    if (f.write < 0 && f.pack < 0) return;
    f.on = true;
    fast_ = f;
  }
  int chunks_per_image_ = 0;
  int chunk_ = 32;  // output pixels per task (fewer when the image is small, so every thread works)
};

bool Bconv2dOp::Prepare(TfcContext* context, std::string* error) {
  const TfcTensor* in = Input(context, 0);
  const TfcTensor* filter = Input(context, 1);
  TfcTensor* out = Output(context, 0);
  const std::vector<int> di = Dims(in), df = Dims(filter);
  if (in->type != kTfcInt32 || di.size() != 4) {
    *error = "LceBconv2d: input must be 4-D int32 (bitpacked), got " + std::string(TypeName(in->type)) +
             " " + DimsStr(di);
    return false;
  }
  if (filter->type != kTfcInt32 || df.size() != 4) {
    *error = "LceBconv2d: filter must be 4-D int32 (bitpacked OHWI), got " +
             std::string(TypeName(filter->type)) + " " + DimsStr(df);
    return false;
  }
  if (!CheckShape(di, 4, "LceBconv2d", "input", error) ||
      !CheckShape(df, 4, "LceBconv2d", "filter", error))
    return false;
  n_ = di[0], h_ = di[1], w_ = di[2], words_in_ = di[3];
  cout_ = df[0], kh_ = df[1], kw_ = df[2], words_f_ = df[3];
  if (kh_ > 4096 || kw_ > 4096) {
    *error = Format("LceBconv2d: filter %dx%d is larger than 4096", kh_, kw_);
    return false;
  }
  if (Bitpacked(channels_in_) != words_in_) {
    *error = Format("LceBconv2d: channels_in=%d does not match the bitpacked input depth %d",
                    channels_in_, words_in_);
    return false;
  }
  if (input_channels > 0 && input_channels != channels_in_) {
    *error = Format("LceBconv2d: channels_in=%d, but the op that writes the input packs %d "
                    "channels", channels_in_, input_channels);
    return false;
  }
  // Constant tensors must hold exactly what their shape says (LiteRT accepts larger
  // buffers; LCE's interpreter does not, and a mismatch means a corrupt file).
  for (size_t i = 1; i < inputs.size(); ++i) {
    const TfcTensor* t = Input(context, i);
    if (t != nullptr && IsConstant(t) &&
        t->bytes != static_cast<size_t>(NumElements(Dims(t))) * TypeSize(t->type)) {
      *error = Format("LceBconv2d: constant input %zu holds %zu bytes, but its shape %s needs "
                      "%lld", i, t->bytes, DimsStr(Dims(t)).c_str(),
                      NumElements(Dims(t)) * static_cast<long long>(TypeSize(t->type)));
      return false;
    }
  }
  if (words_in_ % words_f_ != 0) {
    *error = Format("LceBconv2d: filter depth %d words does not divide the input depth %d words",
                    words_f_, words_in_);
    return false;
  }
  groups_ = words_in_ / words_f_;
  if (groups_ > 1) {
    if (channels_in_ % (32 * groups_) != 0 || cout_ % groups_ != 0) {
      *error = Format("LceBconv2d: %d groups need channels_in (%d) divisible by 32*groups and "
                      "channels_out (%d) divisible by groups", groups_, channels_in_, cout_);
      return false;
    }
    cin_g_ = channels_in_ / groups_;
  } else {
    cin_g_ = channels_in_;
  }
  cout_g_ = cout_ / groups_;
  const bool same = padding_ == 0;
  if (!OutputSize(h_, kh_, sh_, dh_, same, &oh_, &pt_) ||
      !OutputSize(w_, kw_, sw_, dw_, same, &ow_, &pl_)) {
    *error = Format("LceBconv2d: the %dx%d filter (dilation %dx%d) does not fit the %dx%d input",
                    kh_, kw_, dh_, dw_, h_, w_);
    return false;
  }
  // Work sizes: one im2col row (kh*kw*ceil(words/2) u64) and the packed filter must fit.
  const long long k64 = static_cast<long long>(kh_) * kw_ * ((words_f_ + 1) / 2);
  if (k64 > (1LL << 24) || k64 * ((cout_g_ + 7) / 8) * 8 * groups_ > (1LL << 30) ||
      static_cast<long long>(n_) * oh_ * ow_ * cout_ > kMaxElements) {
    *error = Format("LceBconv2d: %dx%dx%d words x %d filters on a %dx%d input is too large",
                    kh_, kw_, words_f_, cout_, h_, w_);
    return false;
  }
  out_type_ = out->type;
  const TfcTensor* mul = Input(context, 2);    // absent (index -1) for bitpacked output
  const TfcTensor* bias = Input(context, 3);
  const TfcTensor* thr = Input(context, 4);    // absent for float/int8 output
  const bool padded = same && (pt_ > 0 || pl_ > 0 || (oh_ - 1) * sh_ + (kh_ - 1) * dh_ + 1 > h_ + pt_ ||
                               (ow_ - 1) * sw_ + (kw_ - 1) * dw_ + 1 > w_ + pl_);
  std::vector<int> out_shape = {n_, oh_, ow_, cout_};
  if (out_type_ == kTfcInt32) {
    if (thr == nullptr || thr->type != kTfcInt32 || Dims(thr) != std::vector<int>{cout_}) {
      *error = Format("LceBconv2d: bitpacked output needs 1-D int32 thresholds of length %d", cout_);
      return false;
    }
    if (IsConstant(thr) && thr->data == nullptr) {
      *error = "LceBconv2d: constant thresholds have no data";
      return false;
    }
    if (padded && pad_values_ == 0) {
      *error = "LceBconv2d: bitpacked output with zero padding (padding=SAME, pad_values=0) is not "
               "supported (LCE's converter never produces it)";
      return false;
    }
    out_shape[3] = Bitpacked(cout_);
  } else if (out_type_ == kTfcFloat32 || out_type_ == kTfcInt8) {
    if (mul == nullptr || bias == nullptr || mul->type != kTfcFloat32 || bias->type != kTfcFloat32 ||
        Dims(mul) != std::vector<int>{cout_} || Dims(bias) != std::vector<int>{cout_}) {
      *error = Format("LceBconv2d: %s output needs float32 post_activation_multiplier and "
                      "post_activation_bias, 1-D of length %d", TypeName(out_type_), cout_);
      return false;
    }
    if (mul->data == nullptr || bias->data == nullptr || !IsConstant(mul) || !IsConstant(bias)) {
      *error = "LceBconv2d: post_activation_multiplier and post_activation_bias must be "
               "constant tensors with data";
      return false;
    }
  } else {
    *error = Format("LceBconv2d: output must be float32, int8 or int32 (bitpacked), got %s",
                    TypeName(out_type_));
    return false;
  }
  if (!EnsureShape(context, out, out_shape, error)) return false;
  if (out_type_ == kTfcFloat32) {
    if (!PrepareEpilogue(context, out_shape, error)) return false;
    MatchFastEpilogue();
  } else if (!epilogue.empty()) {
    *error = "LceBconv2d: internal error: fused ops on a non-float output";
    return false;
  }

  // Output transform.
  transform_.backtransform_add = kh_ * kw_ * cin_g_;
  switch (activation_) {
    case 1: transform_.clamp_min = 0; transform_.clamp_max = INT32_MAX; break;          // RELU
    case 2: transform_.clamp_min = -1; transform_.clamp_max = 1; break;                 // RELU_N1_TO_1
    case 3: transform_.clamp_min = 0; transform_.clamp_max = 6; break;                  // RELU6
    default: transform_.clamp_min = INT32_MIN; transform_.clamp_max = INT32_MAX; break;  // NONE
  }
  if (out_type_ != kTfcInt32) {
    const float* m = static_cast<const float*>(mul->data);
    const float* b = static_cast<const float*>(bias->data);
    mul_.assign(m, m + cout_);
    bias_.assign(b, b + cout_);
    if (out_type_ == kTfcInt8) {
      const float scale = out->params.scale;
      if (!(scale > 0.0f) || !std::isfinite(scale)) {
        *error = "LceBconv2d: int8 output has no valid quantization scale";
        return false;
      }
      for (int c = 0; c < cout_; ++c) {
        mul_[c] = m[c] / scale;
        bias_[c] = b[c] / scale + static_cast<float>(out->params.zero_point);
      }
    }
    transform_.mul = mul_.data();
    transform_.bias = bias_.data();
  } else {
    thresholds_ = static_cast<const int32_t*>(thr->data);
  }

  // Packed filter geometry and packing.
  w64_ = (words_f_ + 1) / 2;
  k64_ = kh_ * kw_ * w64_;
  nb_g_ = (cout_g_ + 7) / 8;
  ldc_ = ((groups_ - 1) * cout_g_ + nb_g_ * 8 + 15) / 16 * 16;
  last_word_mask_ = (cin_g_ % 32) ? ((1u << (cin_g_ % 32)) - 1) : ~0u;
  packed_ = MakeAligned<uint64_t>(static_cast<size_t>(groups_) * nb_g_ * k64_ * 8);
  if (!packed_) {
    *error = "LceBconv2d: out of memory for the packed filter";
    return false;
  }
  filter_constant_ = IsConstant(filter);
  const uint32_t* fdata = static_cast<const uint32_t*>(filter->data);
  if (fdata == nullptr && filter_constant_) {
    *error = "LceBconv2d: constant filter has no data";
    return false;
  }
  if (fdata != nullptr) PackFilter(fdata);

  // Zero-padding correction (float and int8 outputs).
  corr_.clear();
  corr_index_.clear();
  row_class_.assign(oh_, 0);
  col_class_.assign(ow_, 0);
  num_col_classes_ = 1;
  if (padded && pad_values_ == 0) {
    if (!filter_constant_) {
      *error = "LceBconv2d: zero padding needs a constant filter";
      return false;
    }
    // Valid tap range per output row / column, deduplicated into classes.
    auto classes = [](int out, int in, int k, int s, int d, int pad, std::vector<int>* cls,
                      std::vector<std::pair<int, int>>* ranges) {
      for (int o = 0; o < out; ++o) {
        int lo = k, hi = 0;
        for (int f = 0; f < k; ++f) {
          const int i = o * s - pad + f * d;
          if (i >= 0 && i < in) { lo = std::min(lo, f); hi = std::max(hi, f + 1); }
        }
        const std::pair<int, int> r(lo, hi);
        auto it = std::find(ranges->begin(), ranges->end(), r);
        (*cls)[o] = static_cast<int>(it - ranges->begin());
        if (it == ranges->end()) ranges->push_back(r);
      }
    };
    std::vector<std::pair<int, int>> rows, cols;
    classes(oh_, h_, kh_, sh_, dh_, pt_, &row_class_, &rows);
    classes(ow_, w_, kw_, sw_, dw_, pl_, &col_class_, &cols);
    num_col_classes_ = static_cast<int>(cols.size());
    // S[o][tap] = sum over the group's channels of the filter's +-1 values.
    std::vector<int32_t> S(static_cast<size_t>(cout_) * kh_ * kw_);
    for (int o = 0; o < cout_; ++o)
      for (int t = 0; t < kh_ * kw_; ++t) {
        int ones = 0;
        for (int c = 0; c < words_f_; ++c) {
          uint32_t v = fdata[(static_cast<size_t>(o) * kh_ * kw_ + t) * words_f_ + c];
          if (c == words_f_ - 1) v &= last_word_mask_;
          ones += __builtin_popcount(v);
        }
        S[static_cast<size_t>(o) * kh_ * kw_ + t] = cin_g_ - 2 * ones;
      }
    corr_index_.assign(rows.size() * cols.size(), -1);
    for (size_t rc = 0; rc < rows.size(); ++rc)
      for (size_t cc = 0; cc < cols.size(); ++cc) {
        const auto r = rows[rc], c = cols[cc];
        if (r.first == 0 && r.second == kh_ && c.first == 0 && c.second == kw_) continue;
        corr_index_[rc * cols.size() + cc] = static_cast<int>(corr_.size());
        for (int o = 0; o < cout_; ++o) {
          int32_t sum = 0;
          for (int fy = 0; fy < kh_; ++fy)
            for (int fx = 0; fx < kw_; ++fx) {
              const bool valid = fy >= r.first && fy < r.second && fx >= c.first && fx < c.second;
              if (!valid) sum += S[(static_cast<size_t>(o) * kh_ + fy) * kw_ + fx];
            }
          corr_.push_back(sum);
        }
      }
  }

  // Threads and scratch.
  ThreadPool* pool = runtime->Pool(context);
  const int threads = pool ? pool->size() : 1;
  scratch_.clear();
  scratch_.resize(threads);
  for (auto& s : scratch_) {
    s.patches = MakeAligned<uint64_t>(static_cast<size_t>(kMaxChunk) * k64_);
    s.counts = MakeAligned<int32_t>(static_cast<size_t>(kMaxChunk) * ldc_);
    s.row.assign(static_cast<size_t>(kMaxChunk) * std::max(ldc_, cout_) + 16, 0.0f);
    s.corr_rows.assign(kMaxChunk, nullptr);
    s.window_rows.assign(kh_, nullptr);
    if (!s.patches || !s.counts) {
      *error = "LceBconv2d: out of memory for scratch buffers";
      return false;
    }
  }
  direct_ = (words_f_ % 2 == 0) && last_word_mask_ == ~0u && groups_ == 1 && dw_ == 1 &&
            runtime->kernels->bgemm_direct != nullptr;
  padded_.reset();
  if (direct_) {
    step_ = static_cast<long long>(sw_) * w64_;
    hp_ = (oh_ - 1) * sh_ + (kh_ - 1) * dh_ + 1;
    wp_ = (ow_ - 1) * sw_ + kw_;
    padded_ = MakeAligned<uint64_t>(static_cast<size_t>(n_) * hp_ * wp_ * w64_);
    if (!padded_) {
      *error = "LceBconv2d: out of memory for the padded input";
      return false;
    }
    memset(padded_.get(), 0, static_cast<size_t>(n_) * hp_ * wp_ * w64_ * sizeof(uint64_t));
  }
  // Small images (the last stages: 7x7 = 49 pixels) are split finer so that every thread gets
  // an even share: at least 4 tasks per thread, in multiples of the micro-kernel's 4 rows.
  const long long pixels = static_cast<long long>(n_) * oh_ * ow_;
  chunk_ = kChunkPixels;
  if (threads > 1 && pixels < static_cast<long long>(kChunkPixels) * threads * 4) {
    const long long want = (pixels + threads * 4 - 1) / (threads * 4);
    chunk_ = static_cast<int>(std::max<long long>(4, (want + 3) / 4 * 4));
  } else if (direct_ && ow_ > kChunkPixels / 2 && ow_ <= 4 * kChunkPixels) {
    // the direct GEMM works along output rows: whole rows per task keep its 4-row tiles full
    chunk_ = ow_;
  }
  chunks_per_image_ = (oh_ * ow_ + chunk_ - 1) / chunk_;
  return true;
}

void Bconv2dOp::PackFilter(const uint32_t* f) {
  const size_t group_size = static_cast<size_t>(nb_g_) * k64_ * 8;
  memset(packed_.get(), 0, groups_ * group_size * sizeof(uint64_t));
  for (int g = 0; g < groups_; ++g)
    for (int oc = 0; oc < cout_g_; ++oc) {
      const int o = g * cout_g_ + oc;
      uint64_t* dst = packed_.get() + g * group_size + static_cast<size_t>(oc / 8) * k64_ * 8 + oc % 8;
      for (int t = 0; t < kh_ * kw_; ++t) {
        const uint32_t* src = f + (static_cast<size_t>(o) * kh_ * kw_ + t) * words_f_;
        for (int j = 0; j < w64_; ++j) {
          const int c0 = 2 * j, c1 = 2 * j + 1;
          uint64_t lo = src[c0], hi = c1 < words_f_ ? src[c1] : 0;
          if (c0 == words_f_ - 1) lo &= last_word_mask_;
          if (c1 == words_f_ - 1) hi &= last_word_mask_;
          dst[static_cast<size_t>(t * w64_ + j) * 8] = lo | (hi << 32);
        }
      }
    }
}

namespace {
inline void CopyWords(uint64_t* dst, const uint32_t* src, int n) {
  for (int j = 0; j < n; ++j) {
    uint64_t v;
    memcpy(&v, src + 2 * j, sizeof(v));  // one unaligned 64-bit load
    dst[j] = v;
  }
}
}  // namespace

void Bconv2dOp::Im2col(const uint32_t* in, int batch, int p0, int rows, int group, uint64_t* P) const {
  const uint32_t* image = in + static_cast<size_t>(batch) * h_ * w_ * words_in_ + group * words_f_;
  // Whole 64-bit words per tap (even word count, no partial last word): plain copies, and
  // for one group with dilation 1 a filter row is one contiguous run of the input row.
  const bool whole = (words_f_ % 2 == 0) && last_word_mask_ == ~0u;
  const bool runs = whole && groups_ == 1 && dw_ == 1;
  int oy = p0 / ow_, ox = p0 % ow_;
  for (int r = 0; r < rows; ++r) {
    uint64_t* row = P + static_cast<size_t>(r) * k64_;
    const int iy0 = oy * sh_ - pt_, ix0 = ox * sw_ - pl_;
    const bool x_inside = ix0 >= 0 && ix0 + (kw_ - 1) * dw_ < w_;
    for (int fy = 0; fy < kh_; ++fy) {
      const int iy = iy0 + fy * dh_;
      uint64_t* dst = row + fy * kw_ * w64_;
      if (iy < 0 || iy >= h_) {
        for (int j = 0; j < kw_ * w64_; ++j) dst[j] = 0;  // padding: bit 0 = +1
        continue;
      }
      const uint32_t* line = image + static_cast<size_t>(iy) * w_ * words_in_;
      if (runs && x_inside) {
        CopyWords(dst, line + static_cast<size_t>(ix0) * words_in_, kw_ * w64_);
        continue;
      }
      for (int fx = 0; fx < kw_; ++fx, dst += w64_) {
        const int ix = ix0 + fx * dw_;
        if (ix < 0 || ix >= w_) {
          for (int j = 0; j < w64_; ++j) dst[j] = 0;
          continue;
        }
        const uint32_t* src = line + static_cast<size_t>(ix) * words_in_;
        if (whole) {
          CopyWords(dst, src, w64_);
          continue;
        }
        for (int j = 0; j < w64_; ++j) {
          const int c0 = 2 * j, c1 = 2 * j + 1;
          uint64_t lo = src[c0], hi = c1 < words_f_ ? src[c1] : 0;
          if (c0 == words_f_ - 1) lo &= last_word_mask_;
          if (c1 == words_f_ - 1) hi &= last_word_mask_;
          dst[j] = lo | (hi << 32);
        }
      }
    }
    if (++ox == ow_) {
      ox = 0;
      ++oy;
    }
  }
}

void Bconv2dOp::PadInput() {
  // padded_ holds zeros wherever the padding is (set at Prepare); copy the image's pixels in.
  const int x_copy = std::min(w_, wp_ - pl_);  // VALID may leave right columns unused
  const int y_copy = std::min(h_, hp_ - pt_);
  for (int b = 0; b < n_; ++b)
    for (int y = 0; y < y_copy; ++y) {
      const uint32_t* src = in_data_ + (static_cast<size_t>(b) * h_ + y) * w_ * words_in_;
      uint64_t* dst = padded_.get() + ((static_cast<size_t>(b) * hp_ + y + pt_) * wp_ + pl_) * w64_;
      memcpy(dst, src, static_cast<size_t>(x_copy) * words_in_ * sizeof(uint32_t));
    }
}

void Bconv2dOp::GemmDirect(Scratch& s, int batch, int oy, int ox, int r, int n) const {
  const uint64_t* image = padded_.get() + static_cast<size_t>(batch) * hp_ * wp_ * w64_;
  for (int fy = 0; fy < kh_; ++fy)
    s.window_rows[fy] = image + (static_cast<size_t>(oy * sh_ + fy * dh_) * wp_ + ox * sw_) * w64_;
  runtime->kernels->bgemm_direct(s.window_rows.data(), kh_, kw_ * w64_, step_, n, packed_.get(),
                                 nb_g_, s.counts.get() + static_cast<size_t>(r) * ldc_, ldc_);
}

void Bconv2dOp::RunTask(int task, int thread) {
  Scratch& s = scratch_[thread];
  const int batch = task / chunks_per_image_;
  const int p0 = (task % chunks_per_image_) * chunk_;
  const int rows = std::min(chunk_, oh_ * ow_ - p0);
  const KernelTable* k = runtime->kernels;
  const size_t group_size = static_cast<size_t>(nb_g_) * k64_ * 8;
  if (direct_) {
    // one direct GEMM per piece of an output row
    int oy = p0 / ow_, ox = p0 % ow_;
    for (int r = 0; r < rows;) {
      const int len = std::min(rows - r, ow_ - ox);
      GemmDirect(s, batch, oy, ox, r, len);
      r += len;
      ox = 0;
      ++oy;
    }
  } else {
    for (int g = 0; g < groups_; ++g) {
      Im2col(in_data_, batch, p0, rows, g, s.patches.get());
      k->bgemm(s.patches.get(), rows, k64_, packed_.get() + g * group_size, nb_g_,
               s.counts.get() + g * cout_g_, ldc_);
    }
  }
  const size_t pixel0 = static_cast<size_t>(batch) * oh_ * ow_ + p0;
  if (out_type_ == kTfcFloat32 && fast_.on) {
    const int32_t* const* corr = nullptr;
    if (!corr_index_.empty()) {
      for (int r = 0; r < rows; ++r) {
        const int p = p0 + r;
        const int idx = corr_index_[row_class_[p / ow_] * num_col_classes_ + col_class_[p % ow_]];
        s.corr_rows[r] = idx >= 0 ? corr_.data() + idx : nullptr;
      }
      corr = s.corr_rows.data();
    }
    FusedOut f{fast_residual_ ? fast_residual_ + pixel0 * cout_ : nullptr, fast_.clamp,
               fast_.lo, fast_.hi, fast_out_ ? fast_out_ + pixel0 * fast_out_stride_ : nullptr,
               fast_bits_ ? fast_bits_ + pixel0 * Bitpacked(cout_) : nullptr};
    const FusedStrides strides{cout_, fast_out_stride_, Bitpacked(cout_)};
    k->out_fused_rows(s.counts.get(), ldc_, rows, cout_, transform_, corr, f, strides);
    return;
  }
  for (int r = 0; r < rows; ++r) {
    const int32_t* c = s.counts.get() + static_cast<size_t>(r) * ldc_;
    const size_t pixel = pixel0 + r;
    if (out_type_ == kTfcInt32) {
      k->out_bits(c, cout_, thresholds_, static_cast<int32_t*>(out_data_) + pixel * Bitpacked(cout_));
      continue;
    }
    const int32_t* corr = nullptr;
    if (!corr_index_.empty()) {
      const int p = p0 + r;
      const int idx = corr_index_[row_class_[p / ow_] * num_col_classes_ + col_class_[p % ow_]];
      if (idx >= 0) corr = corr_.data() + idx;
    }
    if (out_type_ == kTfcFloat32) {
      k->out_f32(c, cout_, transform_, corr, s.row.data() + static_cast<size_t>(r) * cout_);
    } else {
      float* y = s.row.data();
      k->out_f32(c, cout_, transform_, corr, y);
      int8_t* q = static_cast<int8_t*>(out_data_) + pixel * cout_;
      for (int o = 0; o < cout_; ++o) {
        const float v = roundf(y[o]);  // half away from zero, like TfLiteRound
        // NaN (an infinite multiplier times 0) goes to -128 instead of an undefined cast.
        q[o] = static_cast<int8_t>(v >= 127.0f ? 127.0f : (v > -128.0f ? v : -128.0f));
      }
    }
  }
  // float output: the epilogue (folded ops, writes, sign packing) over the whole chunk
  if (out_type_ == kTfcFloat32 && !fast_.on)
    bound_.Run(s.row.data(), static_cast<long long>(pixel0), rows);
}

bool Bconv2dOp::Eval(TfcContext* context, std::string*) {
  in_data_ = static_cast<const uint32_t*>(Data(context, inputs[0]));
  out_data_ = out_type_ == kTfcFloat32 ? nullptr : Data(context, outputs[0]);
  if (!filter_constant_) PackFilter(static_cast<const uint32_t*>(Data(context, inputs[1])));
  if (out_type_ == kTfcInt32) thresholds_ = static_cast<const int32_t*>(Data(context, inputs[4]));
  if (out_type_ == kTfcFloat32)
    BindEpilogue(context, &bound_);
  if (fast_.on) {
    fast_residual_ = fast_.residual >= 0 ? static_cast<const float*>(Data(context, fast_.residual)) : nullptr;
    fast_out_ = fast_.write >= 0 ? static_cast<float*>(Data(context, fast_.write)) : nullptr;
    fast_out_stride_ = fast_.write >= 0 ? RowStride(fast_.write, cout_) : cout_;
    fast_bits_ = fast_.pack >= 0 ? static_cast<int32_t*>(Data(context, fast_.pack)) : nullptr;
  }
  if (direct_) PadInput();
  const int tasks = n_ * chunks_per_image_;
  ThreadPool* pool = runtime->Pool(context);
  if (pool && static_cast<int>(scratch_.size()) >= pool->size()) {
    pool->Run(tasks, &Bconv2dOp::Task, this);
  } else {
    for (int t = 0; t < tasks; ++t) RunTask(t, 0);
  }
  return true;
}

}  // namespace

std::unique_ptr<Op> MakeBconv2d(const uint8_t* options, size_t size) {
  return std::unique_ptr<Op>(new Bconv2dOp(options, size));
}

}  // namespace tfc
