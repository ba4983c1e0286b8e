// The GC operator on CPU tensors in one visit of each row (mmgc.gc.centralize_'s fast path, used
// by GCOptimWrapper, AdagradGC and the plain path of the other GC optimizers):
//   t[i] -= mean(t[i] + decay * p[i])        for every dim-0 slice i of every tensor
// The row is summed from memory and shifted while it is still in cache, so each value is read
// from memory and written back once; torch's mean followed by a subtraction reads it twice.
#include "gc_cpu.h"

namespace mmgc {
namespace {

template <typename T, bool kDecay>
void centralize_rows(const Item& item, int64_t begin, int64_t end, double decay) {
  T* t = static_cast<T*>(item.w_data);
  const T* p = kDecay ? static_cast<const T*>(item.g_data) : nullptr;
  const int64_t m = item.row_len;
  for (int64_t r = begin; r < end; ++r) {
    T* row = t + r * m;
    const double total = row_sum<T, kDecay>(row, kDecay ? p + r * m : nullptr,
                                            static_cast<T>(decay), m);
    row_add(row, static_cast<T>(-total / static_cast<double>(m)), m);
  }
}

template <typename T>
MMGC_TARGET_CLONES_AVX2 void centralize_block(const Item& item, int64_t begin, int64_t end,
                                              double decay) {
  decay != 0.0 ? centralize_rows<T, true>(item, begin, end, decay)
               : centralize_rows<T, false>(item, begin, end, decay);
}

}  // namespace

// Centralizes every tensor of `tensors` (all of them conv / fc tensors: the caller selects them)
// in place; `params` (the same length, or empty when decay == 0) enter the means scaled by
// `decay`. Returns false, having changed nothing, when some tensor cannot take the kernel.
bool gc_centralize_(const std::vector<at::Tensor>& tensors, const std::vector<at::Tensor>& params,
                    double decay) {
  TORCH_CHECK(decay == 0.0 || params.size() == tensors.size(),
              "gc_centralize_: decay needs one param per tensor");
  std::vector<Item> items = make_items(tensors, decay != 0.0 ? params : tensors, {}, false, false);
  if (items.size() != tensors.size() || items.empty()) return false;
  for (const auto& item : items)
    if (!item.centralize) return false;
  bind_data(items);
  {
    at::NoGradGuard no_grad;
    for_blocks(items, [&](const Item& item, int64_t begin, int64_t end) {
      if (item.w.scalar_type() == at::kFloat)
        centralize_block<float>(item, begin, end, decay);
      else
        centralize_block<double>(item, begin, end, decay);
    });
  }
  bump_versions(items);
  return true;
}

}  // namespace mmgc
