// What mmgc's fused CPU kernels (GC + a whole optimizer step in one visit of each weight) share:
// the checks that decide whether a param group can take them, and the split of the work into
// blocks of whole rows for the threads.
#pragma once
#include <torch/extension.h>

#include <ATen/Parallel.h>
#include <ATen/TensorSubclassLikeUtils.h>

#include <algorithm>
#include <atomic>
#include <exception>
#include <utility>
#include <vector>

// Built for the machine's vector width at run time (AVX-512, AVX2+FMA or baseline x86-64): the
// steps are compute-bound on baseline SSE2 code. The SGD step, bound by memory, leaves AVX-512
// out: on the AMD EPYC (Zen 4) it was measured on, 512-bit stores take two cycles and its
// AVX-512 build was 3% slower than the AVX2 one; Adam's arithmetic gains from AVX-512. Other
// architectures get one portable build.
//
// A function built with target_clones must not throw, nor call anything that can: GCC 12
// compiles a direct call to one as if it could not throw, so an exception raised below it skips
// every handler and ends the process (std::terminate), even at -O0 and outside any parallel
// region. The kernels therefore take their tensors' data pointers before (Item::w_data, ...,
// filled by bind_data, where an error is an ordinary exception) and run only arithmetic in them.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define MMGC_TARGET_CLONES \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#define MMGC_TARGET_CLONES_AVX2 __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define MMGC_TARGET_CLONES
#define MMGC_TARGET_CLONES_AVX2
#endif

namespace mmgc {

// Sums run in pieces of 256 values: a short sum in T vectorizes fully (a running sum in double
// halves the vector width and waits on each addition), and the pieces add up in double.
constexpr int64_t kPiece = 256;
// Work is split into blocks of whole rows of about this many values; tensors that are not
// centralized are cut into rows of kChunk values.
constexpr int64_t kBlockValues = 1 << 16;
constexpr int64_t kChunk = 1 << 12;

// Sum of a[j] (+ c * b[j] with kWithB) over one row of m values.
template <typename T, bool kWithB>
inline double row_sum(const T* __restrict__ a, const T* __restrict__ b, T c, int64_t m) {
  double total = 0.0;
  for (int64_t j0 = 0; j0 < m; j0 += kPiece) {
    const int64_t j1 = std::min(m, j0 + kPiece);
    T sum = 0;
    if constexpr (kWithB) {
#pragma omp simd reduction(+ : sum)
      for (int64_t j = j0; j < j1; ++j) sum += a[j] + c * b[j];
    } else {
#pragma omp simd reduction(+ : sum)
      for (int64_t j = j0; j < j1; ++j) sum += a[j];
    }
    total += static_cast<double>(sum);
  }
  return total;
}

template <typename T>
inline void row_add(T* __restrict__ a, T value, int64_t m) {
#pragma omp simd
  for (int64_t j = 0; j < m; ++j) a[j] += value;
}

// One parameter of the step: its gradient, its optimizer states (momentum buffer; or exp_avg and
// exp_avg_sq), and how its values split into rows: dim-0 slices (row_len = numel / size(0)) when
// GC centralizes it, chunks of kChunk values otherwise.
struct Item {
  at::Tensor w, g;
  std::vector<at::Tensor> states;
  bool centralize;
  int64_t numel, row_len;
  double step_size, bc2_sqrt;  // Adam: lr / (1 - beta1^t), sqrt(1 - beta2^t)
  // The memory of w, g and the states, read and written by the blocks (see bind_data).
  void* w_data = nullptr;
  const void* g_data = nullptr;
  std::vector<void*> state_data;
};

// Takes the data pointers of every item's tensors, once all of them are final (after a first
// momentum buffer is allocated): the only place the kernels ask a tensor for its memory.
inline void bind_data(std::vector<Item>& items) {
  for (auto& item : items) {
    item.w_data = item.w.mutable_data_ptr();
    item.g_data = item.g.const_data_ptr();
    item.state_data.clear();
    for (const auto& s : item.states) item.state_data.push_back(s.mutable_data_ptr());
  }
}

// Rows [begin, end) of one item.
struct Block {
  int64_t item, begin, end;
};

// mmgc.gc.gc_applies: conv / fc weights (ndim > 1, or ndim > 3 with conv_only) with more than
// one value per dim-0 slice.
inline bool centralized(const at::Tensor& w, bool conv_only) {
  return w.dim() >= (conv_only ? 4 : 2) && w.numel() > w.size(0);
}

// Whether the kernels may read and write `t` through its data pointer: a defined, strided CPU
// tensor that owns its memory, and nothing that expects to see its operations. Refused: tensor
// subclasses with the Python key (DTensor, FakeTensor, any __torch_dispatch__ wrapper: they may
// have no storage), functorch wrappers, sparse and meta tensors, negative views (the sign lives
// in a flag, not in memory), symbolic shapes, inference tensors (bumping their version throws),
// and any tensor while a dispatch mode is active. mmgc.ops.kernel_tensor checks the cheap part
// of this in Python before any kernel is called; this is the guard behind it, so that
// bind_data never meets a tensor whose memory cannot be had.
inline bool kernel_tensor(const at::Tensor& t) {
  try {
    if (!t.defined() || at::isTensorSubclassLike(t) || t.layout() != at::kStrided ||
        !t.device().is_cpu() || t.is_neg() || t.is_conj() || t.is_inference() ||
        t.unsafeGetTensorImpl()->has_symbolic_sizes_strides() || !t.has_storage())
      return false;
    return t.numel() == 0 || t.const_data_ptr() != nullptr;
  } catch (const std::exception&) {  // whatever cannot even be asked cannot be taken
    return false;
  }
}

inline bool same_layout(const at::Tensor& a, const at::Tensor& w) {
  return kernel_tensor(a) && a.scalar_type() == w.scalar_type() && a.sizes() == w.sizes() &&
         a.strides() == w.strides();
}

// Whether the memory of the tensors written by a step (params and states; or the tensors that
// centralize_ shifts) is disjoint. Threads take the blocks of different items at once: a tensor
// listed twice (the same Parameter twice in a param group) or two views of one memory would be
// stepped twice at the same time, a race. Each tensor is dense (checked before), so it spans
// [data, data + numel) of its element type.
inline bool disjoint(const std::vector<at::Tensor>& written) {
  std::vector<std::pair<uintptr_t, uintptr_t>> spans;
  spans.reserve(written.size());
  for (const auto& t : written) {
    if (!t.defined() || t.numel() == 0) continue;
    const auto begin = reinterpret_cast<uintptr_t>(t.const_data_ptr());
    spans.emplace_back(begin, begin + static_cast<uintptr_t>(t.numel()) * t.element_size());
  }
  std::sort(spans.begin(), spans.end());
  for (size_t i = 1; i < spans.size(); ++i)
    if (spans[i].first < spans[i - 1].second) return false;
  return true;
}

// The items of a param group, or an empty vector when some tensor cannot take the kernels (see
// kernel_tensor; not float32 / float64, gaps in memory, rows not dense, a gradient or a state
// laid out unlike its parameter, tensors written twice or overlapping): the caller then takes the
// plain path for the whole group. States may be undefined where `undefined_ok` (a momentum
// buffer before the first step). Nothing here reads a tensor's values.
inline std::vector<Item> make_items(const std::vector<at::Tensor>& params,
                                    const std::vector<at::Tensor>& grads,
                                    const std::vector<std::vector<at::Tensor>>& states,
                                    bool conv_only, bool undefined_ok) {
  TORCH_CHECK(params.size() == grads.size(), "mmgc: params and grads differ in length");
  for (const auto& s : states)
    TORCH_CHECK(s.size() == params.size(), "mmgc: params and optimizer states differ in length");
  std::vector<Item> items;
  for (size_t i = 0; i < params.size(); ++i) {
    const at::Tensor& w = params[i];
    if (!kernel_tensor(w)) return {};
    const auto dtype = w.scalar_type();
    if ((dtype != at::kFloat && dtype != at::kDouble) || w.numel() == 0 ||
        !w.is_non_overlapping_and_dense() || !same_layout(grads[i], w))
      return {};
    Item item{w, grads[i], {}, centralized(w, conv_only), w.numel(), kChunk, 0.0, 0.0};
    if (item.centralize) {
      item.row_len = item.numel / w.size(0);
      if (w.stride(0) != item.row_len) return {};  // dim 0 must be the outermost
    }
    for (const auto& s : states) {
      if (!s[i].defined() && undefined_ok) {
        item.states.push_back(s[i]);
        continue;
      }
      if (!same_layout(s[i], w)) return {};
      item.states.push_back(s[i]);
    }
    items.push_back(std::move(item));
  }
  std::vector<at::Tensor> written;
  for (const auto& item : items) {
    written.push_back(item.w);
    written.insert(written.end(), item.states.begin(), item.states.end());
  }
  if (!disjoint(written)) return {};
  return items;
}

inline int64_t row_count(const Item& item) {
  return (item.numel + item.row_len - 1) / item.row_len;
}

// Runs fn(item, first_row, last_row) over all rows, in blocks of whole rows (a row's mean is
// taken by one thread) of about kBlockValues values. The threads take the blocks from a shared
// queue: a centralized row costs more than the same number of bias values, so an even split of
// the values (at::parallel_for) left one thread waiting; the queue measured 1-2% faster on the
// whole SGD step of a Faster R-CNN. fn reads the items' memory through their data pointers
// (bind_data). Should fn throw all the same (the blocks themselves cannot: see
// MMGC_TARGET_CLONES), the first error stops the queue and is thrown again here, after the
// parallel region, as an ordinary exception.
template <typename Fn>
void for_blocks(const std::vector<Item>& items, const Fn& fn) {
  for (const auto& item : items)
    TORCH_CHECK(item.w_data != nullptr && item.g_data != nullptr &&
                    item.state_data.size() == item.states.size(),
                "mmgc: a kernel ran before bind_data");
  std::vector<Block> blocks;
  for (int64_t i = 0; i < static_cast<int64_t>(items.size()); ++i) {
    const int64_t rows = row_count(items[i]);
    const int64_t per_block = std::max<int64_t>(1, kBlockValues / items[i].row_len);
    for (int64_t r = 0; r < rows; r += per_block)
      blocks.push_back({i, r, std::min(rows, r + per_block)});
  }
  const int64_t count = static_cast<int64_t>(blocks.size());
  std::atomic<int64_t> next{0};
  std::atomic_flag failed = ATOMIC_FLAG_INIT;
  std::exception_ptr error;
  const auto take_blocks = [&](int64_t, int64_t) noexcept {
    try {
      for (int64_t k; (k = next.fetch_add(1, std::memory_order_relaxed)) < count;)
        fn(items[blocks[k].item], blocks[k].begin, blocks[k].end);
    } catch (...) {
      next.store(count, std::memory_order_relaxed);
      if (!failed.test_and_set()) error = std::current_exception();
    }
  };
  const int64_t workers = std::min<int64_t>(at::get_num_threads(), count);
  if (workers <= 1 || at::in_parallel_region())
    take_blocks(0, 1);
  else
    at::parallel_for(0, workers, 1, take_blocks);
  if (error) std::rethrow_exception(error);
}

// Written through raw pointers: tell autograd the tensors changed, as an in-place op would.
inline void bump_versions(const std::vector<Item>& items) {
  for (const auto& item : items) {
    item.w.unsafeGetTensorImpl()->bump_version();
    for (const auto& s : item.states) s.unsafeGetTensorImpl()->bump_version();
  }
}

std::tuple<bool, std::vector<at::Tensor>> gc_sgd_(
    const std::vector<at::Tensor>& params,
    const std::vector<at::Tensor>& grads, const std::vector<c10::optional<at::Tensor>>& bufs,
    bool conv_only, double weight_decay, double decoupled_weight_decay, double momentum,
    double dampening, double lr, bool nesterov, bool maximize);

bool gc_centralize_(const std::vector<at::Tensor>& tensors, const std::vector<at::Tensor>& params,
                    double decay);

std::tuple<bool, at::Tensor, int64_t> gc_triton_table(
    const std::vector<at::Tensor>& params, const std::vector<at::Tensor>& grads,
    const std::vector<std::vector<at::Tensor>>& states, const std::vector<int64_t>& flags,
    const std::vector<at::Tensor>& counts, bool counts_in_table, bool conv_only,
    bool centralized_only, int64_t chunk, const std::vector<double>& header, int64_t header_len,
    const std::vector<int64_t>& packed, bool pin);

bool gc_adam_(const std::vector<at::Tensor>& params, const std::vector<at::Tensor>& grads,
              const std::vector<at::Tensor>& exp_avgs, const std::vector<at::Tensor>& exp_avg_sqs,
              const std::vector<at::Tensor>& steps, bool conv_only, double lr, double beta1,
              double beta2, double eps, double weight_decay, bool decoupled, bool maximize,
              bool centralize_update);

}  // namespace mmgc
