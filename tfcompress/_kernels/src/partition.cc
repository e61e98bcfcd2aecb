// Partition building and fusion, and running a partition.
//
// Fusion rules (each keeps the arithmetic of the original ops, see epilogue.h):
//  1. LceQuantize of a float tensor produced by a row op in the partition becomes a Pack
//     action of that op (the sign bits are packed while the row is still in registers).
//  2. A float elementwise op (ADD, SUB, MUL, PRELU, RELU, RELU6, RELU_N1_TO_1, LOGISTIC) whose
//     main input is the current value of a row op becomes a Step of that op, provided its
//     other operand is a constant, comes from outside the partition, or is produced by an op
//     that runs before the row op. Then rule 1 and 2 apply again to its result.
//  3. A value is written to memory only when something else still reads it (another op, or
//     the world outside the partition).
// Row ops: LceBconv2d with float output, the elementwise ops themselves, CONCATENATION,
// MAX_POOL_2D, AVERAGE_POOL_2D and FULLY_CONNECTED.
#include "partition.h"

#include <time.h>

#include <algorithm>
#include <chrono>
#include <iterator>
#include <map>
#include <set>

namespace tfc {

void SetChainSource(Op* op, int tensor);  // float_ops.cc
void SetConcatInPlace(Op* op, int root, const std::vector<bool>& in_place);

namespace {

StepKind StepOf(OpKind kind, bool main_is_second) {
  switch (kind) {
    case kOpAdd: return kStepAdd;
    case kOpSub: return main_is_second ? kStepRSub : kStepSub;
    case kOpMul: return kStepMul;
    case kOpPrelu: return kStepPrelu;
    case kOpLogistic: return kStepLogistic;
    default: return kStepClamp;
  }
}

// Appends node `n` (an elementwise op whose input `main` is the current value) to `e`.
void AppendElementwise(const NodeInfo& n, int main, Epilogue* e) {
  switch (n.kind) {
    case kOpRelu: e->AddClamp(kTfcActRelu, n.index); return;
    case kOpRelu6: e->AddClamp(kTfcActRelu6, n.index); return;
    case kOpReluN1To1: e->AddClamp(kTfcActReluN1To1, n.index); return;
    case kOpLogistic: e->AddStep(kStepLogistic, -1, n.index); return;
    default: break;
  }
  const int other = n.inputs[1 - main];
  e->AddStep(StepOf(n.kind, main == 1), other, n.index);
  if (n.kind != kOpPrelu) e->AddClamp(n.params.activation, n.index);
}

}  // namespace

// The nodes in a topological order that runs every node as late as possible (ties keep the
// original order). A row op then runs after the side branches that feed the ops it could
// absorb: in a Real-to-Binary block the scale branch (pool, dense, sigmoid) is computed before
// the binary conv, so the conv can take the multiplication by the scale.
std::vector<NodeInfo> LateOrder(const std::vector<NodeInfo>& nodes) {
  const int n = static_cast<int>(nodes.size());
  std::map<int, int> producer;
  for (int i = 0; i < n; ++i)
    for (int t : nodes[i].outputs) producer[t] = i;
  std::vector<std::vector<int>> preds(n);
  std::vector<int> pending(n, 0);  // consumers not yet scheduled
  for (int i = 0; i < n; ++i)
    for (int t : nodes[i].inputs) {
      auto it = producer.find(t);
      if (t >= 0 && it != producer.end() && it->second != i) {
        preds[i].push_back(it->second);
        ++pending[it->second];
      }
    }
  // Scheduling backwards from the outputs: a node picked earlier runs later. Binary convs
  // go first (they run as late as their consumers allow), then the latest in the old order.
  auto key = [&](int i) { return std::make_pair(nodes[i].kind == kOpBconv2d ? 1 : 0, i); };
  std::set<std::pair<int, int>> ready;
  for (int i = 0; i < n; ++i)
    if (pending[i] == 0) ready.insert(key(i));
  std::vector<int> reversed;
  while (!ready.empty()) {
    const int i = ready.rbegin()->second;
    ready.erase(std::prev(ready.end()));
    reversed.push_back(i);
    for (int p : preds[i])
      if (--pending[p] == 0) ready.insert(key(p));
  }
  if (static_cast<int>(reversed.size()) != n) return nodes;  // not a DAG: keep the order
  std::vector<NodeInfo> out;
  for (auto it = reversed.rbegin(); it != reversed.rend(); ++it) out.push_back(nodes[*it]);
  return out;
}

// In-place concatenation chains (DenseNet blocks): x_k = concat(x_{k-1}, bconv_k(...)) where
// each x_{k-1} is read only by the next concatenation (and the ops fused into its producer)
// and each bconv output only by its concatenation. All x_k and bconv outputs become column
// slices of the last concatenation's output, so the binary convs write their channels
// straight into place and nothing is copied again; each concatenation only reads its prefix
// of the wide rows for the ops fused after it (BatchNorm, sign packing).
void InPlaceConcats(const std::vector<NodeInfo>& nodes, std::map<int, std::vector<int>>& consumers,
                    const std::vector<bool>& absorbed, const std::set<int>& external,
                    const std::vector<int>& host, const TfcContext* context, Partition* part) {
  std::vector<Partition::Entry>& ops = part->ops;
  const int n_ops = static_cast<int>(ops.size());
  std::map<int, int> writer;  // tensor -> op writing it
  for (int k = 0; k < n_ops; ++k) {
    for (const Action& a : ops[k].op->epilogue.actions)
      if (a.kind == kActWrite || a.kind == kActPack) writer[a.tensor] = k;
    if (!ops[k].op->CanCarryEpilogue())
      for (int t : ops[k].op->outputs) writer[t] = k;
  }
  auto kind_of = [&](int k) { return std::string(ops[k].op->signature().name); };
  auto only_reader = [&](int t, int k) {  // op k is the only unfused reader of t
    if (external.count(t)) return false;
    int readers = 0;
    for (int c : consumers[t])
      if (!absorbed[c]) readers += c == host[k] ? 1 : 100;
    return readers == 1;
  };
  auto channels = [&](int t) { return Dims(TensorAt(context, t)).back(); };
  std::vector<bool> member(n_ops, false);
  std::vector<int> prev(n_ops, -1), next(n_ops, -1);
  for (int k = 0; k < n_ops; ++k) {
    const Op* op = ops[k].op.get();
    if (kind_of(k) != "CONCATENATION" || op->inputs.size() != 2 || op->outputs.empty()) continue;
    const int a = op->inputs[0], b = op->inputs[1];
    auto w = writer.find(b);
    if (w == writer.end() || kind_of(w->second) != "LceBconv2d" || !only_reader(b, k)) continue;
    const std::vector<Action>& ba = ops[w->second].op->epilogue.actions;
    if (ba.size() != 1 || ba[0].kind != kActWrite || ba[0].tensor != b) continue;
    member[k] = true;
    auto p = writer.find(a);
    if (p != writer.end() && kind_of(p->second) == "CONCATENATION" && only_reader(a, k))
      prev[k] = p->second;
  }
  for (int k = 0; k < n_ops; ++k)
    if (member[k] && prev[k] >= 0 && member[prev[k]]) next[prev[k]] = k;
    else prev[k] = -1;
  for (int k = 0; k < n_ops; ++k) {
    if (!member[k] || prev[k] >= 0) continue;  // chains start where no member precedes
    std::vector<int> chain = {k};
    while (next[chain.back()] >= 0) chain.push_back(next[chain.back()]);
    const int root = ops[chain.back()].op->outputs[0];
    const int width = channels(root);
    for (size_t j = 0; j < chain.size(); ++j) {
      Op* op = ops[chain[j]].op.get();
      const int out = op->outputs[0], y = op->inputs[1];
      part->views[y] = {root, channels(out) - channels(y), width};
      if (out != root) part->views[out] = {root, 0, width};
      SetConcatInPlace(op, root, {j > 0, true});
      std::vector<Action>& acts = op->epilogue.actions;
      acts.erase(std::remove_if(acts.begin(), acts.end(), [&](const Action& a) {
        return a.kind == kActWrite && a.tensor == out;  // already in place
      }), acts.end());
      ops[chain[j]].name += " [in place]";
    }
  }
}

std::unique_ptr<Partition> BuildPartition(const std::vector<NodeInfo>& in_order,
                                          const std::vector<int>& outputs,
                                          const TfcContext* context, Runtime* runtime,
                                          bool fuse) {
  std::unique_ptr<Partition> part(new Partition());
  const std::vector<NodeInfo> nodes = fuse ? LateOrder(in_order) : in_order;
  const int n = static_cast<int>(nodes.size());
  std::map<int, std::vector<int>> consumers;  // tensor -> positions of the nodes reading it
  std::map<int, int> produced_at;             // tensor -> position where it becomes available
  for (int i = 0; i < n; ++i) {
    for (int t : nodes[i].inputs)
      if (t >= 0) consumers[t].push_back(i);
    for (int t : nodes[i].outputs) produced_at[t] = i;
  }
  const std::set<int> external(outputs.begin(), outputs.end());
  std::vector<bool> absorbed(n, false);
  std::vector<int> host;  // per op: the position of its node
  auto available_before = [&](int tensor, int pos) {
    auto it = produced_at.find(tensor);
    return it == produced_at.end() || it->second < pos;  // outside the partition, or earlier
  };
  for (int i = 0; i < n; ++i) {
    if (absorbed[i]) continue;
    const NodeInfo& info = nodes[i];
    std::unique_ptr<Op> op = CreateOp(info.kind, info.options.data(), info.options.size());
    if (!op) {
      part->init_error = std::string("no kernel for ") + OpKindName(info.kind);
      return part;
    }
    op->inputs = info.inputs;
    op->outputs = info.outputs;
    op->params = info.params;
    op->input_channels = info.input_channels;
    op->runtime = runtime;
    op->graph = part.get();
    op->node_index = info.index;
    std::string name = OpKindName(info.kind);
    const bool float_result =
        op->CanCarryEpilogue() && !info.outputs.empty() && info.outputs[0] >= 0 &&
        static_cast<size_t>(info.outputs[0]) < context->tensors_size &&
        TensorAt(context, info.outputs[0])->type == kTfcFloat32;
    if (op->CanCarryEpilogue() && float_result) {
      Epilogue& e = op->epilogue;
      if (IsElementwise(info.kind)) {
        SetChainSource(op.get(), info.inputs[info.main]);
        AppendElementwise(info, info.main, &e);
      } else if (info.kind != kOpBconv2d) {
        e.AddClamp(info.params.activation, info.index);  // the op's own fused activation
      }
      int value = info.outputs[0];
      while (true) {
        if (fuse) {
          for (int c : consumers[value]) {  // rule 1
            const NodeInfo& q = nodes[c];
            if (absorbed[c] || q.kind != kOpQuantize || q.inputs.empty() || q.inputs[0] != value ||
                q.outputs.empty())
              continue;
            e.AddPack(q.outputs[0]);
            absorbed[c] = true;
            produced_at[q.outputs[0]] = i;
            name += "+LceQuantize";
          }
        }
        int cand = -1, cand_main = 0;
        if (fuse) {
          for (int c : consumers[value]) {  // rule 2
            const NodeInfo& m = nodes[c];
            if (absorbed[c] || !IsElementwise(m.kind) || m.inputs.size() <= static_cast<size_t>(m.main))
              continue;
            int main = m.main;
            if (m.inputs[main] != value) {
              // ADD, SUB, MUL with two inputs of the output's shape: either can lead
              if (!(m.both_full && m.inputs.size() == 2 && m.inputs[1 - main] == value)) continue;
              main = 1 - main;
            }
            if (m.inputs.size() == 2) {
              const int other = m.inputs[1 - main];
              if (other == value || !available_before(other, i)) continue;
            }
            cand = c, cand_main = main;
            break;
          }
        }
        bool others = external.count(value) > 0;  // rule 3
        for (int c : consumers[value])
          if (!absorbed[c] && c != cand) others = true;
        const bool last_is_step = e.empty() || e.actions.back().kind == kActStep;
        if (others || (cand < 0 && last_is_step)) e.AddWrite(value);
        if (cand < 0) break;
        AppendElementwise(nodes[cand], cand_main, &e);
        absorbed[cand] = true;
        value = nodes[cand].outputs[0];
        produced_at[value] = i;
        name += std::string("+") + OpKindName(nodes[cand].kind);
      }
    }
    Partition::Entry entry;
    entry.op = std::move(op);
    entry.name = name + " (node " + std::to_string(info.index) + ")";
    part->ops.push_back(std::move(entry));
    host.push_back(i);
  }
  if (fuse) InPlaceConcats(nodes, consumers, absorbed, external, host, context, part.get());
  return part;
}

long long Partition::RowStride(int index, int channels) const {
  auto v = views.find(index);
  return v != views.end() ? v->second.root_channels : channels;
}

void* Partition::Data(TfcContext* context, int index) {
  auto v = views.find(index);
  if (v != views.end()) {
    char* base = static_cast<char*>(Data(context, v->second.root));
    return base == nullptr ? nullptr : base + sizeof(float) * v->second.offset;
  }
  auto it = internal_.find(index);
  if (it != internal_.end()) return arena_.get() + it->second.offset;
  return TensorAt(context, index)->data;
}

size_t Partition::Bytes(TfcContext* context, int index) {
  auto v = views.find(index);
  if (v != views.end()) {
    const size_t root = Bytes(context, v->second.root), skip = sizeof(float) * v->second.offset;
    return root > skip ? root - skip : 0;
  }
  auto it = internal_.find(index);
  if (it != internal_.end()) return it->second.bytes;
  return TensorAt(context, index)->bytes;
}

bool Partition::Prepare(TfcContext* context, const std::vector<int>& external,
                        std::string* error) {
  prepared = false;
  if (!init_error.empty()) {
    *error = init_error;
    return false;
  }
  for (Entry& e : ops) {
    Op* op = e.op.get();
    if (!op->init_error().empty()) {
      *error = e.name + ": " + op->init_error();
      return false;
    }
    if (!op->CheckIo(context, error) || !op->Prepare(context, error)) {
      *error = e.name + ": " + *error;
      return false;
    }
  }
  // Tensors the ops touch that LiteRT does not allocate: the partition's own, with their
  // lifetimes [first op touching it, last op touching it].
  const std::set<int> outside(external.begin(), external.end());
  std::map<int, std::pair<int, int>> life;
  for (size_t k = 0; k < ops.size(); ++k) {
    const Op* op = ops[k].op.get();
    std::vector<int> read, written;
    op->epilogue.Tensors(&read, &written);
    written.insert(written.end(), op->outputs.begin(), op->outputs.end());
    read.insert(read.end(), op->inputs.begin(), op->inputs.end());
    for (int t : written) {
      if (t < 0) continue;
      auto v = views.find(t);
      if (v != views.end()) t = v->second.root;  // a view lives in its root's memory
      if (!outside.count(t) && !life.count(t)) life[t] = {static_cast<int>(k), static_cast<int>(k)};
      else if (life.count(t)) life[t].second = static_cast<int>(k);
    }
    for (int t : read) {
      if (t < 0) continue;
      auto v = views.find(t);
      if (v != views.end()) t = v->second.root;
      auto it = life.find(t);
      if (it != life.end()) it->second.second = static_cast<int>(k);
    }
  }
  auto bytes_of = [&](int t) {
    const TfcTensor* tensor = TensorAt(context, t);
    const long long n = NumElements(Dims(tensor));
    return n > 0 ? static_cast<size_t>(n) * TypeSize(tensor->type) : size_t{0};
  };
  // In place: a value an op writes may take the memory of a same-size operand the op reads
  // for the last time, row for row (x + f(x) in a residual stream), halving the working set.
  // Safe because every row of the operand is read before the same row is written, and rows
  // are never shared between threads; not for pools (their windows read other rows).
  std::map<int, int> root;  // tensor -> the tensor whose memory it uses
  auto find = [&](int t) {
    while (root.count(t)) t = root[t];
    return t;
  };
  for (size_t k = 0; k < ops.size(); ++k) {
    const Op* op = ops[k].op.get();
    const std::string kind = op->signature().name;
    if (kind == "MAX_POOL_2D" || kind == "AVERAGE_POOL_2D") continue;
    const std::vector<Action>& acts = op->epilogue.actions;
    std::map<int, int> reads;
    for (const Action& a : acts)
      if (a.kind == kActStep && a.tensor >= 0) ++reads[a.tensor];
    std::set<int> seen_full;
    for (const Action& a : acts) {
      if (a.kind == kActStep && a.operand == kOperandFull && reads[a.tensor] == 1)
        seen_full.insert(a.tensor);
      if (a.kind != kActWrite) continue;
      const int o = a.tensor;
      if (!life.count(o) || life[o].first != static_cast<int>(k) || root.count(o) ||
          views.count(o))
        continue;
      for (int r : seen_full) {
        if (!life.count(r) || life[r].second != static_cast<int>(k) || bytes_of(r) != bytes_of(o) ||
            views.count(r))
          continue;
        bool is_root = false;  // the memory of an in-place chain is not handed over
        for (const auto& v : views) is_root |= v.second.root == r || v.second.root == o;
        if (is_root) continue;
        bool taken = false;  // r's memory already handed to another value of this op
        for (const auto& kv : root) taken |= kv.second == r;
        if (taken) continue;
        root[o] = r;
        break;
      }
    }
  }
  // Groups of tensors sharing memory, each with the union of their lifetimes.
  std::map<int, std::pair<int, int>> group_life;
  for (const auto& kv : life) {
    const int g = find(kv.first);
    auto it = group_life.find(g);
    if (it == group_life.end()) group_life[g] = kv.second;
    else it->second = {std::min(it->second.first, kv.second.first),
                       std::max(it->second.second, kv.second.second)};
  }
  // Greedy placement, largest first, at the lowest offset free over the group's lifetime.
  struct Item {
    int tensor;
    size_t bytes;
    int first, last;
  };
  std::vector<Item> items;
  for (const auto& kv : group_life)
    items.push_back({kv.first, bytes_of(kv.first), kv.second.first, kv.second.second});
  std::sort(items.begin(), items.end(), [](const Item& a, const Item& b) {
    return a.bytes != b.bytes ? a.bytes > b.bytes : a.tensor < b.tensor;
  });
  std::unordered_map<int, Slot> slots;
  std::vector<std::pair<Item, size_t>> placed;
  size_t total = 0;
  for (const Item& it : items) {
    const size_t size = (it.bytes + 63) / 64 * 64 + 64;
    std::vector<std::pair<size_t, size_t>> busy;  // [offset, end) of overlapping lifetimes
    for (const auto& p : placed)
      if (!(p.first.last < it.first || it.last < p.first.first))
        busy.push_back({p.second, p.second + (p.first.bytes + 63) / 64 * 64 + 64});
    std::sort(busy.begin(), busy.end());
    size_t offset = 0;
    for (const auto& b : busy) {
      if (offset + size <= b.first) break;
      offset = std::max(offset, b.second);
    }
    placed.push_back({it, offset});
    slots[it.tensor] = {offset, it.bytes};
    total = std::max(total, offset + size);
  }
  if (total > arena_bytes_ || !arena_) {
    arena_ = MakeAligned<uint8_t>(total + 64);
    arena_bytes_ = total;
    if (!arena_) {
      *error = "out of memory for the partition's tensors";
      return false;
    }
  }
  for (const auto& kv : life) slots[kv.first] = {slots[find(kv.first)].offset, bytes_of(kv.first)};
  internal_ = std::move(slots);
  for (Entry& e : ops) e.op->RecordSizes(context);
  prepared = true;
  return true;
}

bool Partition::Invoke(TfcContext* context, std::string* error) {
  if (!prepared) {
    *error = "internal error: the partition was not prepared";
    return false;
  }
  for (Entry& e : ops) {
    const auto start = profile ? std::chrono::steady_clock::now()
                               : std::chrono::steady_clock::time_point();
    timespec cpu0{};
    if (profile) clock_gettime(CLOCK_THREAD_CPUTIME_ID, &cpu0);
    if (!e.op->CheckData(context, error) || !e.op->Eval(context, error)) {
      *error = e.name + ": " + *error;
      return false;
    }
    if (profile) {
      timespec cpu1{};
      clock_gettime(CLOCK_THREAD_CPUTIME_ID, &cpu1);
      const double wall =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      e.seconds += wall;
      e.cpu_seconds += (cpu1.tv_sec - cpu0.tv_sec) + 1e-9 * (cpu1.tv_nsec - cpu0.tv_nsec);
      e.min_seconds = e.calls == 0 ? wall : std::min(e.min_seconds, wall);
      ++e.calls;
    }
  }
  return true;
}

}  // namespace tfc
