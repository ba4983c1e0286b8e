// Fused Gradient Centralization + Adam / AdamW step for CPU tensors (mmgc's fast path for AdamGC
// and AdamWGC).
//
// For every weight w of shape (R, ...) that GC centralizes, each row i (its dim-0 slice), with
// s = -1 under maximize, wd the L2 decay (Adam; 0 for AdamW), wd' the decoupled decay (AdamW;
// 0 for Adam) and t the step count:
//   d     = s * g + wd * w;   d -= mean(d)                        (gc_loc='grad' only: Phi)
//   m     = m + (1 - beta1) * (d - m);   v = beta2 * v + (1 - beta2) * d * d
//   u     = lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
//   w_new = w * (1 - lr * wd') - u
//   w_new += mean(w - w_new)                                      (gc_loc='update' only)
// This is torch.optim.Adam(W)'s math; the other tensors of the group (biases, norms) take the
// same step without the means. The tests check it against the plain path (mmgc.gc, then torch's
// own step).
#include "gc_cpu.h"

#include <cmath>

namespace mmgc {
namespace {

struct AdamHyper {
  double sign, wd, shrink, beta1, beta2, eps;
};

// The step of one row (its values less `mean`, gc_loc='grad'). Returns, with kNext, the sum of
// the next row's s * g + wd * w (its mean for the next call), taken on the way; with kChange,
// the sum of the change the step made (gc_loc='update').
template <typename T, bool kDecay, bool kNext, bool kChange>
inline double adam_row(T* __restrict__ w, const T* __restrict__ g, T* __restrict__ m1,
                       T* __restrict__ m2, int64_t m, T step_size, T bc2_sqrt, T mean,
                       const T* __restrict__ next_g, const T* __restrict__ next_w,
                       const AdamHyper& h) {
  const T s = static_cast<T>(h.sign), decay = static_cast<T>(h.wd), ds = decay * s;
  const T shrink = static_cast<T>(h.shrink), lerp = static_cast<T>(1.0 - h.beta1);
  const T beta2 = static_cast<T>(h.beta2), rest2 = static_cast<T>(1.0 - h.beta2);
  const T eps = static_cast<T>(h.eps);
  double total = 0.0;
  for (int64_t j0 = 0; j0 < m; j0 += kPiece) {
    const int64_t j1 = std::min(m, j0 + kPiece);
    T piece = 0;
#pragma omp simd reduction(+ : piece)
    for (int64_t j = j0; j < j1; ++j) {
      if constexpr (kNext) piece += kDecay ? next_g[j] + ds * next_w[j] : next_g[j];
      const T old = w[j];
      const T d = (kDecay ? s * g[j] + decay * old : s * g[j]) - mean;
      const T avg = m1[j] + lerp * (d - m1[j]);
      const T avg_sq = beta2 * m2[j] + rest2 * d * d;
      m1[j] = avg;
      m2[j] = avg_sq;
      const T fresh = old * shrink - step_size * avg / (std::sqrt(avg_sq) / bc2_sqrt + eps);
      w[j] = fresh;
      if constexpr (kChange) piece += old - fresh;
    }
    if constexpr (kNext || kChange) total += static_cast<double>(piece);
  }
  return total;
}

// Each centralized row is read from memory once, as by torch's step:
//   gc_loc='grad':   the mean of a row is summed while the step of the row before it runs (the
//                    step waits on memory and arithmetic anyway), so the row is in cache when
//                    its own step comes;
//   gc_loc='update': the step sums the change it makes; the mean change is then taken back out
//                    of the row, still in cache.
template <typename T, bool kCentralize, bool kDecay, bool kUpdate>
MMGC_TARGET_CLONES void adam_rows(const Item& item, int64_t begin, int64_t end,
                                  const AdamHyper& h) {
  T* w = static_cast<T*>(item.w_data);
  const T* g = static_cast<const T*>(item.g_data);
  T* m1 = static_cast<T*>(item.state_data[0]);
  T* m2 = static_cast<T*>(item.state_data[1]);
  const int64_t m = item.row_len;
  const T step_size = static_cast<T>(item.step_size), bc2_sqrt = static_cast<T>(item.bc2_sqrt);
  if constexpr (kCentralize && !kUpdate) {
    const T ds = static_cast<T>(h.wd * h.sign);
    double total = kDecay ? row_sum<T, true>(g + begin * m, w + begin * m, ds, m)
                          : row_sum<T, false>(g + begin * m, w + begin * m, 0, m);
    for (int64_t r = begin; r < end; ++r) {
      const int64_t o = r * m;
      const T mean = static_cast<T>(h.sign * total / static_cast<double>(m));
      if (r + 1 < end)
        total = adam_row<T, kDecay, true, false>(w + o, g + o, m1 + o, m2 + o, m, step_size,
                                                 bc2_sqrt, mean, g + o + m, w + o + m, h);
      else
        adam_row<T, kDecay, false, false>(w + o, g + o, m1 + o, m2 + o, m, step_size, bc2_sqrt,
                                          mean, nullptr, nullptr, h);
    }
    return;
  }
  for (int64_t r = begin; r < end; ++r) {
    const int64_t o = r * m, len = std::min(m, item.numel - o);
    const double change = adam_row<T, kDecay, false, kCentralize>(
        w + o, g + o, m1 + o, m2 + o, len, step_size, bc2_sqrt, 0, nullptr, nullptr, h);
    if constexpr (kCentralize) row_add(w + o, static_cast<T>(change / static_cast<double>(m)), m);
  }
}

template <typename T, bool kDecay, bool kUpdate>
void adam_block(const Item& item, int64_t begin, int64_t end, const AdamHyper& h) {
  item.centralize ? adam_rows<T, true, kDecay, kUpdate>(item, begin, end, h)
                  : adam_rows<T, false, kDecay, kUpdate>(item, begin, end, h);
}

template <bool kDecay, bool kUpdate>
void run(const std::vector<Item>& items, const AdamHyper& h) {
  for_blocks(items, [&](const Item& item, int64_t begin, int64_t end) {
    if (item.w.scalar_type() == at::kFloat)
      adam_block<float, kDecay, kUpdate>(item, begin, end, h);
    else
      adam_block<double, kDecay, kUpdate>(item, begin, end, h);
  });
}

}  // namespace

// One Adam(W) step of a whole param group; `steps` are the step-count tensors of torch's state
// (counted up here). Returns false, having changed nothing, when the group cannot take the
// kernel.
bool gc_adam_(const std::vector<at::Tensor>& params, const std::vector<at::Tensor>& grads,
              const std::vector<at::Tensor>& exp_avgs, const std::vector<at::Tensor>& exp_avg_sqs,
              const std::vector<at::Tensor>& steps, bool conv_only, double lr, double beta1,
              double beta2, double eps, double weight_decay, bool decoupled, bool maximize,
              bool centralize_update) {
  TORCH_CHECK(steps.size() == params.size(), "gc_adam_: params and step counts differ in length");
  std::vector<Item> items = make_items(params, grads, {exp_avgs, exp_avg_sqs}, conv_only, false);
  if (items.size() != params.size() || items.empty()) return false;
  for (const auto& step : steps) {
    if (!kernel_tensor(step) || step.numel() != 1 || step.requires_grad() ||
        (step.scalar_type() != at::kFloat && step.scalar_type() != at::kDouble))
      return false;
  }
  bind_data(items);
  {
    at::NoGradGuard no_grad;
    for (size_t i = 0; i < steps.size(); ++i) {  // through the pointer: 156 ops cost 0.3 ms
      double step;
      if (steps[i].scalar_type() == at::kFloat)
        step = *steps[i].data_ptr<float>() += 1.0f;
      else
        step = *steps[i].data_ptr<double>() += 1.0;
      steps[i].unsafeGetTensorImpl()->bump_version();
      items[i].step_size = lr / (1.0 - std::pow(beta1, step));
      items[i].bc2_sqrt = std::sqrt(1.0 - std::pow(beta2, step));
    }
    const double l2 = decoupled ? 0.0 : weight_decay;
    const AdamHyper h{maximize ? -1.0 : 1.0, l2, decoupled ? 1.0 - lr * weight_decay : 1.0,
                      beta1, beta2, eps};
    if (l2 != 0.0)
      centralize_update ? run<true, true>(items, h) : run<true, false>(items, h);
    else
      centralize_update ? run<false, true>(items, h) : run<false, false>(items, h);
  }
  bump_versions(items);
  return true;
}

}  // namespace mmgc
