// Fused Gradient Centralization + SGD step for CPU tensors (mmgc's fast path).
//
// For every weight w of shape (R, ...) with M = numel / R values per output channel, and each
// row i (its dim-0 slice; see sgd_row for how the row is visited):
//   d      = s * g + wd * w                  (s = -1 with maximize, as torch.optim.SGD)
//   d     -= mean(d)                         (Phi, Eq. 1 of the paper)
//   buf    = d                        (first step)    or  momentum * buf + (1 - dampening) * d
//   update = d + momentum * buf       (nesterov)      or  buf            (momentum == 0: d)
//   w      = w * (1 - lr * decoupled_wd) - lr * update        (SGDW; decoupled_wd = 0 for SGD)
// This is torch.optim.SGD's math on Phi(g + wd * w); the tests check it against the plain path
// (mmgc.gc.centralize_ followed by torch's own SGD step) and against the paper's definition.
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

// Built for the machine's vector width at run time (AVX-512, AVX2+FMA or baseline x86-64): the
// step is compute-bound on baseline SSE2 code. Other architectures get one portable build.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define MMGC_TARGET_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define MMGC_TARGET_CLONES
#endif

namespace {

struct Hyper {
  double sign, wd, shrink, momentum, keep, lr;
};

// Sums in pieces of 256 values: a short sum in T vectorizes fully (a running sum in double halves
// the vector width and waits on each addition), and the pieces add up in double.
constexpr int64_t kPiece = 256;

// Each row in three visits, so that memory is read once, as by torch's fused step:
//   A. mean of s * g (g comes into cache);
//   B. the step with d' = s * g + wd * w - mean(s * g), summing the old w on the way;
//   C. the step is linear in the missing -wd * mean(w): add its share to buf and w (in cache).
// Taking mean(s * g + wd * w) before the step instead would read w twice from memory.
// kMomentum / kNesterov / kFirst are compile-time so that the inner loops have no branches.
template <typename T, bool kMomentum, bool kNesterov, bool kFirst>
inline void sgd_row(T* __restrict__ w, const T* __restrict__ g, T* __restrict__ b, int64_t m,
                    const Hyper& h) {
  const T s = static_cast<T>(h.sign), decay = static_cast<T>(h.wd);
  const T shrink = static_cast<T>(h.shrink), mom = static_cast<T>(h.momentum);
  const T keep = static_cast<T>(h.keep), lr = static_cast<T>(h.lr);
  double total = 0.0;
  for (int64_t j0 = 0; j0 < m; j0 += kPiece) {
    const int64_t j1 = std::min(m, j0 + kPiece);
    T sum = 0;
#pragma omp simd reduction(+ : sum)
    for (int64_t j = j0; j < j1; ++j) sum += g[j];
    total += static_cast<double>(sum);
  }
  const T mean = static_cast<T>(static_cast<double>(s) * total / static_cast<double>(m));
  double w_total = 0.0;
  for (int64_t j0 = 0; j0 < m; j0 += kPiece) {
    const int64_t j1 = std::min(m, j0 + kPiece);
    T w_sum = 0;
#pragma omp simd reduction(+ : w_sum)
    for (int64_t j = j0; j < j1; ++j) {
      const T old = w[j];
      w_sum += old;
      const T d = s * g[j] + decay * old - mean;
      T update = d;
      if constexpr (kMomentum) {
        const T buf = kFirst ? d : mom * b[j] + keep * d;
        b[j] = buf;
        update = kNesterov ? d + mom * buf : buf;
      }
      w[j] = old * shrink - lr * update;
    }
    w_total += static_cast<double>(w_sum);
  }
  if (h.wd == 0.0) return;
  // delta = wd * mean(old w) belongs in d: d = d' - delta, so buf -= c_buf * delta and
  // update -= c_update * delta, with the coefficients of d in each.
  const double delta = h.wd * w_total / static_cast<double>(m);
  double c_buf = 0.0, c_update = 1.0;
  if (kMomentum) {
    c_buf = kFirst ? 1.0 : h.keep;
    c_update = kNesterov ? 1.0 + h.momentum * c_buf : c_buf;
  }
  const T w_shift = static_cast<T>(h.lr * c_update * delta);
  if constexpr (kMomentum) {
    const T b_shift = static_cast<T>(c_buf * delta);
#pragma omp simd
    for (int64_t j = 0; j < m; ++j) b[j] -= b_shift;
  }
#pragma omp simd
  for (int64_t j = 0; j < m; ++j) w[j] += w_shift;
}

template <typename T, bool kMomentum, bool kNesterov, bool kFirst>
MMGC_TARGET_CLONES void sgd_rows(T* __restrict__ w, const T* __restrict__ g, T* __restrict__ b,
                                 int64_t rows, int64_t m, const Hyper& h) {
  for (int64_t r = 0; r < rows; ++r)
    sgd_row<T, kMomentum, kNesterov, kFirst>(w + r * m, g + r * m, kMomentum ? b + r * m : nullptr,
                                             m, h);
}

struct Block {
  at::Tensor w, g, b;
  int64_t m, begin, end;
};

template <typename T, bool kMomentum, bool kNesterov, bool kFirst>
void run_blocks(const std::vector<Block>& blocks, const Hyper& h) {
  at::parallel_for(0, static_cast<int64_t>(blocks.size()), 1, [&](int64_t lo, int64_t hi) {
    for (int64_t k = lo; k < hi; ++k) {
      const Block& blk = blocks[k];
      T* w = blk.w.data_ptr<T>();
      const T* g = blk.g.data_ptr<T>();
      T* b = kMomentum ? blk.b.data_ptr<T>() : nullptr;
      const int64_t offset = blk.begin * blk.m;
      sgd_rows<T, kMomentum, kNesterov, kFirst>(w + offset, g + offset,
                                                kMomentum ? b + offset : nullptr,
                                                blk.end - blk.begin, blk.m, h);
    }
  });
}

template <typename T>
void dispatch(const std::vector<Block>& blocks, const Hyper& h, bool momentum, bool nesterov,
              bool first) {
  if (!momentum) return run_blocks<T, false, false, false>(blocks, h);
  if (nesterov) {
    return first ? run_blocks<T, true, true, true>(blocks, h)
                 : run_blocks<T, true, true, false>(blocks, h);
  }
  return first ? run_blocks<T, true, false, true>(blocks, h)
               : run_blocks<T, true, false, false>(blocks, h);
}

void gc_sgd_(std::vector<at::Tensor> params, std::vector<at::Tensor> grads,
             std::vector<at::Tensor> bufs, double weight_decay, double decoupled_weight_decay,
             double momentum, double dampening, double lr, bool nesterov, bool maximize,
             bool first_step) {
  TORCH_CHECK(params.size() == grads.size(), "gc_sgd_: params and grads differ in length");
  const bool use_momentum = momentum != 0.0;
  TORCH_CHECK(!use_momentum || params.size() == bufs.size(),
              "gc_sgd_: params and momentum buffers differ in length");
  if (params.empty()) return;
  const auto dtype = params[0].scalar_type();
  // Blocks of whole rows, about 64K values each, so that both threads get work.
  constexpr int64_t kBlockValues = 1 << 16;
  std::vector<Block> blocks;
  for (size_t i = 0; i < params.size(); ++i) {
    const at::Tensor& w = params[i];
    const at::Tensor& g = grads[i];
    TORCH_CHECK(w.device().is_cpu() && g.device().is_cpu(), "gc_sgd_: CPU tensors only");
    TORCH_CHECK(w.scalar_type() == dtype && g.scalar_type() == dtype,
                "gc_sgd_: all tensors of one call share a dtype");
    TORCH_CHECK(w.sizes() == g.sizes() && w.strides() == g.strides(),
                "gc_sgd_: a gradient must match its parameter's shape and strides");
    const int64_t rows = w.size(0), m = w.numel() / std::max<int64_t>(rows, 1);
    TORCH_CHECK(rows > 0 && m > 1 && w.stride(0) == m,
                "gc_sgd_: dim-0 slices must be dense blocks of more than one value");
    at::Tensor b;
    if (use_momentum) {
      b = bufs[i];
      TORCH_CHECK(b.scalar_type() == dtype && b.strides() == w.strides(),
                  "gc_sgd_: a momentum buffer must match its parameter's dtype and strides");
    }
    const int64_t rows_per_block = std::max<int64_t>(1, kBlockValues / m);
    for (int64_t r = 0; r < rows; r += rows_per_block)
      blocks.push_back({w, g, b, m, r, std::min(rows, r + rows_per_block)});
  }
  const Hyper h{maximize ? -1.0 : 1.0, weight_decay, 1.0 - lr * decoupled_weight_decay, momentum,
                1.0 - dampening, lr};
  {
    at::NoGradGuard no_grad;
    AT_DISPATCH_FLOATING_TYPES(dtype, "gc_sgd_", [&] {
      dispatch<scalar_t>(blocks, h, use_momentum, nesterov, first_step);
    });
  }
  // Written through raw pointers: tell autograd the tensors changed, as an in-place op would.
  for (size_t i = 0; i < params.size(); ++i) {
    params[i].unsafeGetTensorImpl()->bump_version();
    if (use_momentum) bufs[i].unsafeGetTensorImpl()->bump_version();
  }
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  module.def("gc_sgd_", &gc_sgd_, "Fused Gradient Centralization + SGD step (CPU)");
}
