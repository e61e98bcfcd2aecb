#include "threadpool.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define TFC_PAUSE() _mm_pause()
#else
#define TFC_PAUSE() std::this_thread::yield()
#endif

namespace tfc {

namespace {
constexpr int kWorkerSpins = 1000;  // pauses before a worker sleeps (~15 us): XNNPACK's threads need the core between our partitions
constexpr int kCallerSpins = 200;   // pauses between yields while the caller waits
}  // namespace

ThreadPool::ThreadPool(int num_threads) {
  for (int i = 1; i < num_threads; ++i) workers_.emplace_back(&ThreadPool::WorkerLoop, this, i);
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_.store(true);
    generation_.fetch_add(1);
  }
  cv_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::Work(uint32_t gen, int thread_index) {
  const TaskFn fn = fn_.load(std::memory_order_acquire);
  void* ctx = ctx_.load(std::memory_order_acquire);
  const int n = num_tasks_.load(std::memory_order_acquire);
  uint64_t cur = counter_.load(std::memory_order_acquire);
  for (;;) {
    if (static_cast<uint32_t>(cur >> 32) != gen || static_cast<int>(cur & 0xffffffffu) >= n) return;
    // Claiming succeeds only while the counter still belongs to `gen`, so
    // parameters read for a finished job are never used.
    if (!counter_.compare_exchange_weak(cur, cur + 1, std::memory_order_acq_rel)) continue;
    fn(ctx, static_cast<int>(cur & 0xffffffffu), thread_index);
    done_.fetch_add(1, std::memory_order_acq_rel);
    cur = counter_.load(std::memory_order_acquire);
  }
}

void ThreadPool::Run(int num_tasks, TaskFn fn, void* ctx) {
  if (workers_.empty() || num_tasks <= 1) {
    for (int t = 0; t < num_tasks; ++t) fn(ctx, t, 0);
    return;
  }
  const uint32_t gen = generation_.load(std::memory_order_relaxed) + 1;
  fn_.store(fn, std::memory_order_relaxed);
  ctx_.store(ctx, std::memory_order_relaxed);
  num_tasks_.store(num_tasks, std::memory_order_relaxed);
  done_.store(0, std::memory_order_relaxed);
  counter_.store(static_cast<uint64_t>(gen) << 32, std::memory_order_release);
  generation_.store(gen, std::memory_order_seq_cst);
  if (sleeping_.load(std::memory_order_seq_cst) > 0) {
    std::lock_guard<std::mutex> lock(mu_);
    cv_.notify_all();
  }
  Work(gen, 0);
  int spins = 0;
  while (done_.load(std::memory_order_acquire) != num_tasks) {
    if (++spins % kCallerSpins == 0) std::this_thread::yield();
    else TFC_PAUSE();
  }
}

void ThreadPool::WorkerLoop(int thread_index) {
  uint32_t seen = 0;
  for (;;) {
    int spins = 0;
    while (generation_.load(std::memory_order_acquire) == seen && spins < kWorkerSpins) {
      TFC_PAUSE();
      ++spins;
    }
    if (generation_.load(std::memory_order_acquire) == seen) {
      std::unique_lock<std::mutex> lock(mu_);
      sleeping_.fetch_add(1);
      cv_.wait(lock, [&] { return generation_.load() != seen; });
      sleeping_.fetch_sub(1);
    }
    seen = generation_.load(std::memory_order_acquire);
    if (stop_.load()) return;
    Work(seen, thread_index);
  }
}

}  // namespace tfc
