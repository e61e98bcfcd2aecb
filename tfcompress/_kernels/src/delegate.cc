// A TFLite delegate that runs LCE's custom ops (LceQuantize, LceDequantize,
// LceBconv2d, LceBMaxPool2d) with tfcompress's kernels inside ai-edge-litert.
//
// Entry points follow TFLite's documented external-delegate interface
// (tflite_plugin_create_delegate / tflite_plugin_destroy_delegate), which
// ai_edge_litert.interpreter.load_delegate() loads with ctypes. The delegate
// runs before the interpreter resolves ops: LiteRT keeps unresolved custom ops
// as placeholders until prepare, so a delegate that claims them makes the
// model runnable. Every claimed node becomes its own delegate kernel, so the
// arena still allocates every tensor between ops.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "kernels.h"
#include "ops.h"
#include "tflite_abi.h"

namespace tfc {
namespace {

struct NodeInfo {
  OpKind kind;
  std::vector<uint8_t> options;
  std::vector<int> inputs, outputs;
};

struct DelegateState {
  TfcDelegate delegate;  // must stay the first member
  Runtime runtime;
  std::map<int, NodeInfo> nodes;
};

DelegateState* StateOf(TfcDelegate* d) { return static_cast<DelegateState*>(d->data_); }

std::vector<int> ToVector(const TfcIntArray* a) {
  std::vector<int> v;
  if (a != nullptr) v.assign(a->data, a->data + a->size);
  return v;
}

int ElementSize(int type) {
  switch (type) {
    case kTfcFloat32: case kTfcInt32: return 4;
    case kTfcInt8: case kTfcUInt8: return 1;
    default: return 0;
  }
}

// Guards against a runtime whose struct layouts differ from tflite_abi.h:
// every tensor record must be self-consistent (a sane shape, and `bytes`
// equal to elements x element size for the plain numeric types). With a wrong
// tensor stride or field order this fails for almost every record.
bool CheckTensorLayout(TfcContext* context, std::string* error) {
  int checked = 0;
  for (size_t i = 0; i < context->tensors_size; ++i) {
    const TfcTensor* t = TensorAt(context, static_cast<int>(i));
    if (t == nullptr || t->dims == nullptr) continue;  // not set up (e.g. unused)
    if (t->dims->size < 0 || t->dims->size > 16) {
      *error = "tensor " + std::to_string(i) + " has rank " + std::to_string(t->dims->size);
      return false;
    }
    const int es = ElementSize(t->type);
    if (es == 0 || (t->data == nullptr && t->allocation_type != kTfcArenaRw &&
                    t->allocation_type != kTfcArenaRwPersistent))
      continue;
    size_t n = 1;
    for (int d = 0; d < t->dims->size; ++d) n *= static_cast<size_t>(t->dims->data[d]);
    if (t->bytes != n * es) {
      *error = "tensor " + std::to_string(i) + " reports " + std::to_string(t->bytes) +
               " bytes for " + std::to_string(n) + " elements of size " + std::to_string(es);
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

// ---------------------------------------------------------------- kernel node
struct KernelNode {
  std::unique_ptr<Op> op;
  std::string name;
  // TFCOMPRESS_KERNELS_PROFILE=1: time every Eval and print a summary when freed.
  bool profile = false;
  std::vector<double> seconds;
};

void* KernelInit(TfcContext* context, const char* buffer, size_t) {
  const TfcDelegateParams* params = reinterpret_cast<const TfcDelegateParams*>(buffer);
  KernelNode* kn = new KernelNode();
  if (params == nullptr || params->nodes_to_replace == nullptr || params->nodes_to_replace->size != 1) {
    kn->name = "?";
    return kn;
  }
  DelegateState* state = StateOf(params->delegate);
  const int node_index = params->nodes_to_replace->data[0];
  auto it = state->nodes.find(node_index);
  if (it == state->nodes.end()) return kn;
  const NodeInfo& info = it->second;
  kn->name = std::string(OpKindName(info.kind)) + " (node " + std::to_string(node_index) + ")";
  const char* profile = getenv("TFCOMPRESS_KERNELS_PROFILE");
  kn->profile = profile != nullptr && strcmp(profile, "1") == 0;
  kn->op = CreateOp(info.kind, info.options.data(), info.options.size());
  if (kn->op) {
    kn->op->inputs = info.inputs;
    kn->op->outputs = info.outputs;
    kn->op->runtime = &state->runtime;
  }
  (void)context;
  return kn;
}

void KernelFree(TfcContext*, void* buffer) {
  KernelNode* kn = static_cast<KernelNode*>(buffer);
  if (kn != nullptr && kn->profile && !kn->seconds.empty()) {
    std::vector<double>& t = kn->seconds;
    std::sort(t.begin(), t.end());
    fprintf(stderr, "tfcompress kernels profile: %-28s %8zu calls, median %9.2f us, p10 %9.2f us\n",
            kn->name.c_str(), t.size(), 1e6 * t[t.size() / 2], 1e6 * t[t.size() / 10]);
  }
  delete kn;
}

int Fail(TfcContext* context, const KernelNode* kn, const std::string& msg) {
  context->ReportError(context, "tfcompress kernels: %s: %s", kn->name.c_str(), msg.c_str());
  return kTfcError;
}

int KernelPrepare(TfcContext* context, TfcNode* node) {
  KernelNode* kn = static_cast<KernelNode*>(node->user_data);
  if (kn == nullptr || !kn->op) return Fail(context, kn, "internal error: node was not initialised");
  if (!kn->op->init_error().empty()) return Fail(context, kn, kn->op->init_error());
  std::string error;
  for (int i : kn->op->inputs)
    if (i >= 0 && static_cast<size_t>(i) >= context->tensors_size)
      return Fail(context, kn, "tensor index out of range");
  if (!kn->op->Prepare(context, &error)) return Fail(context, kn, error);
  return kTfcOk;
}

int KernelInvoke(TfcContext* context, TfcNode* node) {
  KernelNode* kn = static_cast<KernelNode*>(node->user_data);
  std::string error;
  const auto start = kn->profile ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point();
  if (!kn->op->Eval(context, &error)) return Fail(context, kn, error);
  if (kn->profile) {
    kn->seconds.push_back(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  return kTfcOk;
}

const char* KernelProfilingString(const TfcContext*, const TfcNode* node) {
  const KernelNode* kn = static_cast<const KernelNode*>(node->user_data);
  return kn ? kn->name.c_str() : "tfcompress";
}

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
  for (int node_index : plan) {
    TfcNode* node = nullptr;
    TfcRegistration* reg = nullptr;
    if (context->GetNodeAndRegistration(context, node_index, &node, &reg) != kTfcOk) return kTfcError;
    if (reg == nullptr || reg->builtin_code != kTfcBuiltinCustom) continue;
    const OpKind kind = OpKindFromName(reg->custom_name);
    if (kind == kOpUnknown) continue;
    NodeInfo info;
    info.kind = kind;
    const uint8_t* opts = static_cast<const uint8_t*>(node->custom_initial_data);
    if (opts != nullptr && node->custom_initial_data_size > 0)
      info.options.assign(opts, opts + node->custom_initial_data_size);
    info.inputs = ToVector(node->inputs);
    info.outputs = ToVector(node->outputs);
    state->nodes[node_index] = info;
    claimed.push_back(node_index);
  }
  TfcRegistration reg;
  memset(&reg, 0, sizeof(reg));
  reg.init = KernelInit;
  reg.free = KernelFree;
  reg.prepare = KernelPrepare;
  reg.invoke = KernelInvoke;
  reg.profiling_string = KernelProfilingString;
  reg.custom_name = "TfcompressLceKernels";
  reg.version = 1;
  struct {
    int size;
    int data[1];
  } one;
  for (int node_index : claimed) {
    one.size = 1;
    one.data[0] = node_index;
    if (context->ReplaceNodeSubsetsWithDelegateKernels(
            context, reg, reinterpret_cast<const TfcIntArray*>(&one), delegate) != kTfcOk) {
      context->ReportError(context, "tfcompress kernels: could not take over node %d", node_index);
      return kTfcError;
    }
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
    const char* k = keys[i];
    const char* v = values[i];
    if (strcmp(k, "isa") == 0) {
      requested = v;
    } else if (strcmp(k, "num_threads") == 0) {
      char* end = nullptr;
      const long n = strtol(v, &end, 10);
      if (end == v || *end != 0 || n < 0 || n > 256) err = std::string("num_threads must be 0..256, got '") + v + "'";
      else state->runtime.num_threads = static_cast<int>(n);
    } else {
      err = std::string("unknown option '") + k + "' (valid: isa, num_threads)";
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

__attribute__((visibility("default"))) int tfcompress_kernels_abi_version() { return 1; }

}  // extern "C"
