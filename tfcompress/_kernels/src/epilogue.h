// Epilogues: what a row op does with each output row (one pixel's channels) after computing
// it. Fusion (fusion.cc) folds the float elementwise ops that follow a binary convolution,
// a concatenation, a pooling or another elementwise op into it, and LceQuantize into the op
// that produces its input:
//
//   y = row of the op's result
//   for each action:  Step   y = f(y, operand)   (ADD, SUB, MUL, PRELU, LOGISTIC, clamp)
//                     Write  tensor[row] = y     (a float tensor someone else still reads)
//                     Pack   bits[row] = sign(y) (the output of an LceQuantize of y)
//
// Each step is the same IEEE float operation the original op performs element by element
// (one rounding per op, no fused multiply-add: the library is built with ISO C++ rules, so
// the compiler does not contract them), so a fused chain gives bit-identical results to the
// ops run one after the other.
#ifndef TFCOMPRESS_KERNELS_EPILOGUE_H_
#define TFCOMPRESS_KERNELS_EPILOGUE_H_

#include <stddef.h>
#include <stdint.h>

#include <string>
#include <vector>

#include "kernels.h"
#include "tflite_abi.h"

namespace tfc {

struct Action {
  ActionKind kind = kActStep;
  StepKind step = kStepAdd;
  OperandKind operand = kOperandNone;  // decided at Prepare from the operand's shape
  int tensor = -1;                     // the operand (Step) or the destination (Write, Pack)
  float lo = 0.0f, hi = 0.0f;          // kStepClamp bounds
  int node = -1;                       // TFLite node this action came from (-1: the host)
};

struct Epilogue {
  std::vector<Action> actions;
  // Set by Prepare: rows of `channels` values, `rows_per_batch` rows per batch item.
  int channels = 0;
  long long rows = 0, rows_per_batch = 1;

  bool empty() const { return actions.empty(); }
  void AddStep(StepKind step, int operand, int node) {
    Action a;
    a.kind = kActStep, a.step = step, a.tensor = operand, a.node = node;
    actions.push_back(a);
  }
  void AddClamp(int activation, int node);  // a fused activation (kTfcAct*), if not NONE
  void AddWrite(int tensor) {
    Action a;
    a.kind = kActWrite, a.tensor = tensor;
    actions.push_back(a);
  }
  void AddPack(int tensor) {
    Action a;
    a.kind = kActPack, a.tensor = tensor;
    actions.push_back(a);
  }
  // Every tensor read (operands) and written, for the op's checks.
  void Tensors(std::vector<int>* read, std::vector<int>* written) const;
  // Checks each action against the result shape (operands broadcastable, destinations of the
  // right type and shape, resizing them if LiteRT declared another shape) and settles the
  // operand kinds. `shape` is the float result's shape [..., C].
  bool Prepare(TfcContext* context, const std::vector<int>& shape, std::string* error);
};

// An epilogue with its data pointers resolved for one Eval.
class BoundEpilogue {
 public:
  // `data(tensor)` returns a tensor's data pointer; `stride(tensor)` the floats from one row
  // of a written tensor to the next (the channel count unless it is a view).
  template <typename DataFn>
  void Bind(const Epilogue& e, const KernelTable* kernels, DataFn data) {
    Bind(e, kernels, data, [&](int) { return static_cast<long long>(e.channels); });
  }
  template <typename DataFn, typename StrideFn>
  void Bind(const Epilogue& e, const KernelTable* kernels, DataFn data, StrideFn stride) {
    acts_.clear();
    for (const Action& a : e.actions) {
      EpAction b{a.kind, a.step, a.operand, nullptr, nullptr, a.lo, a.hi, e.channels};
      if (a.kind == kActWrite) b.dst_stride = stride(a.tensor);
      if (a.kind == kActStep && a.tensor >= 0) b.src = static_cast<const float*>(data(a.tensor));
      if (a.kind != kActStep) b.dst = data(a.tensor);
      acts_.push_back(b);
    }
    run_.acts = acts_.data();
    run_.n_acts = static_cast<int>(acts_.size());
    run_.channels = e.channels;
    run_.words = (e.channels + 31) / 32;
    run_.rows_per_batch = e.rows_per_batch;
    kernels_ = kernels;
    // [MUL by a channel vector, ADD a channel vector, Pack]: a BatchNorm then LceQuantize
    mul_add_pack_ = acts_.size() == 3 && acts_[0].kind == kActStep && acts_[0].step == kStepMul &&
                    acts_[0].operand == kOperandChannel && acts_[1].kind == kActStep &&
                    acts_[1].step == kStepAdd && acts_[1].operand == kOperandChannel &&
                    acts_[2].kind == kActPack;
  }
  // True when the epilogue is MUL and ADD by per-channel vectors then Pack: RunMulAddPack
  // then does it in one pass straight from the rows, without a copy.
  bool mul_add_pack() const { return mul_add_pack_; }
  // The row `row` (at `src`) through MUL, ADD, Pack (only if mul_add_pack()).
  void RunMulAddPack(const float* src, long long row) const {
    kernels_->mul_add_pack(src, acts_[0].src, acts_[1].src, run_.channels,
                           static_cast<int32_t*>(acts_[2].dst) + row * run_.words);
  }
  // Applies the actions to `rows` consecutive rows starting at `row0`, held in `y`
  // (rows x channels floats, modified in place). Each action runs over the whole chunk, so
  // its loop is long and the chunk stays in the L1 cache between actions.
  void Run(float* y, long long row0, int rows) const;
  bool empty() const { return acts_.empty(); }

 private:
  std::vector<EpAction> acts_;
  EpRun run_{};
  const KernelTable* kernels_ = nullptr;
  bool mul_add_pack_ = false;
};

// Rows per chunk so that a chunk holds about 4096 values (16 KB, in L1 with its operands).
inline int ChunkRows(int channels) { return channels >= 4096 ? 1 : 4096 / channels; }

// Vectorised row helpers (built for AVX-512, AVX2 and plain x86-64; picked at load time).
void RowAdd(float* y, const float* b, int n);
void RowSub(float* y, const float* b, int n);   // y - b
void RowRSub(float* y, const float* b, int n);  // b - y
void RowMul(float* y, const float* b, int n);
void RowAddScalar(float* y, float b, int n);
void RowSubScalar(float* y, float b, int n);
void RowRSubScalar(float* y, float b, int n);
void RowMulScalar(float* y, float b, int n);
void RowPrelu(float* y, const float* alpha, int n);
void RowPreluScalar(float* y, float alpha, int n);
void RowClamp(float* y, float lo, float hi, int n);
void RowLogistic(float* y, int n);
void RowMax(float* y, const float* b, int n);   // y = max(y, b)
void RowCopy(float* y, const float* b, int n);
// Max or sum over the window rows [y0, y1) x columns [x0, x1) of an NHWC image (`src` at the
// image's first pixel, `row_stride` floats per image row) into y[0..c).
void PoolWindow(const float* src, long long row_stride, int y0, int y1, int x0, int x1, int c,
                bool max, float* y);

}  // namespace tfc

#endif  // TFCOMPRESS_KERNELS_EPILOGUE_H_
