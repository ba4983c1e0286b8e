"""Optim wrappers that add Gradient Centralization to any optimizer."""
from contextlib import contextmanager
from typing import Any, Iterator, List

from mmengine.optim import AmpOptimWrapper, OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS

from mmgc.dist import BuiltGroups

from .base import GC_DEFAULTS, gc_step, is_gc_optimizer
from .options import adopt_loaded_gc_options, normalize_gc_options, refuse_misspelled_gc_options


class GCWrapperMixin:
    """The GC options of a wrapper and the context that applies them around a step."""
    optimizer: Any

    def _init_gc(self, use_gc: bool, gc_conv_only: bool, gc_loc: Any) -> None:
        owner = type(self).__name__
        if is_gc_optimizer(self.optimizer):
            raise ValueError(
                f'{owner} wraps {type(self.optimizer).__name__}, which centralizes by itself: '
                'use OptimWrapper / AmpOptimWrapper with a GC optimizer, or a torch optimizer '
                f'with {owner}')
        self.gc_defaults = normalize_gc_options(
            owner, dict(use_gc=use_gc, gc_conv_only=gc_conv_only, gc_loc=gc_loc))
        # Every group states its GC options, so that they are saved with the optimizer and a
        # resumed run takes them from the checkpoint, as it does a GC optimizer's.
        for index, group in enumerate(self.optimizer.param_groups):
            where = f'{owner} param group {index}'
            refuse_misspelled_gc_options(where, group)
            group.update({**self.gc_defaults, **normalize_gc_options(where, group)})
        self._gc_built = BuiltGroups()
        for group in self.optimizer.param_groups:
            self._gc_built.record(group)

    def _configured_groups(self) -> List[dict]:
        return [{key: group[key] for key in GC_DEFAULTS if key in group}
                for group in self.optimizer.param_groups]

    def load_state_dict(self, state_dict: dict) -> None:
        """Loads as the wrapper without GC, then checks the loaded GC options (the checkpoint's
        win over the config's, with a warning where they differ)."""
        configured = self._configured_groups()
        super().load_state_dict(state_dict)  # type: ignore[misc]
        adopt_loaded_gc_options(type(self).__name__, self.optimizer.param_groups, configured,
                                self.gc_defaults)

    @contextmanager
    def gc_context(self) -> Iterator[None]:
        """GC around the inner optimizer's step (param groups' own GC keys first)."""
        self._gc_built.check(type(self).__name__, self.optimizer.param_groups,
                             self.gc_defaults['use_gc'])
        with gc_step(self.optimizer.param_groups, self.gc_defaults, built=self._gc_built):
            yield


@OPTIM_WRAPPERS.register_module()
class GCOptimWrapper(GCWrapperMixin, OptimWrapper):
    """``OptimWrapper`` that adds Gradient Centralization to any optimizer.

    A step is: clip (``clip_grad``), GC, the inner optimizer's step.

    - ``gc_loc='grad'`` (default): the gradients are centralized just before the inner step.
      With an L2-decay optimizer (``SGD``, ``Adam`` with ``weight_decay``) this gives
      ``Phi(g) + wd * w``, not the GC optimizers' ``Phi(g + wd * w)``.
    - ``gc_loc='update'``: the whole step ``w_new - w_old`` of the inner optimizer is
      centralized, so every weight vector keeps its mean, whatever the optimizer.

    Config::

        optim_wrapper = dict(
            type='GCOptimWrapper',
            optimizer=dict(type='RMSprop', lr=1e-3),
            gc_conv_only=False,
            gc_loc='grad',
            clip_grad=dict(max_norm=35, norm_type=2))

    Args:
        use_gc (bool): centralize at all. Default True.
        gc_conv_only (bool): centralize conv weights only (``ndim > 3``). Default False.
        gc_loc (str | bool): ``'grad'`` or ``'update'``. Default ``'grad'``.
        **kwargs: as ``OptimWrapper`` (``optimizer``, ``accumulative_counts``, ``clip_grad``).

    Param groups may override the three GC options (see ``GCOptimWrapperConstructor``).
    """

    def __init__(self, *args: Any, use_gc: bool = True, gc_conv_only: bool = False,
                 gc_loc: Any = 'grad', **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._init_gc(use_gc, gc_conv_only, gc_loc)

    def step(self, **kwargs: Any) -> None:
        if self.clip_grad_kwargs:
            self._clip_grad()
        with self.gc_context():
            self.optimizer.step(**kwargs)


@OPTIM_WRAPPERS.register_module()
class AmpGCOptimWrapper(GCWrapperMixin, AmpOptimWrapper):
    """``AmpOptimWrapper`` with Gradient Centralization, for mixed-precision training.

    A step is: unscale, clip, GC, the inner step through the ``GradScaler`` (which still skips
    it when a gradient is inf or nan). Options as :class:`GCOptimWrapper`.

    Config::

        optim_wrapper = dict(
            type='AmpGCOptimWrapper',
            optimizer=dict(type='SGD', lr=0.02, momentum=0.9, weight_decay=1e-4),
            loss_scale='dynamic')
    """

    def __init__(self, *args: Any, use_gc: bool = True, gc_conv_only: bool = False,
                 gc_loc: Any = 'grad', **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._init_gc(use_gc, gc_conv_only, gc_loc)

    def step(self, **kwargs: Any) -> None:
        self.loss_scaler.unscale_(self.optimizer)
        if self.clip_grad_kwargs:
            self._clip_grad()
        with self.gc_context():
            self.loss_scaler.step(self.optimizer, **kwargs)
        self.loss_scaler.update(self._scale_update_param)
