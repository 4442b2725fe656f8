// Fused float32 CPU kernels, loaded by MindSpore as AOT custom operators (ops.Custom(func_type="aot")).
// Every entry point has MindSpore's AOT signature: params holds the inputs, then the outputs.
// The matrix-product kernels take a Precision: each is exported twice, as Name (float32 products) and
// NameBf16 (bfloat16 operands, float32 accumulation and output), from one body. Inputs and outputs stay
// float32 either way; the bfloat16 copies of the operands (weights included) are made per call.
// Work is split into contiguous row ranges over a persistent pool of threads; each range is computed the
// same way whatever the thread count, so results do not depend on timing. Dense layers call the sgemm of the
// oneDNN library that MindSpore ships (linked at build time), on this file's threads.
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <mutex>
#include <thread>
#include <tuple>
#include <vector>

// oneDNN's threadpool interface (dnnl_threadpool_iface.hpp, oneDNN 3.x), declared here because
// MindSpore ships the library without its headers. The virtual functions must stay in this order.
namespace dnnl {
namespace threadpool_interop {
struct threadpool_iface {
  virtual int get_num_threads() const = 0;
  virtual bool get_in_parallel() const = 0;
  virtual void parallel_for(int n, const std::function<void(int, int)> &fn) = 0;
  virtual uint64_t get_flags() const = 0;
  virtual ~threadpool_iface() {}
};
}  // namespace threadpool_interop
}  // namespace dnnl

// Row-major C = alpha * op(A) * op(B) + beta * C; returns 0 (dnnl_success) on success.
extern "C" int dnnl_threadpool_interop_sgemm(char transa, char transb, int64_t m, int64_t n, int64_t k, float alpha,
                                             const float *a, int64_t lda, const float *b, int64_t ldb, float beta,
                                             float *c, int64_t ldc, void *threadpool);
// The same with bfloat16 (uint16_t) A and B and float32 C, accumulating in float32.
extern "C" int dnnl_threadpool_interop_gemm_bf16bf16f32(char transa, char transb, int64_t m, int64_t n, int64_t k,
                                                        float alpha, const uint16_t *a, int64_t lda, const uint16_t *b,
                                                        int64_t ldb, float beta, float *c, int64_t ldc,
                                                        void *threadpool);

// The oneDNN C API (dnnl.h, oneDNN 3.x) that bf16::Product uses for the matmul primitive. Handles are opaque
// pointers, dims are int64_t[12], data types are dnnl_data_type_t values; each returns a dnnl_status_t.
struct DnnlExecArg {
  int arg;
  void *memory;
};
extern "C" {
int dnnl_get_effective_cpu_isa();
int dnnl_engine_create(void **engine, int kind, size_t index);
int dnnl_threadpool_interop_stream_create(void **stream, void *engine, void *threadpool);
int dnnl_memory_desc_create_with_strides(void **desc, int ndims, const int64_t *dims, int data_type,
                                         const int64_t *strides);
int dnnl_primitive_attr_create(void **attr);
int dnnl_primitive_attr_destroy(void *attr);
int dnnl_post_ops_create(void **post_ops);
int dnnl_post_ops_destroy(void *post_ops);
int dnnl_post_ops_append_sum(void *post_ops, float scale, int32_t zero_point, int data_type);
int dnnl_post_ops_append_eltwise(void *post_ops, int alg_kind, float alpha, float beta);
int dnnl_post_ops_append_binary(void *post_ops, int alg_kind, const void *src1_desc);
int dnnl_primitive_attr_set_post_ops(void *attr, const void *post_ops);
int dnnl_matmul_primitive_desc_create(void **desc, void *engine, const void *src, const void *weights,
                                      const void *bias, const void *dst, const void *attr);
int dnnl_primitive_desc_destroy(void *desc);
int dnnl_primitive_create(void **primitive, const void *desc);
int dnnl_memory_create(void **memory, const void *desc, void *engine, void *handle);
int dnnl_memory_destroy(void *memory);
int dnnl_primitive_execute(const void *primitive, void *stream, int nargs, const DnnlExecArg *args);
int dnnl_stream_wait(void *stream);
}

enum class Precision { kFloat32, kBFloat16 };

namespace {

constexpr float kInvSqrt2 = 0.70710678118654752f;
constexpr float kInvSqrt2Pi = 0.39894228040143268f;
constexpr int64_t kMinElementsPerThread = 32768;
constexpr int64_t kMinMacsPerThread = 1 << 20;
constexpr int kLanes = 16;

constexpr int kDefaultMaxThreads = 16;

// DVT_MS_KERNEL_THREADS, else the CPUs this process may run on, at most kDefaultMaxThreads.
int MaxThreads() {
  static const int threads = [] {
    const char *env = std::getenv("DVT_MS_KERNEL_THREADS");
    if (env != nullptr && std::atoi(env) > 0) return std::atoi(env);
    cpu_set_t set;
    const int cpus = sched_getaffinity(0, sizeof(set), &set) == 0
                         ? CPU_COUNT(&set)
                         : static_cast<int>(std::thread::hardware_concurrency());
    return std::min(std::max(1, cpus), kDefaultMaxThreads);
  }();
  return threads;
}

// Threads that live as long as the process. Run(n, fn) calls fn(0) on the caller and fn(1..n-1) on
// workers, and returns when all are done. Idle workers spin briefly (kernels come back to back), then
// sleep. A Run that finds the pool busy (MindSpore launching kernels concurrently), or a process forked
// after the pool started, runs everything on the caller.
class WorkerPool {
 public:
  static WorkerPool &Get() {
    static WorkerPool *pool = new WorkerPool(MaxThreads() - 1);  // never destroyed: workers outlive exit
    return *pool;
  }

  void Run(int n, const std::function<void(int)> &fn) {
    std::unique_lock<std::mutex> busy(run_mutex_, std::try_to_lock);
    if (n <= 1 || !busy.owns_lock() || getpid() != pid_ || n - 1 > static_cast<int>(workers_.size())) {
      for (int i = 0; i < n; ++i) fn(i);
      return;
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      job_ = &fn;
      job_size_ = n;
      pending_.store(n - 1);
      generation_.fetch_add(1);
    }
    wake_.notify_all();
    fn(0);
    while (pending_.load() != 0) std::this_thread::yield();
  }

 private:
  explicit WorkerPool(int workers) : pid_(getpid()) {
    for (int i = 1; i <= workers; ++i) workers_.emplace_back([this, i] { Work(i); });
    for (auto &worker : workers_) worker.detach();
  }

  void Work(int index) {
    uint64_t seen = 0;
    for (;;) {
      const auto spin_until = std::chrono::steady_clock::now() + std::chrono::microseconds(100);
      while (generation_.load() == seen && std::chrono::steady_clock::now() < spin_until) {
      }
      const std::function<void(int)> *job = nullptr;
      {
        // the generation and its job are read together, so a job is never run twice or half-updated
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return generation_.load() != seen; });
        seen = generation_.load();
        if (index < job_size_) job = job_;
      }
      if (job != nullptr) {
        (*job)(index);
        pending_.fetch_sub(1);
      }
    }
  }

  const pid_t pid_;
  std::vector<std::thread> workers_;
  std::mutex run_mutex_, mutex_;
  std::condition_variable wake_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};
  const std::function<void(int)> *job_ = nullptr;
  int job_size_ = 0;
};

// oneDNN's threadpool on the worker pool: parallel_for(n, fn) runs fn(i, n) for all i.
class GemmPool final : public dnnl::threadpool_interop::threadpool_iface {
 public:
  int get_num_threads() const override { return MaxThreads(); }
  bool get_in_parallel() const override { return false; }
  uint64_t get_flags() const override { return 0; }
  void parallel_for(int n, const std::function<void(int, int)> &fn) override {
    const int chunks = std::min(n, MaxThreads());
    WorkerPool::Get().Run(chunks, [&fn, n, chunks](int chunk) {
      for (int i = n * chunk / chunks; i < n * (chunk + 1) / chunks; ++i) fn(i, n);
    });
  }
};

// The same interface on the calling thread only.
class SerialPool final : public dnnl::threadpool_interop::threadpool_iface {
 public:
  int get_num_threads() const override { return 1; }
  bool get_in_parallel() const override { return false; }
  uint64_t get_flags() const override { return 0; }
  void parallel_for(int n, const std::function<void(int, int)> &fn) override {
    for (int i = 0; i < n; ++i) fn(i, n);
  }
};

// Number of row ranges for `rows` rows of `cols` elements.
int Chunks(int64_t rows, int64_t cols) {
  const int64_t by_size = std::max<int64_t>(1, rows * cols / kMinElementsPerThread);
  return static_cast<int>(std::min<int64_t>({by_size, rows, MaxThreads()}));
}

// fn(chunk, begin, end) over `chunks` contiguous ranges of [0, rows); chunk 0 runs on the caller.
template <typename Fn>
void ParallelRows(int64_t rows, int chunks, Fn fn) {
  WorkerPool::Get().Run(chunks, [&](int chunk) { fn(chunk, rows * chunk / chunks, rows * (chunk + 1) / chunks); });
}

// The bfloat16 products (bf16::Product), on the pools and row ranges above.
#include "cpu_ops_bf16.inc"

// Row-major C[m, n] = op(A) op(B) (+ C if accumulate) on the pool, in `precision`; false if oneDNN fails.
bool Gemm(Precision precision, char transa, char transb, int64_t m, int64_t n, int64_t k, const float *a,
          int64_t lda, const float *b, int64_t ldb, float *c, int64_t ldc, bool accumulate = false) {
  static GemmPool parallel;
  SerialPool serial;
  dnnl::threadpool_interop::threadpool_iface *pool = &parallel;
  if (m * n * k < kMinMacsPerThread) pool = &serial;
  if (precision == Precision::kBFloat16) {
    return bf16::Product(transa, transb, 1, m, n, k, {a, false}, lda, {b, false}, ldb, c, ldc, accumulate,
                         pool == &parallel);
  }
  return dnnl_threadpool_interop_sgemm(transa, transb, m, n, k, 1.0f, a, lda, b, ldb, accumulate ? 1.0f : 0.0f, c,
                                       ldc, pool) == 0;
}

int64_t Rows(int ndim, const int64_t *shape) {
  int64_t rows = 1;
  for (int i = 0; i < ndim - 1; ++i) rows *= shape[i];
  return rows;
}

// Sum with kLanes independent accumulators, which the compiler vectorizes without -ffast-math.
inline float Sum(const float *x, int64_t n) {
  float lanes[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) lanes[j] += x[i + j];
  }
  float total = 0.0f;
  for (int j = 0; j < kLanes; ++j) total += lanes[j];
  for (; i < n; ++i) total += x[i];
  return total;
}

inline float Dot(const float *x, const float *y, int64_t n) {
  float lanes[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) lanes[j] += x[i + j] * y[i + j];
  }
  float total = 0.0f;
  for (int j = 0; j < kLanes; ++j) total += lanes[j];
  for (; i < n; ++i) total += x[i] * y[i];
  return total;
}

// With kLanes independent maxima, like Sum: one running maximum is a chain of dependent compares.
inline float Max(const float *x, int64_t n) {
  float lanes[kLanes];
  for (int j = 0; j < kLanes; ++j) lanes[j] = x[0];
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) lanes[j] = x[i + j] > lanes[j] ? x[i + j] : lanes[j];
  }
  float best = x[0];
  for (int j = 0; j < kLanes; ++j) best = lanes[j] > best ? lanes[j] : best;
  for (; i < n; ++i) best = x[i] > best ? x[i] : best;
  return best;
}

// exp(x) with a relative error below 2e-7, branch-free so that loops over it vectorize.
// NaN stays NaN; the result saturates to 0 below -87.3 and to FLT_MAX-range above 88.7.
inline float Exp(float x) {
  const float clamped = x < -87.3f ? -87.3f : (x > 88.7f ? 88.7f : x);
  // n = round(clamped / ln 2): adding and subtracting 1.5 * 2^23 rounds, and unlike floor() it vectorizes
  const float n = (clamped * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  const float r = clamped - n * 0.693359375f + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const float scale = __builtin_bit_cast(float, (static_cast<int32_t>(n) + 127) * (1 << 23));
  const float result = p * scale;
  return x != x ? x : result;
}

// Gaussian CDF Phi(x) = (1 + erf(x / sqrt 2)) / 2 given gauss = exp(-x^2 / 2), erf by Abramowitz-Stegun 7.1.26
// (|error| < 1.5e-7).
inline float Phi(float x, float gauss) {
  const float a = (x < 0.0f ? -x : x) * kInvSqrt2;
  const float t = 1.0f / (1.0f + 0.3275911f * a);
  const float poly = t * (0.254829592f + t * (-0.284496736f + t * (1.421413741f + t * (-1.453152027f +
                                                                                        t * 1.061405429f))));
  const float erf_abs = 1.0f - poly * gauss;
  return 0.5f * (1.0f + (x < 0.0f ? -erf_abs : erf_abs));
}

inline float Gelu(float x) { return x * Phi(x, Exp(-0.5f * x * x)); }

inline float GeluGrad(float x) {
  const float gauss = Exp(-0.5f * x * x);
  return Phi(x, gauss) + x * kInvSqrt2Pi * gauss;
}

// GELU(x + bias) over rows; a null bias means none.
void BiasGeluRows(const float *__restrict x, const float *__restrict bias, float *__restrict y, int64_t rows,
                  int64_t cols) {
  if (bias == nullptr) {
    for (int64_t i = 0; i < rows * cols; ++i) y[i] = Gelu(x[i]);
    return;
  }
  for (int64_t r = 0; r < rows; ++r, x += cols, y += cols) {
    for (int64_t c = 0; c < cols; ++c) y[c] = Gelu(x[c] + bias[c]);
  }
}

void BiasGeluGradRows(const float *__restrict dy, const float *__restrict x, const float *__restrict bias,
                      float *__restrict dx, int64_t rows, int64_t cols) {
  if (bias == nullptr) {
    for (int64_t i = 0; i < rows * cols; ++i) dx[i] = dy[i] * GeluGrad(x[i]);
    return;
  }
  for (int64_t r = 0; r < rows; ++r, dy += cols, x += cols, dx += cols) {
    for (int64_t c = 0; c < cols; ++c) dx[c] = dy[c] * GeluGrad(x[c] + bias[c]);
  }
}

void SoftmaxRows(const float *__restrict x, float *__restrict y, int64_t rows, int64_t cols) {
  for (int64_t r = 0; r < rows; ++r, x += cols, y += cols) {
    const float top = Max(x, cols);
    for (int64_t c = 0; c < cols; ++c) y[c] = Exp(x[c] - top);
    const float inv = 1.0f / Sum(y, cols);
    for (int64_t c = 0; c < cols; ++c) y[c] *= inv;
  }
}

// Elements of float32 or bfloat16 tensors as float32 values.
inline float Load(const float *x) { return *x; }
inline float Load(const uint16_t *x) { return bf16::Widen(*x); }
inline void Store(float *y, float value) { *y = value; }
inline void Store(uint16_t *y, float value) { *y = bf16::Round(value); }

// Token-major [B, N, P * H * D] <-> P head-major [B, H, N, D] tensors (P = 3 for q, k, v), part 0 scaled.
template <typename T>
void TokensToHeadsRows(const T *tokens, T *const *heads, int parts, float scale, int64_t begin, int64_t end,
                       int64_t n_heads, int64_t n_tokens, int64_t head_dim) {
  const int64_t width = n_heads * head_dim;
  for (int64_t row = begin; row < end; ++row) {
    const int64_t b = row / n_tokens, n = row % n_tokens;
    const T *src = tokens + row * parts * width;
    for (int part = 0; part < parts; ++part) {
      const float factor = part == 0 ? scale : 1.0f;
      for (int64_t h = 0; h < n_heads; ++h, src += head_dim) {
        T *dst = heads[part] + ((b * n_heads + h) * n_tokens + n) * head_dim;
        if (factor == 1.0f) {
          std::memcpy(dst, src, head_dim * sizeof(T));
        } else {
          for (int64_t d = 0; d < head_dim; ++d) Store(dst + d, Load(src + d) * factor);
        }
      }
    }
  }
}

template <typename T>
void HeadsToTokensRows(const T *const *heads, T *tokens, int parts, float scale, int64_t begin, int64_t end,
                       int64_t n_heads, int64_t n_tokens, int64_t head_dim) {
  const int64_t width = n_heads * head_dim;
  for (int64_t row = begin; row < end; ++row) {
    const int64_t b = row / n_tokens, n = row % n_tokens;
    T *dst = tokens + row * parts * width;
    for (int part = 0; part < parts; ++part) {
      const float factor = part == 0 ? scale : 1.0f;
      for (int64_t h = 0; h < n_heads; ++h, dst += head_dim) {
        const T *src = heads[part] + ((b * n_heads + h) * n_tokens + n) * head_dim;
        if (factor == 1.0f) {
          std::memcpy(dst, src, head_dim * sizeof(T));
        } else {
          for (int64_t d = 0; d < head_dim; ++d) Store(dst + d, Load(src + d) * factor);
        }
      }
    }
  }
}

// The dimensions of a head-major [B, H, N, D] tensor.
struct HeadShape {
  int64_t batch, heads, tokens, dim;
  explicit HeadShape(const int64_t *shape) : batch(shape[0]), heads(shape[1]), tokens(shape[2]), dim(shape[3]) {}
};

// x - x is 0 for a finite x and NaN for NaN or +-Inf.
int64_t CountNonFinite(const float *__restrict x, int64_t n) {
  int64_t count = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float zero = x[i] - x[i];
    count += zero != zero;
  }
  return count;
}

// Column sums of a float32 or bfloat16 [rows, cols] matrix, each thread summing its rows into its own partial row.
template <typename T>
void ColumnSums(const T *x, int64_t rows, int64_t cols, float *out) {
  const int chunks = Chunks(rows, cols);
  std::vector<float> partial(static_cast<size_t>(chunks) * cols, 0.0f);
  ParallelRows(rows, chunks, [&](int chunk, int64_t begin, int64_t end) {
    float *acc = partial.data() + chunk * cols;
    for (int64_t r = begin; r < end; ++r) {
      const T *xr = x + r * cols;
      for (int64_t c = 0; c < cols; ++c) acc[c] += Load(xr + c);
    }
  });
  std::fill(out, out + cols, 0.0f);
  for (int chunk = 0; chunk < chunks; ++chunk) {
    const float *acc = partial.data() + chunk * cols;
    for (int64_t c = 0; c < cols; ++c) out[c] += acc[c];
  }
}

bool IsFloat32(const char *dtype) { return std::strcmp(dtype, "float32") == 0; }
bool IsBFloat16(const char *dtype) { return std::strcmp(dtype, "bfloat16") == 0; }

int64_t Size(int ndim, const int64_t *shape) {
  int64_t size = 1;
  for (int i = 0; i < ndim; ++i) size *= shape[i];
  return size;
}

bool SameShape(const int *ndims, int64_t **shapes, int i, int j) {
  return ndims[i] == ndims[j] && std::equal(shapes[i], shapes[i] + ndims[i], shapes[j]);
}

// Runs body(params) of a float32 kernel whose last `outputs` params are its outputs on params that may also be
// bfloat16: those inputs are widened into per-thread float32 buffers, those outputs computed there and rounded
// back. Any other dtype returns an error status to MindSpore instead of reading the bytes as floats.
template <typename Body>
int AsFloat32(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, int outputs, Body body) {
  bool all_float32 = true;
  for (int i = 0; i < nparam; ++i) {
    if (IsFloat32(dtypes[i])) continue;
    if (!IsBFloat16(dtypes[i])) return 1;
    all_float32 = false;
  }
  if (all_float32) return body(params);
  thread_local std::vector<std::vector<float>> buffers;
  if (static_cast<int>(buffers.size()) < nparam) buffers.resize(nparam);
  std::vector<void *> local(params, params + nparam);
  for (int i = 0; i < nparam; ++i) {
    if (IsFloat32(dtypes[i])) continue;
    const int64_t n = Size(ndims[i], shapes[i]);
    if (static_cast<int64_t>(buffers[i].size()) < n) buffers[i].resize(n);
    local[i] = buffers[i].data();
    if (i < nparam - outputs) bf16::Widen(static_cast<const uint16_t *>(params[i]), n, buffers[i].data());
  }
  const int status = body(local.data());
  for (int i = nparam - outputs; i < nparam && status == 0; ++i) {
    if (IsBFloat16(dtypes[i])) {
      bf16::Convert(buffers[i].data(), Size(ndims[i], shapes[i]), static_cast<uint16_t *>(params[i]));
    }
  }
  return status;
}

}  // namespace

// A float32 kernel with `outputs` outputs (the last params), run through AsFloat32.
#define DVT_KERNEL(name, outputs)                                                                           \
  static int name##Body(int nparam, void **params, int *ndims, int64_t **shapes);                          \
  extern "C" int name(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,         \
                      void *stream, void *extra) {                                                         \
    return AsFloat32(nparam, params, ndims, shapes, dtypes, outputs,                                       \
                     [&](void **p) { return name##Body(nparam, p, ndims, shapes); });                      \
  }                                                                                                        \
  static int name##Body(int nparam, void **params, int *ndims, int64_t **shapes)

// A matrix-product kernel with its precision as a parameter: exported as `name` (float32) and `name##Bf16`.
#define DVT_PRODUCT_KERNEL(name, outputs)                                                                  \
  static int name##Body(int nparam, void **params, int *ndims, int64_t **shapes, Precision precision);     \
  extern "C" int name(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,         \
                      void *stream, void *extra) {                                                         \
    return AsFloat32(nparam, params, ndims, shapes, dtypes, outputs, [&](void **p) {                       \
      return name##Body(nparam, p, ndims, shapes, Precision::kFloat32);                                    \
    });                                                                                                    \
  }                                                                                                        \
  extern "C" int name##Bf16(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,   \
                            void *stream, void *extra) {                                                   \
    return AsFloat32(nparam, params, ndims, shapes, dtypes, outputs, [&](void **p) {                       \
      return name##Body(nparam, p, ndims, shapes, Precision::kBFloat16);                                   \
    });                                                                                                    \
  }                                                                                                        \
  static int name##Body(int nparam, void **params, int *ndims, int64_t **shapes, Precision precision)

// A kernel that reads the params' dtypes itself (float32 or bfloat16 activations).
#define DVT_TYPED_KERNEL(name)                                                                              \
  extern "C" int name(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,         \
                      void *stream, void *extra)

#define IN(i) static_cast<const float *>(params[i])
#define OUT(i) static_cast<float *>(params[i])

template <typename T>
void LayerNormRows(const float *x, const float *gamma, const float *beta, float eps, T *y, float *mean, float *rstd,
                   int64_t begin, int64_t end, int64_t cols) {
  std::vector<float> centered(cols);
  for (int64_t r = begin; r < end; ++r) {
    const float *xr = x + r * cols;
    T *yr = y + r * cols;
    const float mu = Sum(xr, cols) / cols;
    for (int64_t c = 0; c < cols; ++c) centered[c] = xr[c] - mu;
    const float inv = 1.0f / std::sqrt(Dot(centered.data(), centered.data(), cols) / cols + eps);
    for (int64_t c = 0; c < cols; ++c) Store(yr + c, centered[c] * inv * gamma[c] + beta[c]);
    mean[r] = mu;
    rstd[r] = inv;
  }
}

// LayerNorm over the last axis. in: x [R, C], gamma [C], beta [C], eps [1]; out: y, mean [R], rstd [R].
// y in float32 or bfloat16; the statistics are float32.
DVT_TYPED_KERNEL(LayerNormForward) {
  for (int i : {0, 1, 2, 3, 5, 6}) {
    if (!IsFloat32(dtypes[i])) return 1;
  }
  const float *x = IN(0), *gamma = IN(1), *beta = IN(2);
  const float eps = *IN(3);
  float *mean = OUT(5), *rstd = OUT(6);
  const int64_t cols = shapes[0][ndims[0] - 1], rows = Rows(ndims[0], shapes[0]);
  const bool low = IsBFloat16(dtypes[4]);
  if (!low && !IsFloat32(dtypes[4])) return 1;
  ParallelRows(rows, Chunks(rows, cols), [&](int, int64_t begin, int64_t end) {
    if (low) {
      LayerNormRows(x, gamma, beta, eps, static_cast<uint16_t *>(params[4]), mean, rstd, begin, end, cols);
    } else {
      LayerNormRows(x, gamma, beta, eps, OUT(4), mean, rstd, begin, end, cols);
    }
  });
  return 0;
}

// Gradient of LayerNormForward. in: dy [R, C] (float32 or bfloat16), x [R, C], gamma [C], mean [R], rstd [R];
// out: dx [R, C], dgamma [C], dbeta [C]
template <typename T>
void LayerNormGrads(const T *dy, const float *x, const float *gamma, const float *mean, const float *rstd, float *dx,
                    float *dgamma, float *dbeta, int64_t rows, int64_t cols) {
  const int chunks = Chunks(rows, cols);
  std::vector<float> partial(static_cast<size_t>(chunks) * 2 * cols, 0.0f);
  ParallelRows(rows, chunks, [&](int chunk, int64_t begin, int64_t end) {
    float *acc_gamma = partial.data() + chunk * 2 * cols;
    float *acc_beta = acc_gamma + cols;
    std::vector<float> xhat(cols), g(cols);
    for (int64_t r = begin; r < end; ++r) {
      const T *dyr = dy + r * cols;
      const float *xr = x + r * cols;
      float *dxr = dx + r * cols;
      const float mu = mean[r], inv = rstd[r];
      for (int64_t c = 0; c < cols; ++c) {
        const float d = Load(dyr + c);
        xhat[c] = (xr[c] - mu) * inv;
        g[c] = d * gamma[c];
        acc_gamma[c] += d * xhat[c];
        acc_beta[c] += d;
      }
      const float mean_g = Sum(g.data(), cols) / cols;
      const float mean_gx = Dot(g.data(), xhat.data(), cols) / cols;
      for (int64_t c = 0; c < cols; ++c) dxr[c] = inv * (g[c] - mean_g - xhat[c] * mean_gx);
    }
  });
  std::fill(dgamma, dgamma + cols, 0.0f);
  std::fill(dbeta, dbeta + cols, 0.0f);
  for (int chunk = 0; chunk < chunks; ++chunk) {
    const float *acc_gamma = partial.data() + chunk * 2 * cols;
    for (int64_t c = 0; c < cols; ++c) {
      dgamma[c] += acc_gamma[c];
      dbeta[c] += acc_gamma[cols + c];
    }
  }
}

DVT_TYPED_KERNEL(LayerNormBackward) {
  for (int i = 1; i < 8; ++i) {
    if (!IsFloat32(dtypes[i])) return 1;
  }
  const int64_t cols = shapes[0][ndims[0] - 1], rows = Rows(ndims[0], shapes[0]);
  if (IsBFloat16(dtypes[0])) {
    LayerNormGrads(static_cast<const uint16_t *>(params[0]), IN(1), IN(2), IN(3), IN(4), OUT(5), OUT(6), OUT(7), rows,
                   cols);
  } else if (IsFloat32(dtypes[0])) {
    LayerNormGrads(IN(0), IN(1), IN(2), IN(3), IN(4), OUT(5), OUT(6), OUT(7), rows, cols);
  } else {
    return 1;
  }
  return 0;
}

// y = GELU(x + bias), exact GELU. in: x [R, C], bias [C]; out: y [R, C]
DVT_KERNEL(BiasGeluForward, 1) {
  const float *x = IN(0), *bias = IN(1);
  float *y = OUT(2);
  const int64_t cols = shapes[0][ndims[0] - 1], rows = Rows(ndims[0], shapes[0]);
  ParallelRows(rows, Chunks(rows, cols), [&](int, int64_t begin, int64_t end) {
    BiasGeluRows(x + begin * cols, bias, y + begin * cols, end - begin, cols);
  });
  return 0;
}

// Gradient of BiasGeluForward. in: dy [R, C], x [R, C], bias [C]; out: dx [R, C], dbias [C]
DVT_KERNEL(BiasGeluBackward, 2) {
  const float *dy = IN(0), *x = IN(1), *bias = IN(2);
  float *dx = OUT(3), *dbias = OUT(4);
  const int64_t cols = shapes[0][ndims[0] - 1], rows = Rows(ndims[0], shapes[0]);
  ParallelRows(rows, Chunks(rows, cols), [&](int, int64_t begin, int64_t end) {
    BiasGeluGradRows(dy + begin * cols, x + begin * cols, bias, dx + begin * cols, end - begin, cols);
  });
  ColumnSums(dx, rows, cols, dbias);
  return 0;
}

// Exact GELU, element-wise. in: x; out: y
DVT_KERNEL(GeluForward, 1) {
  const float *x = IN(0);
  float *y = OUT(1);
  const int64_t cols = shapes[0][ndims[0] - 1], rows = Rows(ndims[0], shapes[0]);
  ParallelRows(rows, Chunks(rows, cols), [&](int, int64_t begin, int64_t end) {
    BiasGeluRows(x + begin * cols, nullptr, y + begin * cols, end - begin, cols);
  });
  return 0;
}

// Gradient of GeluForward. in: dy, x; out: dx
DVT_KERNEL(GeluBackward, 1) {
  const float *dy = IN(0), *x = IN(1);
  float *dx = OUT(2);
  const int64_t cols = shapes[0][ndims[0] - 1], rows = Rows(ndims[0], shapes[0]);
  ParallelRows(rows, Chunks(rows, cols), [&](int, int64_t begin, int64_t end) {
    BiasGeluGradRows(dy + begin * cols, x + begin * cols, nullptr, dx + begin * cols, end - begin, cols);
  });
  return 0;
}

// Softmax over the last axis. in: x [R, C]; out: y [R, C], float32 or bfloat16 (computed in float32)
DVT_TYPED_KERNEL(SoftmaxForward) {
  const bool low = IsBFloat16(dtypes[1]);
  if (!IsFloat32(dtypes[0]) || !(low || IsFloat32(dtypes[1]))) return 1;
  const float *x = IN(0);
  const int64_t cols = shapes[0][ndims[0] - 1], rows = Rows(ndims[0], shapes[0]);
  ParallelRows(rows, Chunks(rows, cols), [&](int, int64_t begin, int64_t end) {
    if (!low) {
      SoftmaxRows(x + begin * cols, OUT(1) + begin * cols, end - begin, cols);
      return;
    }
    std::vector<float> row(cols);
    uint16_t *y = static_cast<uint16_t *>(params[1]);
    for (int64_t r = begin; r < end; ++r) {
      SoftmaxRows(x + r * cols, row.data(), 1, cols);
      for (int64_t c = 0; c < cols; ++c) y[r * cols + c] = bf16::Round(row[c]);
    }
  });
  return 0;
}

// Gradient of SoftmaxForward from its output. in: dy [R, C], y [R, C] (each float32 or bfloat16); out: dx [R, C]
template <typename D, typename Y>
void SoftmaxGrads(const D *dy, const Y *y, float *dx, int64_t rows, int64_t cols) {
  ParallelRows(rows, Chunks(rows, cols), [&](int, int64_t begin, int64_t end) {
    std::vector<float> dyr(cols), yr(cols);
    for (int64_t r = begin; r < end; ++r) {
      for (int64_t c = 0; c < cols; ++c) {
        dyr[c] = Load(dy + r * cols + c);
        yr[c] = Load(y + r * cols + c);
      }
      const float inner = Dot(dyr.data(), yr.data(), cols);
      float *dxr = dx + r * cols;
      for (int64_t c = 0; c < cols; ++c) dxr[c] = yr[c] * (dyr[c] - inner);
    }
  });
}

DVT_TYPED_KERNEL(SoftmaxBackward) {
  const bool dy16 = IsBFloat16(dtypes[0]), y16 = IsBFloat16(dtypes[1]);
  if (!(dy16 || IsFloat32(dtypes[0])) || !(y16 || IsFloat32(dtypes[1])) || !IsFloat32(dtypes[2])) return 1;
  const int64_t cols = shapes[0][ndims[0] - 1], rows = Rows(ndims[0], shapes[0]);
  const void *dy = params[0], *y = params[1];
  float *dx = OUT(2);
  if (dy16 && y16) {
    SoftmaxGrads(static_cast<const uint16_t *>(dy), static_cast<const uint16_t *>(y), dx, rows, cols);
  } else if (dy16) {
    SoftmaxGrads(static_cast<const uint16_t *>(dy), static_cast<const float *>(y), dx, rows, cols);
  } else if (y16) {
    SoftmaxGrads(static_cast<const float *>(dy), static_cast<const uint16_t *>(y), dx, rows, cols);
  } else {
    SoftmaxGrads(static_cast<const float *>(dy), static_cast<const float *>(y), dx, rows, cols);
  }
  return 0;
}

// How many elements of all inputs are NaN or +-Inf. in: any number of tensors; out: count [1]
DVT_KERNEL(NonFiniteCount, 1) {
  const int inputs = nparam - 1;
  std::vector<int64_t> sizes(inputs), offsets(inputs + 1, 0);
  for (int t = 0; t < inputs; ++t) {
    sizes[t] = 1;
    for (int d = 0; d < ndims[t]; ++d) sizes[t] *= shapes[t][d];
    offsets[t + 1] = offsets[t] + sizes[t];
  }
  // one index space over all inputs, split into equal ranges
  const int64_t total = offsets[inputs];
  const int chunks = Chunks(total, 1);
  std::vector<int64_t> counts(chunks, 0);
  ParallelRows(total, chunks, [&](int chunk, int64_t begin, int64_t end) {
    for (int t = 0; t < inputs; ++t) {
      const int64_t lo = std::max(begin, offsets[t]), hi = std::min(end, offsets[t + 1]);
      if (lo < hi) counts[chunk] += CountNonFinite(IN(t) + (lo - offsets[t]), hi - lo);
    }
  });
  int64_t found = 0;
  for (int64_t count : counts) found += count;
  *OUT(inputs) = static_cast<float>(found);
  return 0;
}

// The head layouts move float32 or bfloat16 elements: every tensor param (not the scale) has the first's dtype.
bool SameDtype(const char **dtypes, std::initializer_list<int> indices) {
  const char *first = dtypes[*indices.begin()];
  if (!IsFloat32(first) && !IsBFloat16(first)) return false;
  for (int i : indices) {
    if (std::strcmp(dtypes[i], first) != 0) return false;
  }
  return true;
}

template <typename T>
void ToHeads(void **params, int in, int out, int parts, float scale, const HeadShape &hs) {
  T *heads[3];
  for (int p = 0; p < parts; ++p) heads[p] = static_cast<T *>(params[out + p]);
  const int64_t rows = hs.batch * hs.tokens;
  ParallelRows(rows, Chunks(rows, parts * hs.heads * hs.dim), [&](int, int64_t begin, int64_t end) {
    TokensToHeadsRows(static_cast<const T *>(params[in]), heads, parts, scale, begin, end, hs.heads, hs.tokens,
                      hs.dim);
  });
}

template <typename T>
void ToTokens(void **params, int in, int out, int parts, float scale, const HeadShape &hs) {
  const T *heads[3];
  for (int p = 0; p < parts; ++p) heads[p] = static_cast<const T *>(params[in + p]);
  const int64_t rows = hs.batch * hs.tokens;
  ParallelRows(rows, Chunks(rows, parts * hs.heads * hs.dim), [&](int, int64_t begin, int64_t end) {
    HeadsToTokensRows(heads, static_cast<T *>(params[out]), parts, scale, begin, end, hs.heads, hs.tokens, hs.dim);
  });
}

// q, k, v heads from the qkv projection. in: qkv [B, N, 3 * H * D], scale [1];
// out: q * scale, k, v, each [B, H, N, D]
DVT_TYPED_KERNEL(QkvToHeads) {
  if (!SameDtype(dtypes, {0, 2, 3, 4}) || !IsFloat32(dtypes[1])) return 1;
  const HeadShape hs(shapes[2]);
  if (IsBFloat16(dtypes[0])) {
    ToHeads<uint16_t>(params, 0, 2, 3, *IN(1), hs);
  } else {
    ToHeads<float>(params, 0, 2, 3, *IN(1), hs);
  }
  return 0;
}

// Gradient of QkvToHeads. in: dq, dk, dv [B, H, N, D], scale [1]; out: dqkv [B, N, 3 * H * D]
DVT_TYPED_KERNEL(HeadsToQkv) {
  if (!SameDtype(dtypes, {0, 1, 2, 4}) || !IsFloat32(dtypes[3])) return 1;
  const HeadShape hs(shapes[0]);
  if (IsBFloat16(dtypes[0])) {
    ToTokens<uint16_t>(params, 0, 4, 3, *IN(3), hs);
  } else {
    ToTokens<float>(params, 0, 4, 3, *IN(3), hs);
  }
  return 0;
}

// Attention output back to tokens. in: x [B, H, N, D]; out: [B, N, H * D]
DVT_TYPED_KERNEL(HeadsToTokens) {
  if (!SameDtype(dtypes, {0, 1})) return 1;
  const HeadShape hs(shapes[0]);
  if (IsBFloat16(dtypes[0])) {
    ToTokens<uint16_t>(params, 0, 1, 1, 1.0f, hs);
  } else {
    ToTokens<float>(params, 0, 1, 1, 1.0f, hs);
  }
  return 0;
}

// Gradient of HeadsToTokens. in: dy [B, N, H * D], x [B, H, N, D] (for its shape); out: dx [B, H, N, D]
DVT_TYPED_KERNEL(TokensToHeads) {
  if (!SameDtype(dtypes, {0, 2})) return 1;
  const HeadShape hs(shapes[1]);
  if (IsBFloat16(dtypes[0])) {
    ToHeads<uint16_t>(params, 0, 2, 1, 1.0f, hs);
  } else {
    ToHeads<float>(params, 0, 2, 1, 1.0f, hs);
  }
  return 0;
}

// y = x @ weight^T (+ bias). in: x [R, K], weight [N, K] (, bias [N]); out: y [R, N]
static int DenseForward(void **params, int *ndims, int64_t **shapes, bool has_bias, Precision precision) {
  const float *x = IN(0), *weight = IN(1);
  float *y = OUT(has_bias ? 3 : 2);
  const int64_t k = shapes[0][ndims[0] - 1], rows = Rows(ndims[0], shapes[0]), n = shapes[1][0];
  if (has_bias) {
    const float *bias = IN(2);
    ParallelRows(rows, Chunks(rows, n), [&](int, int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) std::memcpy(y + r * n, bias, n * sizeof(float));
    });
  }
  return Gemm(precision, 'N', 'T', rows, n, k, x, k, weight, k, y, n, has_bias) ? 0 : 2;
}

// Gradients of DenseForward. in: dy [R, N], x [R, K], weight [N, K]; out: dx [R, K], dweight [N, K](, dbias [N]).
static int DenseBackward(void **params, int *ndims, int64_t **shapes, bool has_bias) {
  const Precision precision = Precision::kFloat32;
  const float *dy = IN(0), *x = IN(1), *weight = IN(2);
  float *dx = OUT(3), *dweight = OUT(4);
  const int64_t n = shapes[0][ndims[0] - 1], rows = Rows(ndims[0], shapes[0]), k = shapes[2][1];
  if (!Gemm(precision, 'N', 'N', rows, k, n, dy, n, weight, k, dx, k)) return 2;
  if (!Gemm(precision, 'T', 'N', n, k, rows, dy, n, x, k, dweight, k)) return 2;
  if (has_bias) ColumnSums(dy, rows, n, OUT(5));
  return 0;
}

DVT_KERNEL(LinearForward, 1) { return DenseForward(params, ndims, shapes, true, Precision::kFloat32); }

// A dense layer added to a residual: y = residual + x @ weight^T + bias, with no separate addition pass.
// in: x [R, K], weight [N, K], bias [N], residual [R, N]; out: y [R, N]. Its gradient is LinearBackward's
// plus dy for the residual.
DVT_KERNEL(LinearResidualForward, 1) {
  const Precision precision = Precision::kFloat32;
  const float *x = IN(0), *weight = IN(1), *bias = IN(2), *residual = IN(3);
  float *y = OUT(4);
  const int64_t k = shapes[0][ndims[0] - 1], rows = Rows(ndims[0], shapes[0]), n = shapes[1][0];
  ParallelRows(rows, Chunks(rows, n), [&](int, int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const float *rr = residual + r * n;
      float *yr = y + r * n;
      for (int64_t c = 0; c < n; ++c) yr[c] = rr[c] + bias[c];
    }
  });
  return Gemm(precision, 'N', 'T', rows, n, k, x, k, weight, k, y, n, true) ? 0 : 2;
}
DVT_KERNEL(LinearBackward, 3) { return DenseBackward(params, ndims, shapes, true); }
DVT_KERNEL(ProjectForward, 1) { return DenseForward(params, ndims, shapes, false, Precision::kFloat32); }
DVT_KERNEL(ProjectBackward, 2) { return DenseBackward(params, ndims, shapes, false); }

// `count` independent products C_i[m, n] = op(A_i) op(B_i) (+ C_i if accumulate) of contiguous [count, ...]
// tensors, each on one thread, the batch split over the threads. Leading dimensions are those of the
// untransposed matrices.
static bool BatchedGemm(Precision precision, char transa, char transb, int64_t count, int64_t m, int64_t n, int64_t k,
                        const float *a, const float *b, float *c, bool accumulate = false) {
  if (precision == Precision::kBFloat16) {
    const int64_t lda = transa == 'N' ? k : m, ldb = transb == 'N' ? n : k;
    return bf16::Product(transa, transb, count, m, n, k, {a, false}, lda, {b, false}, ldb, c, n, accumulate, true);
  }
  const int64_t lda = transa == 'N' ? k : m, ldb = transb == 'N' ? n : k;
  const int64_t size_a = m * k, size_b = k * n, size_c = m * n;
  std::vector<char> ok(MaxThreads(), 1);
  ParallelRows(count, static_cast<int>(std::min<int64_t>(count, MaxThreads())), [&](int chunk, int64_t begin,
                                                                                     int64_t end) {
    SerialPool serial;
    for (int64_t i = begin; i < end && ok[chunk]; ++i) {
      ok[chunk] = dnnl_threadpool_interop_sgemm(transa, transb, m, n, k, 1.0f, a + i * size_a, lda, b + i * size_b,
                                                ldb, accumulate ? 1.0f : 0.0f, c + i * size_c, n,
                                                &serial) == 0;
    }
  });
  return std::all_of(ok.begin(), ok.end(), [](char flag) { return flag != 0; });
}

// Attention scores per (batch, head), plus a bias (DVT's reused relations) if given as a third input.
// in: q [B, H, N, D], k [B, H, M, D] (, bias [B, H, N, M]); out: q @ k^T (+ bias) [B, H, N, M]
DVT_KERNEL(AttentionScores, 1) {
  const HeadShape qs(shapes[0]), ks(shapes[1]);
  const int64_t count = qs.batch * qs.heads;
  float *out = OUT(nparam - 1);
  if (nparam == 4 && !SameShape(ndims, shapes, 2, 3)) return 1;
  if (nparam == 4) std::memcpy(out, IN(2), count * qs.tokens * ks.tokens * sizeof(float));
  return BatchedGemm(Precision::kFloat32, 'N', 'T', count, qs.tokens, ks.tokens, qs.dim, IN(0), IN(1), out, nparam == 4)
             ? 0
             : 2;
}

// Gradient of AttentionScores. in: dlogits [B, H, N, M], q, k; out: dq = dlogits @ k, dk = dlogits^T @ q
DVT_KERNEL(AttentionScoresBackward, 2) {
  const Precision precision = Precision::kFloat32;
  const HeadShape qs(shapes[1]), ks(shapes[2]);
  const int64_t count = qs.batch * qs.heads;
  const bool ok = BatchedGemm(precision, 'N', 'N', count, qs.tokens, qs.dim, ks.tokens, IN(0), IN(2), OUT(3)) &&
                  BatchedGemm(precision, 'T', 'N', count, ks.tokens, qs.dim, qs.tokens, IN(0), IN(1), OUT(4));
  return ok ? 0 : 2;
}

// Attention-weighted values. in: probs [B, H, N, M], v [B, H, M, D]; out: probs @ v [B, H, N, D]
DVT_KERNEL(AttentionMix, 1) {
  const Precision precision = Precision::kFloat32;
  const HeadShape ps(shapes[0]), vs(shapes[1]);
  const int64_t count = ps.batch * ps.heads;
  return BatchedGemm(precision, 'N', 'N', count, ps.tokens, vs.dim, vs.tokens, IN(0), IN(1), OUT(2)) ? 0 : 2;
}

// Gradient of AttentionMix. in: dout [B, H, N, D], probs, v; out: dprobs = dout @ v^T, dv = probs^T @ dout
DVT_KERNEL(AttentionMixBackward, 2) {
  const Precision precision = Precision::kFloat32;
  const HeadShape ps(shapes[1]), vs(shapes[2]);
  const int64_t count = ps.batch * ps.heads;
  const bool ok = BatchedGemm(precision, 'N', 'T', count, ps.tokens, vs.tokens, vs.dim, IN(0), IN(2), OUT(3)) &&
                  BatchedGemm(precision, 'T', 'N', count, vs.tokens, vs.dim, ps.tokens, IN(1), IN(0), OUT(4));
  return ok ? 0 : 2;
}

// y[b] = weight @ x[b] (+ bias per row): a 1x1 convolution over axis 1, or a fixed resampling matrix.
// in: x [B, I, L], weight [O, I], bias [O]; out: y [B, O, L]
DVT_KERNEL(ChannelMixForward, 1) {
  const Precision precision = Precision::kFloat32;
  const float *x = IN(0), *weight = IN(1), *bias = IN(2);
  float *y = OUT(3);
  const int64_t batch = shapes[0][0], in = shapes[0][1], length = shapes[0][2], out = shapes[1][0];
  for (int64_t b = 0; b < batch; ++b) {
    float *yb = y + b * out * length;
    for (int64_t o = 0; o < out; ++o) std::fill(yb + o * length, yb + (o + 1) * length, bias[o]);
    if (!Gemm(precision, 'N', 'N', out, length, in, weight, in, x + b * in * length, length, yb, length, true)) return 2;
  }
  return 0;
}

// Gradients of ChannelMixForward. in: dy [B, O, L], x [B, I, L], weight [O, I];
// out: dx [B, I, L], dweight [O, I], dbias [O]. weight_grad false: a constant weight, zero gradients.
static int ChannelMixGrads(void **params, int64_t **shapes, Precision precision, bool weight_grad) {
  const float *dy = IN(0), *x = IN(1), *weight = IN(2);
  float *dx = OUT(3), *dweight = OUT(4), *dbias = OUT(5);
  const int64_t batch = shapes[0][0], out = shapes[0][1], length = shapes[0][2], in = shapes[1][1];
  std::fill(dweight, dweight + out * in, 0.0f);
  std::fill(dbias, dbias + out, 0.0f);
  for (int64_t b = 0; b < batch; ++b) {
    const float *dyb = dy + b * out * length, *xb = x + b * in * length;
    if (!Gemm(precision, 'T', 'N', in, length, out, weight, in, dyb, length, dx + b * in * length, length)) return 2;
    if (!weight_grad) continue;
    if (!Gemm(precision, 'N', 'T', out, in, length, dyb, length, xb, length, dweight, in, true)) return 2;
    for (int64_t o = 0; o < out; ++o) dbias[o] += Sum(dyb + o * length, length);
  }
  return 0;
}

DVT_PRODUCT_KERNEL(ChannelMixBackward, 3) { return ChannelMixGrads(params, shapes, precision, true); }
DVT_PRODUCT_KERNEL(ConstChannelMixBackward, 3) { return ChannelMixGrads(params, shapes, precision, false); }

// The bfloat16 products and their gradients, which take and give bfloat16 activations.
#include "cpu_ops_activations.inc"
#include "cpu_ops_bf16_grads.inc"
#include "cpu_ops_optim.inc"
#include "cpu_ops_resample.inc"
