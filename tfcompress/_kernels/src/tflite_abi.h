// Minimal declarations of the TensorFlow Lite C ABI that a delegate needs.
//
// Written for tfcompress against the documented TFLite C interface
// (tensorflow/lite/core/c/common.h, "semi-ABI stable": fields are only ever
// appended, never reordered). Only the leading fields we use are declared for
// structs that the runtime allocates (TfLiteContext, TfLiteNode,
// TfLiteTensor, TfLiteIntArray); structs that *we* hand to the runtime
// (TfLiteRegistration, TfLiteDelegate) are declared in full and padded with
// zeroed reserved space so that a runtime with more trailing fields reads
// zeros (= "feature not used") there.
//
// Tensors are fetched with `context->GetTensor` where the runtime sets it; LiteRT leaves it
// unset, so the tensor array is indexed with kTfcTensorSize, but only after
// CheckTensorLayout (delegate.cc) has verified the records it can read without leaving the
// array (whatever the true record size) through a fault-free reader, so a layout mismatch
// fails loudly instead of computing garbage. The Python loader additionally refuses
// ai-edge-litert releases other than the tested ones unless the user opts in.
#ifndef TFCOMPRESS_KERNELS_TFLITE_ABI_H_
#define TFCOMPRESS_KERNELS_TFLITE_ABI_H_

#include <stddef.h>
#include <stdint.h>

extern "C" {

typedef enum { kTfcOk = 0, kTfcError = 1 } TfcStatus;  // TfLiteStatus values

// TfLiteType values used here.
enum {
  kTfcFloat32 = 1,
  kTfcInt32 = 2,
  kTfcUInt8 = 3,
  kTfcBool = 6,
  kTfcInt8 = 9,
};

// TfLiteAllocationType values used here.
enum { kTfcMmapRo = 1, kTfcArenaRw = 2, kTfcArenaRwPersistent = 3, kTfcPersistentRo = 5 };

enum { kTfcBuiltinCustom = 32, kTfcOptionalTensor = -1 };

// BuiltinOperator codes of the builtin ops these kernels can take over (schema.fbs).
enum {
  kTfcBuiltinAdd = 0,
  kTfcBuiltinAveragePool2d = 1,
  kTfcBuiltinConcatenation = 2,
  kTfcBuiltinFullyConnected = 9,
  kTfcBuiltinLogistic = 14,
  kTfcBuiltinMaxPool2d = 17,
  kTfcBuiltinMul = 18,
  kTfcBuiltinRelu = 19,
  kTfcBuiltinReluN1To1 = 20,
  kTfcBuiltinRelu6 = 21,
  kTfcBuiltinReshape = 22,
  kTfcBuiltinSub = 41,
  kTfcBuiltinPrelu = 54,
};

// TfLiteFusedActivation and TfLitePadding values (builtin_op_data.h; note that TfLitePadding
// differs from the flatbuffer's Padding enum).
enum { kTfcActNone = 0, kTfcActRelu = 1, kTfcActReluN1To1 = 2, kTfcActRelu6 = 3 };
enum { kTfcPaddingSame = 1, kTfcPaddingValid = 2 };

// Leading parts of the builtin parameter structs LiteRT parses into TfLiteNode::builtin_data
// (tensorflow/lite/core/c/builtin_op_data.h). They are only trusted after checks: every
// value must be in range and the shapes they imply must equal the tensors' shapes, or the
// node is left to LiteRT.
struct TfcActivationParams {  // TfLiteAddParams, TfLiteSubParams, TfLiteMulParams
  int activation;
};
struct TfcConcatenationParams {
  int axis;
  int activation;
};
struct TfcPoolParams {
  int padding;
  int stride_width;
  int stride_height;
  int filter_width;
  int filter_height;
  int activation;
};
struct TfcFullyConnectedParams {
  int activation;
  int weights_format;
  bool keep_num_dims;
  bool asymmetric_quantize_inputs;
};

struct TfcIntArray {
  int size;
  int data[1];  // really a flexible array of `size` ints
};

struct TfcQuantParams {
  float scale;
  int32_t zero_point;
};

// Leading part of TfLiteTensor (we never take its sizeof).
struct TfcTensor {
  int type;
  void* data;
  TfcIntArray* dims;
  TfcQuantParams params;
  int allocation_type;
  size_t bytes;
  const void* allocation;
  const char* name;
};

// sizeof(TfLiteTensor) in the (non TF_LITE_STATIC_MEMORY) layout of TF 2.21 /
// LiteRT 2.3: type, data, dims, params, allocation_type, bytes, allocation,
// name, delegate, buffer_handle, data_is_stale, is_variable, quantization
// {type, params}, sparsity, dims_signature. Needed only where the runtime
// leaves TfLiteContext::GetTensor unset (LiteRT's interpreter does): then the
// tensor array is indexed with this stride, after CheckTensorLayout() has
// verified every tensor record in the context.
constexpr size_t kTfcTensorSize = 112;
static_assert(sizeof(TfcTensor) <= kTfcTensorSize, "tensor prefix larger than the tensor");

// Leading part of TfLiteNode.
struct TfcNode {
  TfcIntArray* inputs;
  TfcIntArray* outputs;
  TfcIntArray* intermediates;
  TfcIntArray* temporaries;
  void* user_data;
  void* builtin_data;
  const void* custom_initial_data;
  int custom_initial_data_size;
};

struct TfcContext;
struct TfcDelegate;

// TfLiteRegistration (all fields as of TF 2.21 / LiteRT 2.3) + reserved zeros.
struct TfcRegistration {
  void* (*init)(TfcContext* context, const char* buffer, size_t length);
  void (*free)(TfcContext* context, void* buffer);
  int (*prepare)(TfcContext* context, TfcNode* node);
  int (*invoke)(TfcContext* context, TfcNode* node);
  const char* (*profiling_string)(const TfcContext* context, const TfcNode* node);
  int32_t builtin_code;
  const char* custom_name;
  int version;
  void* registration_external;
  void* (*async_kernel)(TfcContext* context, TfcNode* node);
  uint64_t inplace_operator;
  uint64_t reserved[8];
};

// TfLiteDelegateParams: what a delegate kernel's init receives as `buffer`.
struct TfcDelegateParams {
  TfcDelegate* delegate;
  TfcIntArray* nodes_to_replace;
  TfcIntArray* input_tensors;
  TfcIntArray* output_tensors;
};

// Leading part of TfLiteContext, up to the members we call.
struct TfcContext {
  size_t tensors_size;
  int (*GetExecutionPlan)(TfcContext* context, TfcIntArray** execution_plan);
  void* tensors;  // TfLiteTensor array: index with kTfcTensorSize (see TensorAt)
  void* impl_;
  int (*ResizeTensor)(TfcContext*, TfcTensor* tensor, TfcIntArray* new_size);
  void (*ReportError)(TfcContext*, const char* msg, ...);
  int (*AddTensors)(TfcContext*, int tensors_to_add, int* first_new_tensor_index);
  int (*GetNodeAndRegistration)(TfcContext*, int node_index, TfcNode** node,
                                TfcRegistration** registration);
  int (*ReplaceNodeSubsetsWithDelegateKernels)(TfcContext*, TfcRegistration registration,
                                               const TfcIntArray* nodes_to_replace,
                                               TfcDelegate* delegate);
  int recommended_num_threads;
  void* (*GetExternalContext)(TfcContext*, int);
  void (*SetExternalContext)(TfcContext*, int, void*);
  bool allow_fp32_relax_to_fp16;
  void* profiler;
  void* (*AllocatePersistentBuffer)(TfcContext* ctx, size_t bytes);
  int (*AllocateBufferForEval)(TfcContext* ctx, size_t bytes, void** ptr);
  int (*RequestScratchBufferInArena)(TfcContext* ctx, size_t bytes, int* buffer_idx);
  void* (*GetScratchBuffer)(TfcContext* ctx, int buffer_idx);
  int (*ResizeTensorExplicit)(TfcContext* ctx, TfcTensor* tensor, int dims, const int* shape);
  int (*PreviewDelegatePartitioning)(TfcContext* context, const TfcIntArray* nodes_to_replace,
                                     TfcDelegateParams** partition_params_array,
                                     int* num_partitions);
  TfcTensor* (*GetTensor)(const TfcContext* context, int tensor_idx);
};

// TfLiteDelegate (all fields) + reserved zeros.
struct TfcDelegate {
  void* data_;
  int (*Prepare)(TfcContext* context, TfcDelegate* delegate);
  int (*CopyFromBufferHandle)(TfcContext*, TfcDelegate*, int, TfcTensor*);
  int (*CopyToBufferHandle)(TfcContext*, TfcDelegate*, int, TfcTensor*);
  void (*FreeBufferHandle)(TfcContext*, TfcDelegate*, int*);
  int64_t flags;
  void* opaque_delegate_builder;
  uint64_t reserved[8];
};

}  // extern "C"

// Tensor `index` of the context (nullptr for optional tensors).
inline TfcTensor* TensorAt(const TfcContext* context, int index) {
  if (index < 0) return nullptr;
  if (context->GetTensor != nullptr) return context->GetTensor(context, index);
  return reinterpret_cast<TfcTensor*>(static_cast<char*>(context->tensors) +
                                      static_cast<size_t>(index) * kTfcTensorSize);
}

#endif  // TFCOMPRESS_KERNELS_TFLITE_ABI_H_
