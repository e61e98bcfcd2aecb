// The four LCE ops as delegate-kernel objects: parse options (Init), check
// tensors and precompute (Prepare), run (Eval).
#ifndef TFCOMPRESS_KERNELS_OPS_H_
#define TFCOMPRESS_KERNELS_OPS_H_

#include <memory>
#include <string>
#include <vector>

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
};

enum OpKind { kOpQuantize, kOpDequantize, kOpBconv2d, kOpBMaxPool2d, kOpUnknown };

OpKind OpKindFromName(const char* custom_name);
const char* OpKindName(OpKind kind);

class Op {
 public:
  virtual ~Op() {}
  // Options were parsed in the constructor; a non-empty error() means they were bad.
  virtual bool Prepare(TfcContext* context, std::string* error) = 0;
  virtual bool Eval(TfcContext* context, std::string* error) = 0;
  const std::string& init_error() const { return init_error_; }

  std::vector<int> inputs, outputs;
  Runtime* runtime = nullptr;

 protected:
  std::string init_error_;
};

std::unique_ptr<Op> CreateOp(OpKind kind, const uint8_t* options, size_t options_size);

}  // namespace tfc

#endif  // TFCOMPRESS_KERNELS_OPS_H_
