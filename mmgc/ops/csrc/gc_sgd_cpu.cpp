// Fused Gradient Centralization + SGD step for CPU tensors (mmgc's fast path for SGDGC / SGDWGC).
//
// For every weight w of shape (R, ...) that GC centralizes, M = numel / R values per output
// channel, and each row i (its dim-0 slice):
//   d      = s * g + wd * w                  (s = -1 with maximize, as torch.optim.SGD)
//   d     -= mean(d)                         (Phi, Eq. 1 of the paper)
//   buf    = d                        (first step)    or  momentum * buf + (1 - dampening) * d
//   update = d + momentum * buf       (nesterov)      or  buf            (momentum == 0: d)
//   w      = w * (1 - lr * decoupled_wd) - lr * update        (SGDW; decoupled_wd = 0 for SGD)
// This is torch.optim.SGD's math on Phi(g + wd * w); the other tensors of the group (biases,
// norms) take the same step without the mean. The tests check it against the plain path
// (mmgc.gc.centralize_ followed by torch's own SGD step) and against the paper's definition.
#include "gc_cpu.h"

#include <array>

namespace mmgc {
namespace {

struct SgdHyper {
  double sign, wd, shrink, momentum, keep, lr;
};

template <typename T>
inline std::array<T, 6> scalars(const SgdHyper& h) {
  return {static_cast<T>(h.sign), static_cast<T>(h.wd),   static_cast<T>(h.shrink),
          static_cast<T>(h.momentum), static_cast<T>(h.keep), static_cast<T>(h.lr)};
}

// A tensor GC does not centralize (bias, norm): torch's step, in one visit.
template <typename T, bool kMomentum, bool kNesterov, bool kFirst, bool kDecay>
inline void sgd_values(T* __restrict__ w, const T* __restrict__ g, T* __restrict__ b, int64_t m,
                       const SgdHyper& h) {
  const auto [s, decay, shrink, mom, keep, lr] = scalars<T>(h);
#pragma omp simd
  for (int64_t j = 0; j < m; ++j) {
    const T old = w[j];
    const T d = kDecay ? s * g[j] + decay * old : s * g[j];
    T update = d;
    if constexpr (kMomentum) {
      const T buf = kFirst ? d : mom * b[j] + keep * d;
      b[j] = buf;
      update = kNesterov ? d + mom * buf : buf;
    }
    w[j] = old * shrink - lr * update;
  }
}

// A centralized row in two visits, so that memory is read once, as by torch's fused step:
//   A. (from memory) d' = s * g + wd * w, uncentered; its sum; and the momentum buffer without
//      the mean, buf' = momentum * buf + (1 - dampening) * d' (d' itself on the first step);
//   B. (from cache) buf = buf' - (1 - dampening) * mean(d'), which is the buffer of the centered
//      d, and the weight update from it (nesterov: recomputing d from g and w).
// Alternatives measured slower (README, Performance): the whole step in A and the mean's share
// taken out of buf and w in B (one more store per value); the mean alone in A and the whole step
// in B; either interleaved with the next row; software prefetch of the next row.
template <typename T, bool kMomentum, bool kNesterov, bool kFirst, bool kDecay>
inline void sgd_row(T* __restrict__ w, const T* __restrict__ g, T* __restrict__ b, int64_t m,
                    const SgdHyper& h) {
  const auto [s, decay, shrink, mom, keep, lr] = scalars<T>(h);
  double total = 0.0;
  for (int64_t j0 = 0; j0 < m; j0 += kPiece) {
    const int64_t j1 = std::min(m, j0 + kPiece);
    T piece = 0;
#pragma omp simd reduction(+ : piece)
    for (int64_t j = j0; j < j1; ++j) {
      const T d = kDecay ? s * g[j] + decay * w[j] : s * g[j];
      piece += d;
      if constexpr (kMomentum) b[j] = kFirst ? d : mom * b[j] + keep * d;
    }
    total += static_cast<double>(piece);
  }
  const T mean = static_cast<T>(total / static_cast<double>(m));
  const T buf_shift = static_cast<T>(kFirst ? 1.0 : h.keep) * mean;
#pragma omp simd
  for (int64_t j = 0; j < m; ++j) {
    const T old = w[j];
    T update;
    if constexpr (kMomentum) {
      const T buf = b[j] - buf_shift;
      b[j] = buf;
      update = kNesterov ? (kDecay ? s * g[j] + decay * old : s * g[j]) - mean + mom * buf : buf;
    } else {
      update = (kDecay ? s * g[j] + decay * old : s * g[j]) - mean;
    }
    w[j] = old * shrink - lr * update;
  }
}

template <typename T, bool kCentralize, bool kMomentum, bool kNesterov, bool kFirst, bool kDecay>
MMGC_TARGET_CLONES_AVX2 void sgd_rows(const Item& item, int64_t begin, int64_t end,
                                 const SgdHyper& h) {
  T* w = static_cast<T*>(item.w_data);
  const T* g = static_cast<const T*>(item.g_data);
  T* b = kMomentum ? static_cast<T*>(item.state_data[0]) : nullptr;
  const int64_t m = item.row_len;
  for (int64_t r = begin; r < end; ++r) {
    const int64_t offset = r * m;
    T* row_b = kMomentum ? b + offset : nullptr;
    if constexpr (kCentralize)
      sgd_row<T, kMomentum, kNesterov, kFirst, kDecay>(w + offset, g + offset, row_b, m, h);
    else
      sgd_values<T, kMomentum, kNesterov, kFirst, kDecay>(w + offset, g + offset, row_b,
                                                          std::min(m, item.numel - offset), h);
  }
}

template <typename T, bool kMomentum, bool kNesterov, bool kDecay>
void sgd_block(const Item& item, int64_t begin, int64_t end, bool first, const SgdHyper& h) {
  if (item.centralize) {
    first ? sgd_rows<T, true, kMomentum, kNesterov, true, kDecay>(item, begin, end, h)
          : sgd_rows<T, true, kMomentum, kNesterov, false, kDecay>(item, begin, end, h);
  } else {
    first ? sgd_rows<T, false, kMomentum, kNesterov, true, kDecay>(item, begin, end, h)
          : sgd_rows<T, false, kMomentum, kNesterov, false, kDecay>(item, begin, end, h);
  }
}

template <bool kMomentum, bool kNesterov, bool kDecay>
void run(const std::vector<Item>& items, const std::vector<bool>& first, const SgdHyper& h) {
  for_blocks(items, [&](const Item& item, int64_t begin, int64_t end) {
    const bool is_first = kMomentum && first[&item - items.data()];
    if (item.w.scalar_type() == at::kFloat)
      sgd_block<float, kMomentum, kNesterov, kDecay>(item, begin, end, is_first, h);
    else
      sgd_block<double, kMomentum, kNesterov, kDecay>(item, begin, end, is_first, h);
  });
}

template <bool kDecay>
void dispatch(const std::vector<Item>& items, const std::vector<bool>& first, const SgdHyper& h,
              bool momentum, bool nesterov) {
  if (!momentum) return run<false, false, kDecay>(items, first, h);
  if (nesterov) return run<true, true, kDecay>(items, first, h);
  run<true, false, kDecay>(items, first, h);
}

}  // namespace

// One SGD step of a whole param group. Returns whether it was taken (false: the group cannot take
// the kernel, and nothing was changed) and the momentum buffers (new ones where a parameter had
// none yet: torch's first step).
std::tuple<bool, std::vector<at::Tensor>> gc_sgd_(
    const std::vector<at::Tensor>& params,
    const std::vector<at::Tensor>& grads, const std::vector<c10::optional<at::Tensor>>& bufs,
    bool conv_only, double weight_decay, double decoupled_weight_decay, double momentum,
    double dampening, double lr, bool nesterov, bool maximize) {
  const bool use_momentum = momentum != 0.0;
  TORCH_CHECK(!use_momentum || bufs.size() == params.size(),
              "gc_sgd_: params and momentum buffers differ in length");
  std::vector<std::vector<at::Tensor>> states;
  if (use_momentum) {
    states.emplace_back();
    for (const auto& b : bufs) states[0].push_back(b.has_value() ? *b : at::Tensor());
  }
  std::vector<Item> items = make_items(params, grads, states, conv_only, true);
  if (items.size() != params.size() || items.empty()) return {false, {}};
  std::vector<bool> first(items.size(), false);
  std::vector<at::Tensor> out;
  if (use_momentum) {
    for (size_t i = 0; i < items.size(); ++i) {
      if (!items[i].states[0].defined()) {
        items[i].states[0] = at::empty_like(items[i].w);
        first[i] = true;
      }
      out.push_back(items[i].states[0]);
    }
  }
  bind_data(items);
  const SgdHyper h{maximize ? -1.0 : 1.0, weight_decay, 1.0 - lr * decoupled_weight_decay,
                   momentum, 1.0 - dampening, lr};
  {
    at::NoGradGuard no_grad;
    if (weight_decay != 0.0)
      dispatch<true>(items, first, h, use_momentum, nesterov);
    else
      dispatch<false>(items, first, h, use_momentum, nesterov);
  }
  bump_versions(items);
  return {true, out};
}

}  // namespace mmgc
