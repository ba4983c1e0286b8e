// Python bindings of mmgc's fused CPU kernels (mmgc/ops/__init__.py builds and loads them).
#include "gc_cpu.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  module.def("gc_sgd_", &mmgc::gc_sgd_, "Fused Gradient Centralization + SGD(W) step (CPU)");
  module.def("gc_adam_", &mmgc::gc_adam_, "Fused Gradient Centralization + Adam(W) step (CPU)");
  module.def("gc_centralize_", &mmgc::gc_centralize_, "Gradient Centralization in place (CPU)");
  module.def("gc_triton_table", &mmgc::gc_triton_table,
             "The checked launch table of mmgc's Triton kernels (any device)");
}
