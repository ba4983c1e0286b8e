# mmgc developer targets. `make` or `make help` lists them.
VENV ?= .venv
PYTHON := $(VENV)/bin/python
PYTEST_ARGS ?=
MODEL ?= mask
SEEDS ?=
GPU_PYTHON ?= python3

.DEFAULT_GOAL := help
.PHONY: help venv test demo demo-cls bench bench-train gpu-check clean-venv

help:  ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'
	@echo "  Variables: TORCH_SPEC, TORCHVISION_SPEC (another torch), VENV, PYTEST_ARGS, BENCH_ARGS, BENCH_TRAIN_ARGS, MODEL, SEEDS, DEMO_ARGS, DEMO_CLS_ARGS, GPU_PYTHON"

venv:  ## Create or complete .venv (torch, mmcv built once per torch, mmdet, mmpretrain, mmgc)
	@VENV=$(abspath $(VENV)) bash tools/setup_venv.sh

test: venv  ## Set up .venv if needed, then run the whole test suite
	$(PYTHON) -m pytest tests $(PYTEST_ARGS)

demo: venv  ## Pretrain a backbone (once), fine-tune Mask R-CNN without and with GC on synthetic data, compare (MODEL=faster, SEEDS=5, DEMO_ARGS)
	$(PYTHON) tools/misc/gc_demo.py --model $(MODEL)$(if $(SEEDS), --seeds $(SEEDS)) $(DEMO_ARGS)

demo-cls: venv  ## Train classifiers without and with GC on scikit-learn's digits over seeds, compare (DEMO_CLS_ARGS)
	$(PYTHON) tools/misc/gc_demo_cls.py $(DEMO_CLS_ARGS)

bench: venv  ## Time GC optimizer steps against torch's (BENCH_ARGS="--device cuda", ...)
	$(PYTHON) tools/analysis_tools/benchmark_optimizer.py $(BENCH_ARGS)

bench-train: venv  ## Time demo training iterations without and with GC (BENCH_TRAIN_ARGS="--model faster")
	$(PYTHON) tools/analysis_tools/benchmark_train.py $(BENCH_TRAIN_ARGS)

gpu-check:  ## On a CUDA machine, no venv: Triton kernel tests and GPU benchmarks, under 5 min (GPU_PYTHON)
	PYTHON=$(GPU_PYTHON) bash tools/analysis_tools/gpu_check.sh

clean-venv:  ## Remove .venv (the built mmcv wheel stays in ~/.cache/mmgc/wheels)
	rm -rf $(VENV)
