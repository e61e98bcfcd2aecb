// Float builtin ops the delegate takes over from LiteRT around the binary layers, so that
// they can be fused with them: elementwise chains (ADD, SUB, MUL, PRELU, RELU*, LOGISTIC),
// CONCATENATION on the channel axis, MAX_POOL_2D / AVERAGE_POOL_2D, RESHAPE and
// FULLY_CONNECTED. Each is a row op: it computes one output row (a pixel's channels) at a
// time and hands it to its epilogue, which applies the folded ops and writes the results.
// Semantics follow TFLite's reference kernels (average pooling divides the sum of the valid
// window elements by their count; padding is never averaged or maxed).
#include <math.h>
#include <string.h>

#include <algorithm>

#include "op_util.h"
#include "ops.h"

namespace tfc {
namespace {

constexpr long long kRowsTarget = 16384;  // elements per parallel task (about)

// Per-thread scratch rows and the chunking of `rows` rows of `channels` values into tasks.
struct RowPlan {
  long long rows = 0, rows_per_task = 1;
  int tasks = 0;
  std::vector<std::vector<float>> scratch;

  int chunk = 1;  // rows per epilogue call (a task is split into chunks)

  void Make(long long n_rows, int channels, int threads, int extra = 0) {
    rows = n_rows;
    rows_per_task = std::max<long long>(1, kRowsTarget / std::max(channels, 1));
    tasks = static_cast<int>((rows + rows_per_task - 1) / rows_per_task);
    chunk = ChunkRows(channels);
    scratch.assign(threads, std::vector<float>(static_cast<size_t>(channels) * chunk + extra + 16));
  }
  void Range(int task, long long* r0, long long* r1) const {
    *r0 = task * rows_per_task;
    *r1 = std::min(rows, *r0 + rows_per_task);
  }
};

// ------------------------------------------------------------------------- chain
// A standalone elementwise op (and whatever fusion appended): rows of the main input, the
// op's own step first in the epilogue.
class ChainOp : public Op {
 public:
  explicit ChainOp(OpKind kind) : kind_(kind) {}
  Signature signature() const override {
    const bool binary = kind_ == kOpAdd || kind_ == kOpSub || kind_ == kOpMul || kind_ == kOpPrelu;
    return {OpKindName(kind_), binary ? 2 : 1, binary ? 2 : 1, 0, 1};
  }
  bool CanCarryEpilogue() const override { return true; }
  int ResultTensor() const override { return source; }

  bool Prepare(TfcContext* context, std::string* error) override {
    if (source < 0 || (source != inputs[0] && (inputs.size() < 2 || source != inputs[1]))) {
      *error = std::string(OpKindName(kind_)) + ": internal error: no main input";
      return false;
    }
    const TfcTensor* in = TensorAt(context, source);
    const std::vector<int> d = Dims(in);
    if (in->type != kTfcFloat32 || Output(context, 0)->type != kTfcFloat32) {
      *error = Format("%s: only float32 is supported here, got %s", OpKindName(kind_),
                      TypeName(in->type));
      return false;
    }
    if (!CheckShape(d, -1, OpKindName(kind_), "input", error)) return false;
    if (!PrepareEpilogue(context, d, error)) return false;
    plan_.Make(epilogue.rows, epilogue.channels, runtime->Threads(context));
    return true;
  }

  bool Eval(TfcContext* context, std::string*) override {
    src_ = static_cast<const float*>(Data(context, source));
    BindEpilogue(context, &bound_);
    runtime->Parallel(context, plan_.tasks, &ChainOp::Task, this);
    return true;
  }

  int source = -1;  // the main (full-shape) input

 private:
  static void Task(void* self, int task, int thread) {
    ChainOp* op = static_cast<ChainOp*>(self);
    long long r0, r1;
    op->plan_.Range(task, &r0, &r1);
    float* y = op->plan_.scratch[thread].data();
    const int c = op->epilogue.channels;
    if (op->bound_.mul_add_pack()) {  // BatchNorm + sign straight from the rows
      for (long long r = r0; r < r1; ++r) op->bound_.RunMulAddPack(op->src_ + r * c, r);
      return;
    }
    for (long long r = r0; r < r1; r += op->plan_.chunk) {
      const int rows = static_cast<int>(std::min<long long>(op->plan_.chunk, r1 - r));
      memcpy(y, op->src_ + r * c, sizeof(float) * c * rows);
      op->bound_.Run(y, r, rows);
    }
  }

  OpKind kind_;
  RowPlan plan_;
  BoundEpilogue bound_;
  const float* src_ = nullptr;
};

// ------------------------------------------------------------------- concatenation
class ConcatOp : public Op {
 public:
  Signature signature() const override { return {"CONCATENATION", 1, 64, 0, 1}; }
  bool CanCarryEpilogue() const override { return true; }

  bool Prepare(TfcContext* context, std::string* error) override {
    const TfcTensor* out = Output(context, 0);
    std::vector<int> shape = Dims(Input(context, 0));
    if (!CheckShape(shape, -1, "CONCATENATION", "input", error)) return false;
    const int rank = static_cast<int>(shape.size());
    if (params.axis != rank - 1 && params.axis != -1) {
      *error = Format("CONCATENATION: only the channel axis is supported here, got axis %d",
                      params.axis);
      return false;
    }
    widths_.clear();
    int channels = 0;
    for (size_t i = 0; i < inputs.size(); ++i) {
      const TfcTensor* in = Input(context, i);
      std::vector<int> d = Dims(in);
      if (in->type != kTfcFloat32 || d.size() != shape.size() ||
          !std::equal(d.begin(), d.end() - 1, shape.begin()) || d.back() < 1) {
        *error = "CONCATENATION: input " + std::to_string(i) + " is " + TypeName(in->type) +
                 " " + DimsStr(d) + ", not float32 matching " + DimsStr(shape) +
                 " except in the last dimension";
        return false;
      }
      widths_.push_back(d.back());
      channels += d.back();
    }
    if (out->type != kTfcFloat32) {
      *error = "CONCATENATION: output must be float32";
      return false;
    }
    shape.back() = channels;
    if (!CheckShape(shape, -1, "CONCATENATION", "output", error)) return false;
    if (root >= 0) {
      const std::vector<int> wide = Dims(TensorAt(context, root));
      if (wide.size() != shape.size() || !std::equal(wide.begin(), wide.end() - 1, shape.begin()) ||
          wide.back() < channels || in_place.size() != inputs.size()) {
        *error = "CONCATENATION: internal error: in-place chain shapes " + DimsStr(wide) +
                 " vs " + DimsStr(shape);
        return false;
      }
    }
    if (!EnsureShape(context, Output(context, 0), shape, error)) return false;
    if (!PrepareEpilogue(context, shape, error)) return false;
    plan_.Make(epilogue.rows, channels, runtime->Threads(context));
    return true;
  }

  bool Eval(TfcContext* context, std::string*) override {
    srcs_.clear();
    for (int t : inputs) srcs_.push_back(static_cast<const float*>(Data(context, t)));
    if (root >= 0) {
      root_data_ = static_cast<float*>(Data(context, root));
      root_stride_ = RowStride(root, 0);
      if (root_stride_ == 0) root_stride_ = Dims(TensorAt(context, root)).back();
    }
    BindEpilogue(context, &bound_);
    runtime->Parallel(context, plan_.tasks, &ConcatOp::Task, this);
    return true;
  }

  // In-place mode (set by the fusion pass for chains of concatenations, as in DenseNet's
  // blocks): every input and the output are column slices of one wide tensor `root`, so
  // inputs marked in_place are already where they belong and only the others are copied in.
  int root = -1;
  std::vector<bool> in_place;

 private:
  static void Task(void* self, int task, int thread) {
    ConcatOp* op = static_cast<ConcatOp*>(self);
    long long r0, r1;
    op->plan_.Range(task, &r0, &r1);
    float* y = op->plan_.scratch[thread].data();
    const int c = op->epilogue.channels;
    const bool fast = op->root >= 0 && op->bound_.mul_add_pack();
    for (long long r = r0; r < r1; r += op->plan_.chunk) {
      const int rows = static_cast<int>(std::min<long long>(op->plan_.chunk, r1 - r));
      for (int k = 0; k < rows; ++k) {
        float* p = y + static_cast<size_t>(k) * c;
        if (op->root >= 0) {
          float* wide = op->root_data_ + (r + k) * op->root_stride_;
          int offset = 0;
          for (size_t i = 0; i < op->srcs_.size(); ++i) {
            const int w = op->widths_[i];
            if (!op->in_place[i]) memcpy(wide + offset, op->srcs_[i] + (r + k) * w, sizeof(float) * w);
            offset += w;
          }
          if (fast) {
            op->bound_.RunMulAddPack(wide, r + k);  // BatchNorm + sign straight from the row
            continue;
          }
          memcpy(p, wide, sizeof(float) * c);
          continue;
        }
        for (size_t i = 0; i < op->srcs_.size(); ++i) {
          const int w = op->widths_[i];
          memcpy(p, op->srcs_[i] + (r + k) * w, sizeof(float) * w);
          p += w;
        }
      }
      if (!fast) op->bound_.Run(y, r, rows);
    }
  }

  float* root_data_ = nullptr;
  long long root_stride_ = 0;

  std::vector<int> widths_;
  std::vector<const float*> srcs_;
  RowPlan plan_;
  BoundEpilogue bound_;
};

// ---------------------------------------------------------------------- pooling
class PoolOp : public Op {
 public:
  explicit PoolOp(bool max) : max_(max) {}
  Signature signature() const override {
    return {max_ ? "MAX_POOL_2D" : "AVERAGE_POOL_2D", 1, 1, 0, 1};
  }
  bool CanCarryEpilogue() const override { return true; }

  bool Prepare(TfcContext* context, std::string* error) override {
    const char* name = signature().name;
    const TfcTensor* in = Input(context, 0);
    const std::vector<int> d = Dims(in);
    if (in->type != kTfcFloat32 || Output(context, 0)->type != kTfcFloat32) {
      *error = Format("%s: only float32 is supported here", name);
      return false;
    }
    if (!CheckShape(d, 4, name, "input", error)) return false;
    n_ = d[0], h_ = d[1], w_ = d[2], c_ = d[3];
    const bool same = params.padding == kTfcPaddingSame;
    if (!OutputSize(h_, params.filter_h, params.stride_h, 1, same, &oh_, &pt_) ||
        !OutputSize(w_, params.filter_w, params.stride_w, 1, same, &ow_, &pl_)) {
      *error = Format("%s: the %dx%d window does not fit the %dx%d input", name, params.filter_h,
                      params.filter_w, h_, w_);
      return false;
    }
    const std::vector<int> shape = {n_, oh_, ow_, c_};
    if (!EnsureShape(context, Output(context, 0), shape, error)) return false;
    if (!PrepareEpilogue(context, shape, error)) return false;
    plan_.Make(epilogue.rows, c_, runtime->Threads(context));
    return true;
  }

  bool Eval(TfcContext* context, std::string*) override {
    src_ = static_cast<const float*>(Data(context, inputs[0]));
    BindEpilogue(context, &bound_);
    runtime->Parallel(context, plan_.tasks, &PoolOp::Task, this);
    return true;
  }

 private:
  static void Task(void* self, int task, int thread) {
    PoolOp* op = static_cast<PoolOp*>(self);
    long long r0, r1;
    op->plan_.Range(task, &r0, &r1);
    float* chunk_y = op->plan_.scratch[thread].data();
    const int c = op->c_;
    for (long long r = r0; r < r1; ++r) {
      const long long in_chunk = (r - r0) % op->plan_.chunk;
      float* y = chunk_y + in_chunk * c;
      const int b = static_cast<int>(r / (op->oh_ * op->ow_));
      const int p = static_cast<int>(r % (op->oh_ * op->ow_));
      const int oy = p / op->ow_, ox = p % op->ow_;
      const int y0 = std::max(oy * op->params.stride_h - op->pt_, 0);
      const int y1 = std::min(oy * op->params.stride_h - op->pt_ + op->params.filter_h, op->h_);
      const int x0 = std::max(ox * op->params.stride_w - op->pl_, 0);
      const int x1 = std::min(ox * op->params.stride_w - op->pl_ + op->params.filter_w, op->w_);
      const float* image = op->src_ + static_cast<size_t>(b) * op->h_ * op->w_ * c;
      PoolWindow(image, static_cast<long long>(op->w_) * c, y0, y1, x0, x1, c, op->max_, y);
      if (!op->max_) {
        const float count = static_cast<float>((y1 - y0) * (x1 - x0));
        for (int i = 0; i < c; ++i) y[i] = y[i] / count;
      }
      if (in_chunk == op->plan_.chunk - 1 || r == r1 - 1)
        op->bound_.Run(chunk_y, r - in_chunk, static_cast<int>(in_chunk + 1));
    }
  }

  bool max_;
  int n_ = 0, h_ = 0, w_ = 0, c_ = 0, oh_ = 0, ow_ = 0, pt_ = 0, pl_ = 0;
  RowPlan plan_;
  BoundEpilogue bound_;
  const float* src_ = nullptr;
};

// ----------------------------------------------------------------------- reshape
class ReshapeOp : public Op {
 public:
  Signature signature() const override { return {"RESHAPE", 1, 2, 0x2, 1}; }

  bool Prepare(TfcContext* context, std::string* error) override {
    const TfcTensor* in = Input(context, 0);
    const TfcTensor* out = Output(context, 0);
    if (in->type != out->type || TypeSize(in->type) == 0 ||
        NumElements(Dims(in)) != NumElements(Dims(out))) {
      *error = "RESHAPE: input " + DimsStr(Dims(in)) + " and output " + DimsStr(Dims(out)) +
               " differ in type or size";
      return false;
    }
    bytes_ = static_cast<size_t>(NumElements(Dims(in))) * TypeSize(in->type);
    return true;
  }
  bool Eval(TfcContext* context, std::string*) override {
    memcpy(Data(context, outputs[0]), Data(context, inputs[0]), bytes_);
    return true;
  }

 private:
  size_t bytes_ = 0;
};

// --------------------------------------------------------------- fully connected
// y[r, u] = dot(W[u, :], x[r, :]) + bias[u]; rows and output units are split over threads,
// then the epilogue runs on each row.
class FullyConnectedOp : public Op {
 public:
  Signature signature() const override { return {"FULLY_CONNECTED", 2, 3, 0x4, 1}; }
  bool CanCarryEpilogue() const override { return true; }

  bool Prepare(TfcContext* context, std::string* error) override {
    const TfcTensor* in = Input(context, 0);
    const TfcTensor* w = Input(context, 1);
    const TfcTensor* bias = Input(context, 2);
    const std::vector<int> dw = Dims(w), di = Dims(in);
    if (in->type != kTfcFloat32 || w->type != kTfcFloat32 || !IsConstant(w) || dw.size() != 2 ||
        Output(context, 0)->type != kTfcFloat32) {
      *error = "FULLY_CONNECTED: needs float32 input and output and constant 2-D float32 weights";
      return false;
    }
    if (!CheckShape(di, -1, "FULLY_CONNECTED", "input", error) ||
        !CheckShape(dw, 2, "FULLY_CONNECTED", "weights", error))
      return false;
    units_ = dw[0], depth_ = dw[1];
    if (NumElements(di) % depth_ != 0) {
      *error = Format("FULLY_CONNECTED: input %s is not a multiple of the weights' depth %d",
                      DimsStr(di).c_str(), depth_);
      return false;
    }
    if (bias != nullptr && (bias->type != kTfcFloat32 || NumElements(Dims(bias)) != units_ ||
                            !IsConstant(bias))) {
      *error = "FULLY_CONNECTED: the bias must be a constant float32 vector of the units";
      return false;
    }
    rows_ = NumElements(di) / depth_;
    std::vector<int> shape = {static_cast<int>(rows_), units_};
    // keep_num_dims: the converter gave the output the input's rank, [..., units]
    // (a Dense on a sequence); the rows are the same, only the shape differs.
    const std::vector<int> dout = Dims(Output(context, 0));
    if (di.size() > 2 && dout.size() == di.size() && di.back() == depth_) {
      shape = di;
      shape.back() = units_;
    }
    if (!EnsureShape(context, Output(context, 0), shape, error)) return false;
    if (!PrepareEpilogue(context, shape, error)) return false;
    result_.assign(static_cast<size_t>(rows_) * units_, 0.0f);
    chunk_ = std::max(16, units_ / (4 * runtime->Threads(context)));
    chunks_ = (units_ + chunk_ - 1) / chunk_;
    return true;
  }

  bool Eval(TfcContext* context, std::string*) override {
    x_ = static_cast<const float*>(Data(context, inputs[0]));
    w_ = static_cast<const float*>(Data(context, inputs[1]));
    b_ = inputs.size() > 2 && inputs[2] >= 0 ? static_cast<const float*>(Data(context, inputs[2]))
                                             : nullptr;
    runtime->Parallel(context, static_cast<int>(rows_ * chunks_), &FullyConnectedOp::Task, this);
    BindEpilogue(context, &bound_);
    bound_.Run(result_.data(), 0, static_cast<int>(rows_));
    return true;
  }

 private:
  static void Task(void* self, int task, int) {
    FullyConnectedOp* op = static_cast<FullyConnectedOp*>(self);
    const long long r = task / op->chunks_;
    const int u0 = (task % op->chunks_) * op->chunk_;
    const int u1 = std::min(op->units_, u0 + op->chunk_);
    const float* x = op->x_ + r * op->depth_;
    float* y = op->result_.data() + r * op->units_;
    for (int u = u0; u < u1; ++u) {
      const float acc =
          op->runtime->kernels->dot(op->w_ + static_cast<size_t>(u) * op->depth_, x, op->depth_);
      y[u] = op->b_ ? acc + op->b_[u] : acc;
    }
  }

  int units_ = 0, depth_ = 0, chunk_ = 16, chunks_ = 1;
  long long rows_ = 0;
  std::vector<float> result_;
  const float *x_ = nullptr, *w_ = nullptr, *b_ = nullptr;
  BoundEpilogue bound_;
};

}  // namespace

std::unique_ptr<Op> MakeChain(OpKind kind) { return std::unique_ptr<Op>(new ChainOp(kind)); }
std::unique_ptr<Op> MakeConcat() { return std::unique_ptr<Op>(new ConcatOp()); }
std::unique_ptr<Op> MakePool(bool max) { return std::unique_ptr<Op>(new PoolOp(max)); }
std::unique_ptr<Op> MakeReshape() { return std::unique_ptr<Op>(new ReshapeOp()); }
std::unique_ptr<Op> MakeFullyConnected() { return std::unique_ptr<Op>(new FullyConnectedOp()); }

// Setters used by the fusion pass.
void SetChainSource(Op* op, int tensor) { static_cast<ChainOp*>(op)->source = tensor; }
void SetConcatInPlace(Op* op, int root, const std::vector<bool>& in_place) {
  ConcatOp* c = static_cast<ConcatOp*>(op);
  c->root = root;
  c->in_place = in_place;
}

}  // namespace tfc
