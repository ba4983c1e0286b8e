// The launch table of mmgc's Triton kernels (mmgc/ops/gc_triton.py), built here rather than in
// Python: checking the 156 tensors of a Faster R-CNN param group with their gradients and states,
// and writing their rows, takes Python about half a millisecond a step, more than the GPU takes
// for the step itself. The layout is gc_triton.py's: `header_len` float64 hyperparameters (their
// bits), each tensor's first program, then a row of kWidth values per tensor:
//   first program, numel, row length, rows, flags, address of w, of g, of two states, extra
// (the step count's address or value, for Adam). Nothing here reads a tensor's values.
#include "gc_cpu.h"

#include <cmath>
#include <cstring>

namespace mmgc {
namespace {

constexpr int64_t kWidth = 10;
constexpr int64_t kCentralize = 1;

// What the Triton kernels may read and write through an address, on any device: as
// kernel_tensor (gc_cpu.h) without the CPU, and of a dtype the kernels know.
bool addressable(const at::Tensor& t) {
  try {
    if (!t.defined() || at::isTensorSubclassLike(t) || t.layout() != at::kStrided || t.is_neg() ||
        t.is_conj() || t.is_inference() || t.unsafeGetTensorImpl()->has_symbolic_sizes_strides() ||
        !t.has_storage())
      return false;
    const auto dtype = t.scalar_type();
    return dtype == at::kFloat || dtype == at::kHalf || dtype == at::kBFloat16 ||
           dtype == at::kDouble;
  } catch (const std::exception&) {
    return false;
  }
}

bool laid_out_as(const at::Tensor& t, const at::Tensor& w) {
  return addressable(t) && t.scalar_type() == w.scalar_type() && t.device() == w.device() &&
         t.sizes() == w.sizes() && t.strides() == w.strides();
}

// The last column for Adam: the address of each step count (read by the kernel, on the params'
// device), or with `in_table` the count this step will reach (counts kept on the CPU, as torch
// keeps them unless fused or capturable). Empty when some count is not a float / double scalar
// tensor of the dtype and device of the first, or is one autograd or inference mode guards, or
// (in the table) not a whole number in [0, 2**32 - 1): the kernel's power takes 32 bits.
std::vector<int64_t> count_column(const std::vector<at::Tensor>& counts, bool in_table,
                                  const at::Device& device) {
  std::vector<int64_t> out;
  const at::Tensor& first = counts[0];
  for (const auto& t : counts) {
    try {
      if (!t.defined() || at::isTensorSubclassLike(t) || t.layout() != at::kStrided ||
          t.numel() != 1 || t.requires_grad() || t.is_inference() || t.is_neg() ||
          !t.has_storage() ||
          t.scalar_type() != first.scalar_type() || t.device() != first.device() ||
          (t.scalar_type() != at::kFloat && t.scalar_type() != at::kDouble))
        return {};
      if (in_table) {
        if (!t.device().is_cpu()) return {};
        // Read in place (item() dispatches: 156 of them cost more than the whole table).
        const double count = t.scalar_type() == at::kFloat
                                 ? static_cast<double>(*t.const_data_ptr<float>())
                                 : *t.const_data_ptr<double>();
        if (!(count >= 0.0 && count < 4294967295.0) || count != std::floor(count)) return {};
        out.push_back(static_cast<int64_t>(count) + 1);
      } else {
        if (t.device() != device) return {};
        out.push_back(reinterpret_cast<int64_t>(t.const_data_ptr()));
      }
    } catch (const std::exception&) {
      return {};
    }
  }
  return out;
}

int64_t programs(int64_t row_len, int64_t rows, const std::vector<int64_t>& packed) {
  for (size_t k = 0; k + 1 < packed.size(); k += 2)
    if (row_len <= packed[k]) return (rows + packed[k + 1] - 1) / packed[k + 1];
  return rows;
}

}  // namespace

// Returns (taken, table, programs). Not taken, with an undefined table, when some tensor cannot
// take the kernels: not addressable, another device or dtype than the first param, a gradient or
// a state laid out unlike its param, gaps or overlaps in a param's memory, a centralized param
// whose dim 0 is not outermost, with `centralized_only` a tensor GC does not centralize,
// written tensors (params, states) that share memory, or step counts count_column refuses.
// `flags` gives each param's extra flag bits; `counts` (Adam; else empty) the step counts of
// the last column (with `counts_in_table`, counted up here when the table is taken); `packed` the (longest row, rows per program) pairs of the kernels' branches;
// `pin` asks for page-locked memory (for an asynchronous copy to the GPU).
std::tuple<bool, at::Tensor, int64_t> gc_triton_table(
    const std::vector<at::Tensor>& params, const std::vector<at::Tensor>& grads,
    const std::vector<std::vector<at::Tensor>>& states, const std::vector<int64_t>& flags,
    const std::vector<at::Tensor>& counts, bool counts_in_table, bool conv_only,
    bool centralized_only, int64_t chunk, const std::vector<double>& header, int64_t header_len,
    const std::vector<int64_t>& packed, bool pin) {
  const size_t n = params.size();
  const auto refused = std::make_tuple(false, at::Tensor(), int64_t{0});
  if (n == 0 || grads.size() != n || flags.size() != n || chunk < 1 ||
      static_cast<int64_t>(header.size()) > header_len || states.size() > 2 ||
      (!counts.empty() && counts.size() != n))
    return refused;
  for (const auto& column : states)
    if (column.size() != n) return refused;
  const at::Tensor& first = params[0];
  if (!addressable(first)) return refused;
  std::vector<int64_t> extra(n, 0);
  if (!counts.empty()) {
    extra = count_column(counts, counts_in_table, first.device());
    if (extra.size() != n) return refused;
  }
  std::vector<int64_t> rows;
  std::vector<int64_t> starts;
  std::vector<at::Tensor> written;
  rows.reserve(n * kWidth);
  int64_t total = 0;
  for (size_t i = 0; i < n; ++i) {
    const at::Tensor& w = params[i];
    if (!addressable(w) || w.scalar_type() != first.scalar_type() ||
        w.device() != first.device() || !w.is_non_overlapping_and_dense())
      return refused;
    if (!laid_out_as(grads[i], w)) return refused;
    for (const auto& column : states) {
      if (!laid_out_as(column[i], w)) return refused;
      written.push_back(column[i]);
    }
    written.push_back(w);
    const int64_t numel = w.numel();
    if (numel == 0) continue;
    const bool centralize = centralized(w, conv_only);
    if (centralized_only && !centralize) return refused;
    int64_t row_len = std::min(numel, chunk);
    int64_t n_rows = (numel + row_len - 1) / row_len;
    if (centralize) {
      row_len = numel / w.size(0);
      n_rows = w.size(0);
      if (w.stride(0) != row_len) return refused;
    }
    starts.push_back(total);
    const int64_t address[3] = {
        states.empty() ? 0 : reinterpret_cast<int64_t>(states[0][i].const_data_ptr()),
        states.size() < 2 ? 0 : reinterpret_cast<int64_t>(states[1][i].const_data_ptr()), 0};
    rows.insert(rows.end(),
                {total, numel, row_len, n_rows, (centralize ? kCentralize : 0) | flags[i],
                 reinterpret_cast<int64_t>(w.const_data_ptr()),
                 reinterpret_cast<int64_t>(grads[i].const_data_ptr()), address[0], address[1],
                 extra[i]});
    total += programs(row_len, n_rows, packed);
  }
  if (!disjoint(written)) return refused;
  if (counts_in_table) {  // taken: count the step here (torch's foreach on 156 CPU scalars
                          // takes longer than all of this function)
    for (size_t i = 0; i < n; ++i) {
      const at::Tensor& t = counts[i];
      if (t.scalar_type() == at::kFloat)
        *t.mutable_data_ptr<float>() = static_cast<float>(extra[i]);
      else
        *t.mutable_data_ptr<double>() = static_cast<double>(extra[i]);
      t.unsafeGetTensorImpl()->bump_version();
    }
  }
  const int64_t size = header_len + static_cast<int64_t>(starts.size() + rows.size());
  at::Tensor table = at::empty({size}, at::TensorOptions().dtype(at::kLong).pinned_memory(pin));
  int64_t* out = table.data_ptr<int64_t>();
  std::memset(out, 0, sizeof(int64_t) * header_len);
  std::memcpy(out, header.data(), sizeof(double) * header.size());  // the float64 bits
  std::copy(starts.begin(), starts.end(), out + header_len);
  std::copy(rows.begin(), rows.end(), out + header_len + starts.size());
  return {true, table, total};
}

}  // namespace mmgc
