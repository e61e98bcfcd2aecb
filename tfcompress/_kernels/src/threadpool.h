// A small fork-join thread pool: Run(n, fn, ctx) calls fn(ctx, task, thread)
// for task in [0, n) on the caller plus the workers, and returns when all are
// done. Tasks are claimed from a counter tagged with the job's generation, and
// the caller waits for completed tasks, not for workers: a worker that the OS
// has not scheduled (2 shared cores, XNNPACK's own threads) never holds a job
// up, the caller simply runs its tasks. Workers spin briefly between jobs (ops
// follow each other within microseconds during an invoke), then sleep.
#ifndef TFCOMPRESS_KERNELS_THREADPOOL_H_
#define TFCOMPRESS_KERNELS_THREADPOOL_H_

#include <stdint.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

namespace tfc {

class ThreadPool {
 public:
  typedef void (*TaskFn)(void* ctx, int task, int thread);

  explicit ThreadPool(int num_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return static_cast<int>(workers_.size()) + 1; }
  void Run(int num_tasks, TaskFn fn, void* ctx);

 private:
  void WorkerLoop(int thread_index);
  // Claims and runs tasks of generation `gen` until none are left.
  void Work(uint32_t gen, int thread_index);

  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::atomic<uint32_t> generation_{0};
  std::atomic<uint64_t> counter_{0};  // generation << 32 | next task
  std::atomic<int> done_{0};
  std::atomic<int> sleeping_{0};
  std::atomic<bool> stop_{false};
  std::atomic<int> num_tasks_{0};
  std::atomic<TaskFn> fn_{nullptr};
  std::atomic<void*> ctx_{nullptr};
};

}  // namespace tfc

#endif  // TFCOMPRESS_KERNELS_THREADPOOL_H_
