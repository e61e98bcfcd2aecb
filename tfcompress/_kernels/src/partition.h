// A partition: the connected group of claimed nodes LiteRT hands to one delegate kernel.
// BuildPartition turns its nodes into ops and fuses them (fusion rules in partition.cc); the
// partition owns the tensors that never leave it.
#ifndef TFCOMPRESS_KERNELS_PARTITION_H_
#define TFCOMPRESS_KERNELS_PARTITION_H_

#include <stdint.h>

#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "op_util.h"
#include "ops.h"
#include "tflite_abi.h"

namespace tfc {

// A claimed TFLite node, as DelegatePrepare saw it.
struct NodeInfo {
  int index = -1;                 // TFLite node index
  int position = -1;              // position in the execution plan
  OpKind kind = kOpUnknown;
  std::vector<uint8_t> options;   // custom options (LCE ops)
  std::vector<int> inputs, outputs;
  BuiltinParams params;           // builtin ops
  int main = 0;                   // elementwise ops: the input that has the output's shape
  bool both_full = false;         // binary elementwise: both inputs have the output's shape
  int input_channels = -1;        // channels in a bitpacked input 0, from its producer
};

class Partition : public Graph {
 public:
  void* Data(TfcContext* context, int index) override;
  size_t Bytes(TfcContext* context, int index) override;
  long long RowStride(int index, int channels) const override;

  // Tensor `index` is the column slice starting at `offset` of the wider tensor `root`
  // (`root_channels` per row): the in-place concatenation chains.
  struct View {
    int root;
    int offset;
    int root_channels;
  };
  std::unordered_map<int, View> views;

  // Checks and prepares every op, then sizes the tensors the partition keeps to itself
  // (everything the ops touch that is not in `external`: the partition node's inputs and
  // outputs, which LiteRT allocates).
  bool Prepare(TfcContext* context, const std::vector<int>& external, std::string* error);
  bool Invoke(TfcContext* context, std::string* error);

  struct Entry {
    std::unique_ptr<Op> op;
    std::string name;  // e.g. "LceBconv2d+ADD+LceQuantize (node 4)"
    long long calls = 0;
    double seconds = 0.0;      // wall time, summed over calls
    double cpu_seconds = 0.0;  // CPU time of the calling thread (robust on a loaded machine)
    double min_seconds = 0.0;  // fastest call
  };
  std::vector<Entry> ops;
  bool profile = false;
  bool prepared = false;
  std::string init_error;
  std::vector<Partition*>* registry = nullptr;  // the delegate's list of live partitions

 private:
  struct Slot {
    size_t offset = 0, bytes = 0;
  };
  // The partition's own tensors share one arena: tensors whose lifetimes (first write to last
  // read, in op order) do not overlap may share memory, which keeps the working set in cache.
  std::unordered_map<int, Slot> internal_;
  AlignedArray<uint8_t> arena_;
  size_t arena_bytes_ = 0;
};

// Builds the ops of a partition from its nodes (in execution order). With `fuse`, float
// elementwise ops are folded into the row op that produces their main input and LceQuantize
// into the op that produces its input; `outputs` are the tensors read outside the partition.
std::unique_ptr<Partition> BuildPartition(const std::vector<NodeInfo>& nodes,
                                          const std::vector<int>& outputs,
                                          const TfcContext* context, Runtime* runtime, bool fuse);

}  // namespace tfc

#endif  // TFCOMPRESS_KERNELS_PARTITION_H_
