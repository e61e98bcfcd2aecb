// A TFLite delegate that runs LCE's custom ops (LceQuantize, LceDequantize, LceBconv2d,
// LceBMaxPool2d) and the float ops around them with tfcompress's kernels inside ai-edge-litert.
//
// Entry points follow TFLite's documented external-delegate interface
// (tflite_plugin_create_delegate / tflite_plugin_destroy_delegate), which
// ai_edge_litert.interpreter.load_delegate() loads with ctypes. The delegate runs before the
// interpreter resolves ops: LiteRT keeps unresolved custom ops as placeholders until prepare,
// so a delegate that claims them makes the model runnable.
//
// DelegatePrepare claims every LCE op and (option builtins=1, the default) the float builtin
// ops it can run (ADD, SUB, MUL, PRELU, RELU, RELU6, RELU_N1_TO_1, LOGISTIC, CONCATENATION on
// channels, MAX_POOL_2D, AVERAGE_POOL_2D, RESHAPE, FULLY_CONNECTED) after checking their
// types, shapes and parameters; everything else stays with LiteRT (XNNPACK). LiteRT groups
// the claimed nodes into partitions; each becomes one delegate kernel (partition.h), whose
// ops are fused (option fuse=1, the default) and whose inner tensors it allocates itself.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#if defined(_WIN32)
#include <io.h>
#include <fcntl.h>
#define pipe(fds) _pipe(fds, 4096, _O_BINARY)
typedef long ssize_t;
#else
#include <unistd.h>
#endif
#include <stddef.h>

#include <algorithm>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "kernels.h"
#include "op_util.h"
#include "ops.h"
#include "partition.h"
#include "tflite_abi.h"

namespace tfc {
namespace {

struct DelegateState {
  TfcDelegate delegate;  // must stay the first member
  Runtime runtime;
  std::map<int, NodeInfo> nodes;     // claimed nodes by TFLite index
  bool profile = false;
  bool fuse = true;
  bool builtins = true;
  std::vector<Partition*> partitions;  // live partitions, for the profile report
};

DelegateState* StateOf(TfcDelegate* d) { return static_cast<DelegateState*>(d->data_); }

std::vector<int> ToVector(const TfcIntArray* a) {
  std::vector<int> v;
  if (a != nullptr) v.assign(a->data, a->data + a->size);
  return v;
}

int ElementSize(int type) { return static_cast<int>(TypeSize(type)); }

// Copies n bytes at `src` into `dst` without faulting when `src` is not readable: the bytes
// go through a pipe, and write() reports EFAULT for an unmapped source instead of crashing.
// Used only by the layout check, on pointers read from structs whose layout is not yet known.
class SafeReader {
 public:
  SafeReader() {
    if (pipe(fds_) != 0) fds_[0] = fds_[1] = -1;
  }
  ~SafeReader() {
    if (fds_[0] >= 0) close(fds_[0]);
    if (fds_[1] >= 0) close(fds_[1]);
  }
  bool Read(const void* src, void* dst, size_t n) {
    if (fds_[0] < 0 || src == nullptr || n > 4096) return false;
    const ssize_t w = write(fds_[1], src, n);
    if (w != static_cast<ssize_t>(n)) {
      if (w > 0) Drain(static_cast<size_t>(w));
      return false;
    }
    return read(fds_[0], dst, n) == static_cast<ssize_t>(n);
  }

 private:
  void Drain(size_t n) {
    char buf[256];
    while (n > 0) {
      const ssize_t r = read(fds_[0], buf, n < sizeof(buf) ? n : sizeof(buf));
      if (r <= 0) return;
      n -= static_cast<size_t>(r);
    }
  }
  int fds_[2];
};

// Guards against a runtime whose struct layouts differ from tflite_abi.h, before any tensor
// is used: every tensor record that can be read safely must be self-consistent (a known type,
// a readable shape of rank <= 16 with non-negative sizes, a known allocation type, and `bytes`
// equal to elements x element size for the plain numeric types). With a wrong tensor stride
// or field order this fails for almost every record.
//
// Where the runtime leaves GetTensor unset (LiteRT), records are found with the assumed
// stride kTfcTensorSize. The array really holds tensors_size records of the *true* size,
// which is at least sizeof(TfcTensor) if the leading fields are right, so only records that
// end within tensors_size * sizeof(TfcTensor) bytes are certainly inside it: those are
// checked (more than half of them), and every field is read through SafeReader.
bool CheckTensorLayout(TfcContext* context, std::string* error) {
  const size_t n = context->tensors_size;
  if (n == 0 || n > (size_t{1} << 24)) {
    *error = "implausible tensor count " + std::to_string(n);
    return false;
  }
  size_t limit = n;
  if (context->GetTensor == nullptr) {
    if (context->tensors == nullptr) {
      *error = "the context has no tensor array";
      return false;
    }
    const size_t safe_bytes = n * sizeof(TfcTensor);
    limit = safe_bytes >= sizeof(TfcTensor) ? (safe_bytes - sizeof(TfcTensor)) / kTfcTensorSize + 1 : 0;
    limit = std::min(limit, n);
  }
  SafeReader reader;
  int checked = 0;
  for (size_t i = 0; i < limit; ++i) {
    TfcTensor t;
    const TfcTensor* p = context->GetTensor != nullptr
                             ? context->GetTensor(context, static_cast<int>(i))
                             : reinterpret_cast<const TfcTensor*>(
                                   static_cast<const char*>(context->tensors) + i * kTfcTensorSize);
    if (p == nullptr) continue;
    if (!reader.Read(p, &t, sizeof(t))) {
      *error = "tensor record " + std::to_string(i) + " is not readable";
      return false;
    }
    if (t.type < 0 || t.type > 32 || t.allocation_type < 0 || t.allocation_type > 16) {
      *error = "tensor " + std::to_string(i) + " has type " + std::to_string(t.type) +
               " and allocation type " + std::to_string(t.allocation_type);
      return false;
    }
    if (t.dims == nullptr) continue;  // not set up (e.g. unused)
    int rank = -1;
    if (!reader.Read(t.dims, &rank, sizeof(rank)) || rank < 0 || rank > 16) {
      *error = "tensor " + std::to_string(i) + " has an unreadable shape or rank " + std::to_string(rank);
      return false;
    }
    int dims[16];
    const char* dims_data = reinterpret_cast<const char*>(t.dims) + offsetof(TfcIntArray, data);
    if (rank > 0 && !reader.Read(dims_data, dims, sizeof(int) * rank)) {
      *error = "tensor " + std::to_string(i) + " has an unreadable shape";
      return false;
    }
    size_t elements = 1;
    for (int d = 0; d < rank; ++d) {
      if (dims[d] < 0) {
        *error = "tensor " + std::to_string(i) + " has a negative dimension";
        return false;
      }
      elements *= static_cast<size_t>(dims[d]);
    }
    const int es = ElementSize(t.type);
    if (es == 0 || (t.data == nullptr && t.allocation_type != kTfcArenaRw &&
                    t.allocation_type != kTfcArenaRwPersistent))
      continue;
    // Constant tensors point into the model's buffer, which may be larger than the shape
    // needs (LiteRT allows that); arena tensors are sized exactly.
    const bool exact = t.allocation_type != kTfcMmapRo && t.allocation_type != kTfcPersistentRo;
    if (exact ? t.bytes != elements * es : t.bytes < elements * es) {
      *error = "tensor " + std::to_string(i) + " reports " + std::to_string(t.bytes) +
               " bytes for " + std::to_string(elements) + " elements of size " + std::to_string(es);
      return false;
    }
    ++checked;
  }
  if (checked == 0) {
    *error = "no tensor could be checked";
    return false;
  }
  return true;
}

// ------------------------------------------------------------------ claiming
// Whether operand dims `d` broadcast to `out` the way the epilogue supports (epilogue.cc).
bool Broadcastable(const std::vector<int>& d, const std::vector<int>& out) {
  if (out.empty()) return false;
  if (d == out) return true;
  const long long n = NumElements(d);
  if (n == 1) return true;
  bool leading_ones = true;
  for (size_t i = 0; i + 1 < d.size(); ++i) leading_ones &= d[i] == 1;
  if (!d.empty() && leading_ones && d.back() == out.back()) return true;
  return d.size() == out.size() && d.size() >= 2 && d[0] == out[0] && d.back() == out.back() &&
         n == static_cast<long long>(out[0]) * out.back();
}

bool ValidShape(const std::vector<int>& d) {
  std::string unused;
  return CheckShape(d, -1, "", "", &unused);
}

// Checks a builtin node and fills `info` (kind, params, main input); false leaves the node
// to LiteRT.
bool ClaimBuiltin(TfcContext* context, const TfcNode* node, int code, NodeInfo* info) {
  const OpKind kind = OpKindFromBuiltin(code);
  if (kind == kOpUnknown) return false;
  const int n_tensors = static_cast<int>(context->tensors_size);
  const std::vector<int> ins = ToVector(node->inputs), outs = ToVector(node->outputs);
  if (outs.size() != 1 || ins.empty()) return false;
  for (int t : outs)
    if (t < 0 || t >= n_tensors) return false;
  for (size_t i = 0; i < ins.size(); ++i)
    if (ins[i] >= n_tensors || (ins[i] < 0 && !(kind == kOpFullyConnected && i == 2)))
      return false;
  auto dims = [&](int t) { return Dims(TensorAt(context, t)); };
  auto is_float = [&](int t) { return TensorAt(context, t)->type == kTfcFloat32; };
  const std::vector<int> out = dims(outs[0]);
  if (!is_float(outs[0]) || !ValidShape(out)) return false;
  info->kind = kind;
  info->inputs = ins;
  info->outputs = outs;
  const void* data = node->builtin_data;
  auto activation_ok = [](int a) { return a >= kTfcActNone && a <= kTfcActRelu6; };
  switch (kind) {
    case kOpAdd: case kOpSub: case kOpMul: case kOpPrelu: {
      if (ins.size() != 2 || !is_float(ins[0]) || !is_float(ins[1])) return false;
      const std::vector<int> a = dims(ins[0]), b = dims(ins[1]);
      if (kind != kOpPrelu) {
        if (data == nullptr) return false;
        info->params.activation = static_cast<const TfcActivationParams*>(data)->activation;
        if (!activation_ok(info->params.activation)) return false;
      }
      if (a == out) {
        info->main = 0;
        info->both_full = kind != kOpPrelu && b == out;
        return Broadcastable(b, out);
      }
      if (b == out && kind != kOpPrelu) {
        info->main = 1;
        return Broadcastable(a, out);
      }
      return false;
    }
    case kOpRelu: case kOpRelu6: case kOpReluN1To1: case kOpLogistic:
      return ins.size() == 1 && is_float(ins[0]) && dims(ins[0]) == out;
    case kOpConcat: {
      if (data == nullptr) return false;
      const TfcConcatenationParams* p = static_cast<const TfcConcatenationParams*>(data);
      const int rank = static_cast<int>(out.size());
      const int axis = p->axis < 0 ? p->axis + rank : p->axis;
      if (axis != rank - 1 || !activation_ok(p->activation)) return false;
      info->params.axis = axis;
      info->params.activation = p->activation;
      int channels = 0;
      for (int t : ins) {
        const std::vector<int> d = dims(t);
        if (!is_float(t) || d.size() != out.size() || !ValidShape(d) ||
            !std::equal(d.begin(), d.end() - 1, out.begin()))
          return false;
        channels += d.back();
      }
      return channels == out.back();
    }
    case kOpMaxPool: case kOpAvgPool: {
      if (data == nullptr || ins.size() != 1 || !is_float(ins[0])) return false;
      const TfcPoolParams* p = static_cast<const TfcPoolParams*>(data);
      const std::vector<int> d = dims(ins[0]);
      if (d.size() != 4 || out.size() != 4 || !ValidShape(d) || !activation_ok(p->activation) ||
          (p->padding != kTfcPaddingSame && p->padding != kTfcPaddingValid))
        return false;
      for (int v : {p->stride_height, p->stride_width, p->filter_height, p->filter_width})
        if (v < 1 || v > 4096) return false;
      int oh, ow, pt, pl;
      const bool same = p->padding == kTfcPaddingSame;
      if (!OutputSize(d[1], p->filter_height, p->stride_height, 1, same, &oh, &pt) ||
          !OutputSize(d[2], p->filter_width, p->stride_width, 1, same, &ow, &pl))
        return false;
      if (out != std::vector<int>{d[0], oh, ow, d[3]}) return false;  // also checks the layout
      BuiltinParams& bp = info->params;
      bp.padding = p->padding, bp.stride_h = p->stride_height, bp.stride_w = p->stride_width;
      bp.filter_h = p->filter_height, bp.filter_w = p->filter_width, bp.activation = p->activation;
      return true;
    }
    case kOpReshape: {
      const TfcTensor* in = TensorAt(context, ins[0]);
      return is_float(ins[0]) && NumElements(dims(ins[0])) == NumElements(out) &&
             ValidShape(dims(ins[0])) && in->type == TensorAt(context, outs[0])->type;
    }
    case kOpFullyConnected: {
      if (data == nullptr || ins.size() < 2 || ins.size() > 3) return false;
      const TfcFullyConnectedParams* p = static_cast<const TfcFullyConnectedParams*>(data);
      if (!activation_ok(p->activation) || p->weights_format != 0) return false;
      const TfcTensor* w = TensorAt(context, ins[1]);
      const std::vector<int> dw = dims(ins[1]), di = dims(ins[0]);
      if (!is_float(ins[0]) || w->type != kTfcFloat32 || !IsConstant(w) || dw.size() != 2 ||
          !ValidShape(dw) || !ValidShape(di) || NumElements(di) % dw[1] != 0)
        return false;
      if (ins.size() == 3 && ins[2] >= 0) {
        const TfcTensor* b = TensorAt(context, ins[2]);
        if (b->type != kTfcFloat32 || !IsConstant(b) || NumElements(dims(ins[2])) != dw[0])
          return false;
      }
      if (out.back() != dw[0] || NumElements(out) != NumElements(di) / dw[1] * dw[0]) return false;
      // Large layers (a classifier head) stay with XNNPACK, whose packed GEMM is faster; the
      // small ones inside blocks (squeeze-and-excite scales) are taken so the block can fuse.
      if (static_cast<long long>(dw[0]) * dw[1] > 65536) return false;
      info->params.activation = p->activation;
      return true;
    }
    default:
      return false;
  }
}

// ---------------------------------------------------------------- kernel node
void* KernelInit(TfcContext* context, const char* buffer, size_t) {
  const TfcDelegateParams* params = reinterpret_cast<const TfcDelegateParams*>(buffer);
  if (params == nullptr || params->nodes_to_replace == nullptr || params->delegate == nullptr) {
    Partition* p = new Partition();
    p->init_error = "internal error: no delegate parameters";
    return p;
  }
  DelegateState* state = StateOf(params->delegate);
  std::vector<NodeInfo> nodes;
  for (int index : ToVector(params->nodes_to_replace)) {
    auto it = state->nodes.find(index);
    if (it != state->nodes.end()) nodes.push_back(it->second);
  }
  std::sort(nodes.begin(), nodes.end(),
            [](const NodeInfo& a, const NodeInfo& b) { return a.position < b.position; });
  std::unique_ptr<Partition> part =
      BuildPartition(nodes, ToVector(params->output_tensors), context, &state->runtime, state->fuse);
  part->profile = state->profile;
  part->registry = &state->partitions;
  state->partitions.push_back(part.get());
  return part.release();
}

void KernelFree(TfcContext* context, void* buffer) {
  Partition* part = static_cast<Partition*>(buffer);
  (void)context;
  if (part != nullptr && part->registry != nullptr) {
    auto& v = *part->registry;
    v.erase(std::remove(v.begin(), v.end(), part), v.end());
  }
  delete part;
}

int Fail(TfcContext* context, const std::string& msg) {
  context->ReportError(context, "tfcompress kernels: %s", msg.c_str());
  return kTfcError;
}

int KernelPrepare(TfcContext* context, TfcNode* node) {
  Partition* part = static_cast<Partition*>(node->user_data);
  if (part == nullptr) return Fail(context, "internal error: partition was not initialised");
  std::vector<int> external = ToVector(node->inputs);
  const std::vector<int> outs = ToVector(node->outputs);
  external.insert(external.end(), outs.begin(), outs.end());
  std::string error;
  if (!part->Prepare(context, external, &error)) return Fail(context, error);
  return kTfcOk;
}

int KernelInvoke(TfcContext* context, TfcNode* node) {
  Partition* part = static_cast<Partition*>(node->user_data);
  if (part == nullptr) return Fail(context, "internal error: partition was not initialised");
  std::string error;
  if (!part->Invoke(context, &error)) return Fail(context, error);
  return kTfcOk;
}

const char* KernelProfilingString(const TfcContext*, const TfcNode*) { return "tfcompress"; }

// ------------------------------------------------------------------- delegate
int DelegatePrepare(TfcContext* context, TfcDelegate* delegate) {
  DelegateState* state = StateOf(delegate);
  std::string layout_error;
  if (!CheckTensorLayout(context, &layout_error)) {
    context->ReportError(context,
                         "tfcompress kernels: LiteRT tensor layout check failed (%s); these "
                         "kernels were written for the TFLite C ABI of ai-edge-litert 2.3",
                         layout_error.c_str());
    return kTfcError;
  }
  TfcIntArray* plan_array = nullptr;
  if (context->GetExecutionPlan(context, &plan_array) != kTfcOk) return kTfcError;
  const std::vector<int> plan = ToVector(plan_array);
  std::vector<int> claimed;
  std::map<int, int> packed_channels;  // bitpacked tensor -> channels
  const int n_tensors = static_cast<int>(context->tensors_size);
  auto valid = [&](const std::vector<int>& v, size_t i) {
    return i < v.size() && v[i] >= 0 && v[i] < n_tensors;
  };
  for (size_t position = 0; position < plan.size(); ++position) {
    const int node_index = plan[position];
    TfcNode* node = nullptr;
    TfcRegistration* reg = nullptr;
    if (context->GetNodeAndRegistration(context, node_index, &node, &reg) != kTfcOk) return kTfcError;
    if (reg == nullptr || node == nullptr) continue;
    NodeInfo info;
    info.index = node_index;
    info.position = static_cast<int>(position);
    if (reg->builtin_code == kTfcBuiltinCustom) {
      info.kind = OpKindFromName(reg->custom_name);
      if (info.kind == kOpUnknown) continue;
      const uint8_t* opts = static_cast<const uint8_t*>(node->custom_initial_data);
      if (opts != nullptr && node->custom_initial_data_size > 0)
        info.options.assign(opts, opts + node->custom_initial_data_size);
      info.inputs = ToVector(node->inputs);
      info.outputs = ToVector(node->outputs);
    } else if (!state->builtins || !ClaimBuiltin(context, node, reg->builtin_code, &info)) {
      continue;
    }
    // How many channels each bitpacked tensor holds is known only from its producer: an
    // LceQuantize packs its input's last dimension, an LceBconv2d with int32 output writes
    // one bit per filter, an LceBMaxPool2d keeps its input's channels.
    const OpKind kind = info.kind;
    if (valid(info.inputs, 0)) {
      auto c = packed_channels.find(info.inputs[0]);
      if (c != packed_channels.end()) info.input_channels = c->second;
    }
    if (valid(info.outputs, 0)) {
      const TfcTensor* out = TensorAt(context, info.outputs[0]);
      int channels = -1;
      if (kind == kOpQuantize && valid(info.inputs, 0)) {
        const TfcTensor* in = TensorAt(context, info.inputs[0]);
        if (in->dims != nullptr && in->dims->size > 0) channels = in->dims->data[in->dims->size - 1];
      } else if (kind == kOpBconv2d && valid(info.inputs, 1) && out->type == kTfcInt32) {
        const TfcTensor* f = TensorAt(context, info.inputs[1]);
        if (f->dims != nullptr && f->dims->size == 4) channels = f->dims->data[0];
      } else if (kind == kOpBMaxPool2d) {
        channels = info.input_channels;
      }
      if (channels > 0) packed_channels[info.outputs[0]] = channels;
    }
    state->nodes[node_index] = info;
    claimed.push_back(node_index);
  }
  if (claimed.empty()) return kTfcOk;
  TfcRegistration reg;
  memset(&reg, 0, sizeof(reg));
  reg.init = KernelInit;
  reg.free = KernelFree;
  reg.prepare = KernelPrepare;
  reg.invoke = KernelInvoke;
  reg.profiling_string = KernelProfilingString;
  reg.custom_name = "TfcompressLceKernels";
  reg.version = 1;
  std::vector<int> array(claimed.size() + 1);
  array[0] = static_cast<int>(claimed.size());
  std::copy(claimed.begin(), claimed.end(), array.begin() + 1);
  if (context->ReplaceNodeSubsetsWithDelegateKernels(
          context, reg, reinterpret_cast<const TfcIntArray*>(array.data()), delegate) != kTfcOk) {
    context->ReportError(context,
                         "tfcompress kernels: LiteRT refused to hand %zu node(s) to the kernels; "
                         "check the model's tensor indices", claimed.size());
    return kTfcError;
  }
  return kTfcOk;
}

}  // namespace
}  // namespace tfc

extern "C" {

__attribute__((visibility("default"))) void* tflite_plugin_create_delegate(
    char** keys, char** values, size_t num_options, void (*report_error)(const char*)) {
  using namespace tfc;
  num_options &= 0xffffffffu;  // ctypes passes a C int
  std::unique_ptr<DelegateState> state(new DelegateState());
  memset(&state->delegate, 0, sizeof(state->delegate));
  state->delegate.data_ = state.get();
  state->delegate.Prepare = DelegatePrepare;
  // kTfLiteDelegateFlagsAllowDynamicTensors: without it LiteRT prepares every
  // op *before* asking the delegate, and the still-unresolved Lce* ops fail
  // there (the Flex delegate relies on the same flag). Our kernels take
  // shapes at prepare time and resize outputs themselves.
  state->delegate.flags = 1;
  const Isa best = DetectIsa();
  Isa isa = best;
  const char* requested = getenv("TFCOMPRESS_KERNELS_ISA");
  std::string err;
  for (size_t i = 0; i < num_options; ++i) {
    const char* k = keys ? keys[i] : nullptr;
    const char* v = values ? values[i] : nullptr;
    if (k == nullptr || v == nullptr) {
      err = "null option key or value";
      break;
    }
    if (strcmp(k, "isa") == 0) {
      requested = v;
    } else if (strcmp(k, "profile") == 0) {
      state->profile = strcmp(v, "1") == 0;
    } else if (strcmp(k, "fuse") == 0) {
      state->fuse = strcmp(v, "0") != 0;
    } else if (strcmp(k, "builtins") == 0) {
      state->builtins = strcmp(v, "0") != 0;
    } else if (strcmp(k, "num_threads") == 0) {
      char* end = nullptr;
      const long n = strtol(v, &end, 10);
      if (end == v || *end != 0 || n < 0 || n > 256) err = std::string("num_threads must be 0..256, got '") + v + "'";
      else state->runtime.num_threads = static_cast<int>(n);
    } else {
      err = std::string("unknown option '") + k +
            "' (valid: isa, num_threads, profile, fuse, builtins)";
    }
  }
  if (err.empty() && requested != nullptr && *requested != 0 && strcmp(requested, "auto") != 0) {
    if (!ParseIsa(requested, &isa)) {
      err = std::string("unknown ISA level '") + requested + "' (valid: auto, portable, avx2, avx512)";
    } else if (isa > best || KernelsFor(isa) == nullptr) {
      err = std::string("ISA level '") + requested + "' is not supported by this CPU (best: " +
            IsaName(best) + ")";
    }
  }
  if (!err.empty()) {
    if (report_error) report_error(("tfcompress kernels: " + err).c_str());
    return nullptr;
  }
  state->runtime.isa = isa;
  state->runtime.kernels = KernelsFor(isa);
  DelegateState* raw = state.release();
  return &raw->delegate;
}

__attribute__((visibility("default"))) void tflite_plugin_destroy_delegate(void* delegate) {
  if (delegate == nullptr) return;
  delete tfc::StateOf(static_cast<TfcDelegate*>(delegate));
}

// Introspection for Python (ctypes).
__attribute__((visibility("default"))) const char* tfcompress_kernels_best_isa() {
  return tfc::IsaName(tfc::DetectIsa());
}

__attribute__((visibility("default"))) int tfcompress_kernels_abi_version() { return 2; }

// The profile of a delegate created with profile=1, as JSON
// [{"name": ..., "calls": ..., "seconds": ...}, ...] in graph order. Writes at most `len`
// bytes (NUL-terminated) and returns the length the whole text needs.
__attribute__((visibility("default"))) int tfcompress_kernels_profile_json(void* delegate, char* buf,
                                                                         int len) {
  if (delegate == nullptr) return -1;
  tfc::DelegateState* state = tfc::StateOf(static_cast<TfcDelegate*>(delegate));
  std::string out = "[";
  bool first = true;
  for (const tfc::Partition* part : state->partitions) {
    for (const tfc::Partition::Entry& e : part->ops) {
      char row[768];
      std::string name;
      for (char c : e.name) name += (c == '"' || c == '\\') ? '_' : c;
      snprintf(row, sizeof(row),
               "%s{\"name\": \"%s\", \"calls\": %lld, \"seconds\": %.9g, "
               "\"cpu_seconds\": %.9g, \"min_seconds\": %.9g}",
               first ? "" : ", ", name.c_str(), e.calls, e.seconds, e.cpu_seconds, e.min_seconds);
      out += row;
      first = false;
    }
  }
  out += "]";
  if (buf != nullptr && len > 0) {
    const size_t n = std::min(out.size(), static_cast<size_t>(len - 1));
    memcpy(buf, out.data(), n);
    buf[n] = 0;
  }
  return static_cast<int>(out.size());
}

__attribute__((visibility("default"))) void tfcompress_kernels_profile_reset(void* delegate) {
  if (delegate == nullptr) return;
  tfc::DelegateState* state = tfc::StateOf(static_cast<TfcDelegate*>(delegate));
  for (tfc::Partition* part : state->partitions)
    for (tfc::Partition::Entry& e : part->ops)
      e.calls = 0, e.seconds = e.cpu_seconds = e.min_seconds = 0.0;
}

}  // extern "C"
