"""``GCOptimWrapperConstructor``: per-parameter-group control of Gradient Centralization."""
import inspect
from typing import Optional

import torch.nn as nn
from mmengine.optim import DefaultOptimWrapperConstructor, OptimWrapper
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS, OPTIMIZERS

from .base import GC_DEFAULTS, is_gc_optimizer, normalize_gc_options
from .optim_wrapper import GCWrapperMixin

_MMENGINE_KEY_OPTIONS = ('lr_mult', 'decay_mult')


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class GCOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """Everything ``DefaultOptimWrapperConstructor`` does, plus the GC options ``use_gc``,
    ``gc_conv_only`` and ``gc_loc`` in ``paramwise_cfg.custom_keys``. The GC optimizers and the
    GC optim wrappers honour them per param group.

    Config::

        optim_wrapper = dict(
            constructor='GCOptimWrapperConstructor',
            optimizer=dict(type='SGDGC', lr=0.02, momentum=0.9, weight_decay=1e-4),
            paramwise_cfg=dict(custom_keys={
                'roi_head': dict(use_gc=False),
                'backbone': dict(gc_conv_only=True, lr_mult=0.1)}))

    A custom key option that is neither mmengine's (``lr_mult``, ``decay_mult``), a GC option,
    nor an argument of the optimizer is an error, and so are GC options with an optimizer
    and wrapper that would ignore them.
    """

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: Optional[dict] = None) -> None:
        super().__init__(optim_wrapper_cfg, paramwise_cfg)
        optimizer_type = self.optimizer_cfg['type']
        if isinstance(optimizer_type, str):
            with OPTIMIZERS.switch_scope_and_registry(None) as registry:
                optimizer_type = registry.get(optimizer_type)
            if optimizer_type is None:
                raise KeyError(f'optimizer type {self.optimizer_cfg["type"]!r} is not registered')
        # A GC optimizer takes its torch twin's arguments (and the GC options).
        signature = inspect.signature(getattr(optimizer_type, '_torch_optimizer', optimizer_type))
        self._optimizer_options = {
            name for name, parameter in signature.parameters.items()
            if parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD)
        } - {'self', 'params'}
        self._validate_custom_keys()

    def _validate_custom_keys(self) -> None:
        known = set(_MMENGINE_KEY_OPTIONS) | set(GC_DEFAULTS) | self._optimizer_options
        for key, options in self.paramwise_cfg.get('custom_keys', {}).items():
            where = f'paramwise_cfg.custom_keys[{key!r}]'
            unknown = sorted(set(options) - known)
            if unknown:
                raise ValueError(f'{where}: unknown option(s) {unknown}; known: '
                                 f'{sorted(known)}')
            options.update(normalize_gc_options(where, options))

    def __call__(self, model: nn.Module) -> OptimWrapper:
        optim_wrapper = super().__call__(model)
        uses_gc_keys = any(key in group for group in optim_wrapper.optimizer.param_groups
                           for key in GC_DEFAULTS)
        if uses_gc_keys and not (is_gc_optimizer(optim_wrapper.optimizer)
                                 or isinstance(optim_wrapper, GCWrapperMixin)):
            raise ValueError(
                f'paramwise_cfg.custom_keys sets GC options, but neither the optimizer '
                f'({type(optim_wrapper.optimizer).__name__}) nor the optim wrapper '
                f'({type(optim_wrapper).__name__}) applies GC: use a GC optimizer (SGDGC, '
                'SGDWGC, AdamGC, AdamWGC, AdagradGC) or type=GCOptimWrapper')
        return optim_wrapper
