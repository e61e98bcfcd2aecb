// The ops a delegate partition runs: LCE's four custom ops and the float builtin ops around
// them, as objects that parse options (constructor), check tensors and precompute (Prepare)
// and run (Eval). Float "row" ops (binary conv with float output, elementwise chains,
// concatenation, pooling, fully connected) carry an Epilogue: the elementwise ops, sign
// packings and writes that fusion folded into them (epilogue.h).
#ifndef TFCOMPRESS_KERNELS_OPS_H_
#define TFCOMPRESS_KERNELS_OPS_H_

#include <stdint.h>

#include <memory>
#include <string>
#include <vector>

#include "epilogue.h"
#include "kernels.h"
#include "threadpool.h"
#include "tflite_abi.h"

namespace tfc {

// State shared by every op of one delegate instance.
struct Runtime {
  Isa isa = kIsaPortable;
  const KernelTable* kernels = &kPortableKernels;
  int num_threads = 0;  // 0: follow the interpreter's num_threads
  std::unique_ptr<ThreadPool> pool;

  ThreadPool* Pool(const TfcContext* context);
  // Runs fn(ctx, task, thread) for task in [0, n) on the pool (or inline); returns threads.
  int Parallel(const TfcContext* context, int n, ThreadPool::TaskFn fn, void* ctx);
  int Threads(const TfcContext* context);
};

enum OpKind {
  kOpQuantize, kOpDequantize, kOpBconv2d, kOpBMaxPool2d,
  // float builtins
  kOpAdd, kOpSub, kOpMul, kOpPrelu, kOpRelu, kOpRelu6, kOpReluN1To1, kOpLogistic,
  kOpConcat, kOpMaxPool, kOpAvgPool, kOpReshape, kOpFullyConnected,
  kOpUnknown
};

OpKind OpKindFromName(const char* custom_name);
OpKind OpKindFromBuiltin(int builtin_code);
const char* OpKindName(OpKind kind);
bool IsElementwise(OpKind kind);  // one output, same shape as its main input

// Parameters of a builtin node, copied out of TfLiteNode::builtin_data after validation.
struct BuiltinParams {
  int activation = kTfcActNone;
  int axis = 0;
  int padding = kTfcPaddingValid, stride_h = 1, stride_w = 1, filter_h = 1, filter_w = 1;
};

// Storage of the tensors a partition keeps to itself (produced and consumed inside it, so
// LiteRT never allocates them).
class Graph {
 public:
  virtual ~Graph() {}
  // Data of tensor `index`: the partition's own buffer for an internal tensor, else LiteRT's.
  virtual void* Data(TfcContext* context, int index) = 0;
  virtual size_t Bytes(TfcContext* context, int index) = 0;
  // Floats from one row of tensor `index` to the next: `channels`, except for a view into a
  // wider tensor (the in-place concatenations of partition.cc).
  virtual long long RowStride(int index, int channels) const { return channels; }
};

// How many inputs and outputs an op takes; input i may be absent (index -1) when bit i of
// `optional` is set.
struct Signature {
  const char* name;
  int min_inputs, max_inputs;
  uint32_t optional;
  int num_outputs;
};

class Op {
 public:
  virtual ~Op() {}
  virtual Signature signature() const = 0;
  // Options were parsed in the constructor; a non-empty error() means they were bad.
  // Prepare runs after CheckIo() passed: every index is valid and every tensor has a shape.
  virtual bool Prepare(TfcContext* context, std::string* error) = 0;
  // Eval runs after CheckData() passed: every tensor has data of at least the prepared size.
  virtual bool Eval(TfcContext* context, std::string* error) = 0;
  // Row ops can take an epilogue (float output, one row of channels per output pixel).
  virtual bool CanCarryEpilogue() const { return false; }
  // The tensor the epilogue starts from (the op's float result, before any folded op).
  virtual int ResultTensor() const { return outputs.empty() ? -1 : outputs[0]; }
  const std::string& init_error() const { return init_error_; }

  // Validates the node's tensor indices against the signature and the context (-1 only for
  // optional inputs, everything else in [0, tensors_size)) and that each tensor has a shape.
  bool CheckIo(TfcContext* context, std::string* error) const;
  // Records the bytes every tensor must hold (after Prepare, from the shapes it settled).
  void RecordSizes(TfcContext* context);
  // Before Eval: every present tensor has data and at least the recorded bytes.
  bool CheckData(TfcContext* context, std::string* error) const;

  std::vector<int> inputs, outputs;
  Runtime* runtime = nullptr;
  Graph* graph = nullptr;
  int input_channels = -1;  // channels of a bitpacked input 0 per its producer (-1: unknown)
  int node_index = -1;      // the TFLite node (first one, for fused ops)
  BuiltinParams params;
  Epilogue epilogue;        // row ops only

 protected:
  // Input `i` (nullptr if absent: i beyond the node's inputs, or index -1).
  TfcTensor* Input(TfcContext* context, size_t i) const {
    return i < inputs.size() ? TensorAt(context, inputs[i]) : nullptr;
  }
  TfcTensor* Output(TfcContext* context, size_t i) const { return TensorAt(context, outputs[i]); }
  void* Data(TfcContext* context, int index) const {
    return graph != nullptr ? graph->Data(context, index) : TensorAt(context, index)->data;
  }
  long long RowStride(int index, int channels) const {
    return graph != nullptr ? graph->RowStride(index, channels) : channels;
  }
  // Binds the epilogue to this Eval's data pointers (and the graph's row strides).
  void BindEpilogue(TfcContext* context, BoundEpilogue* bound) const {
    const int c = epilogue.channels;
    bound->Bind(epilogue, runtime->kernels, [&](int t) { return Data(context, t); },
                [&](int t) { return RowStride(t, c); });
  }
  // Prepares the epilogue for a result of shape `shape` (float32); writes the result itself
  // when the epilogue is empty (no fusion).
  bool PrepareEpilogue(TfcContext* context, const std::vector<int>& shape, std::string* error);

  std::string init_error_;
  std::vector<int> checked_;          // every tensor touched (inputs, outputs, epilogue)
  std::vector<size_t> checked_bytes_;
};

std::unique_ptr<Op> CreateOp(OpKind kind, const uint8_t* options, size_t options_size);

}  // namespace tfc

#endif  // TFCOMPRESS_KERNELS_OPS_H_
