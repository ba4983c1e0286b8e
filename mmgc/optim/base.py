"""What every GC optimizer and GC optim wrapper shares: the GC options and the GC step."""
import inspect
from contextlib import ExitStack, contextmanager
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional

import torch
from torch import Tensor
from torch.optim import Optimizer

from mmgc.dist import BuiltGroups, FlatJob, FlatUpdate, centralize_flat_, flat_shard
from mmgc.gc import centralize_, centralized_update

from .options import (GC_DEFAULTS, GC_LOCS, adopt_loaded_gc_options, check_hyperparameters,
                      check_option_types, normalize_gc_options, refuse_misspelled_gc_options)

__all__ = ['GC_DEFAULTS', 'GC_LOCS', 'GCOptimizer', 'gc_step', 'is_gc_optimizer',
           'normalize_gc_options']


@contextmanager
def gc_step(param_groups: Iterable[dict],
            defaults: Dict[str, Any],
            decay_of: Optional[Callable[[dict], float]] = None,
            built: Optional[BuiltGroups] = None) -> Iterator[None]:
    """Applies GC to one optimizer step run inside the ``with`` body.

    Per param group (its own GC keys first, then ``defaults``): ``gc_loc='grad'`` centralizes
    the gradients before the step, so that ``grad + decay_of(group) * param`` is centralized;
    ``gc_loc='update'`` centralizes the change the step makes to the parameters.

    Parameters FSDP flattened (``mmgc.dist.fsdp``) are centralized over their whole rows, with
    one all-reduce of row sums per process group: every rank must take the step. ``built`` (the
    optimizer's record of its groups) spares the groups without any the look at each parameter.
    """
    flat_grads: List[FlatJob] = []
    flat_updates: List[FlatJob] = []
    with ExitStack() as stack:
        for index, group in enumerate(param_groups):
            if not group.get('use_gc', defaults['use_gc']):
                continue
            conv_only = group.get('gc_conv_only', defaults['gc_conv_only'])
            update = group.get('gc_loc', defaults['gc_loc']) == 'update'
            decay = decay_of(group) if decay_of is not None and not update else 0.0
            if built is not None and not built.holds_flat_shards(index, group['params']):
                params = [p for p in group['params'] if p.grad is not None]
            else:
                params = []
                for p in group['params']:
                    shard = flat_shard(p)
                    if shard is not None:  # (every rank lists it, with or without a gradient)
                        job = FlatJob(None if update else p.grad, p, shard, decay, conv_only)
                        (flat_updates if update else flat_grads).append(job)
                    elif p.grad is not None:
                        params.append(p)
            if update:
                stack.enter_context(centralized_update(params, conv_only))
            else:
                centralize_([p.grad for p in params], conv_only, params=params, decay=decay)
        if flat_grads:
            centralize_flat_(flat_grads)
        flat_update = FlatUpdate(flat_updates) if flat_updates else None
        yield
        if flat_update is not None:
            flat_update.after()


class GCOptimizer:
    """Turns the torch optimizer after it in the bases into its GC twin.

    A GC optimizer is a declaration: ``class SGDGC(GCOptimizer, torch.optim.SGD)``. Its
    step centralizes the gradients (or the update) and then runs the torch class's own step,
    so with ``use_gc=False`` it *is* the torch optimizer, step for step, and its state dict
    has the torch class's layout (a checkpoint of one resumes into the other).

    Subclasses set:
        gc_locs: the ``gc_loc`` values they support.
        decay_in_grad: whether the torch step adds L2 decay ``wd * w`` to the gradient; GC
            then centralizes ``g + wd * w`` (the paper's Sec. 3.4), not ``g`` alone.
    """
    gc_locs: tuple = ('grad',)
    decay_in_grad: bool = True
    _torch_optimizer: type

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._torch_optimizer = next(c for c in cls.__mro__
                                    if c.__module__.startswith('torch.optim'))

    def __init__(self, params: Any, *args: Any, use_gc: bool = True,
                 gc_conv_only: bool = False, gc_loc: Any = 'grad', **kwargs: Any) -> None:
        owner = type(self).__name__
        try:
            bound = inspect.signature(self._torch_optimizer.__init__).bind(
                self, params, *args, **kwargs)
        except TypeError:
            bound = None  # torch's own constructor raises its own error below
        if bound is not None:
            # Only what torch would trip over by accident: its own checks and messages follow.
            check_option_types(owner, bound.arguments)
        # Read by add_param_group while torch's constructor adds the groups; in self.defaults
        # (so in copies and pickles too) once it has.
        self._gc_init_defaults = normalize_gc_options(
            owner, dict(use_gc=use_gc, gc_conv_only=gc_conv_only, gc_loc=gc_loc), self.gc_locs)
        super().__init__(params, *args, **kwargs)  # type: ignore[call-arg]
        self.defaults.update(self.__dict__.pop('_gc_init_defaults'))
        # GradScaler must unscale before GC sees the gradients (fused torch steps would
        # otherwise receive scaled ones).
        self._step_supports_amp_scaling = False

    def _gc_option_defaults(self) -> Dict[str, Any]:
        pending = self.__dict__.get('_gc_init_defaults')
        if pending is not None:
            return pending
        return {key: self.defaults.get(key, value)  # type: ignore[attr-defined]
                for key, value in GC_DEFAULTS.items()}

    def add_param_group(self, param_group: dict) -> None:
        if isinstance(param_group, dict):  # (torch refuses anything else)
            owner = f'{type(self).__name__} param group {len(self.param_groups)}'  # type: ignore
            refuse_misspelled_gc_options(owner, param_group)
            for key, value in self._gc_option_defaults().items():
                param_group.setdefault(key, value)
            param_group.update(normalize_gc_options(owner, param_group, self.gc_locs))
            effective = {**self.defaults, **param_group}  # type: ignore[attr-defined]
            check_hyperparameters(owner, effective)
            if effective.get('differentiable') and effective['use_gc']:
                raise ValueError(f'{owner}: differentiable=True needs use_gc=False (GC changes '
                                 'the gradients in place, outside autograd)')
        super().add_param_group(param_group)  # type: ignore[misc]
        # What the group holds now, to refuse an engine's flat partitions at the first step.
        self.__dict__.setdefault('_gc_built', BuiltGroups()).record(
            self.param_groups[-1])  # type: ignore[attr-defined]

    def __setstate__(self, state: dict) -> None:
        # Called by load_state_dict with the loaded groups while self.param_groups still holds
        # the configured ones, and by copy / pickle (no configured groups then).
        configured = self.__dict__.get('param_groups')
        super().__setstate__(state)  # type: ignore[misc]
        adopt_loaded_gc_options(type(self).__name__, self.param_groups,  # type: ignore
                                configured, self._gc_option_defaults(), self.gc_locs)

    def _gc_decay(self, group: dict) -> float:
        """The coefficient of ``w`` in what the torch step treats as the gradient."""
        if not self.decay_in_grad or group.get('decoupled_weight_decay', False):
            return 0.0
        decay = float(group['weight_decay'])
        return -decay if group.get('maximize', False) else decay

    def _torch_step(self) -> None:
        step = self._torch_optimizer.step
        # Optimizer.__init__ wraps each class's step once to run step hooks; ours already did.
        if getattr(step, 'hooked', False):
            step = step.__wrapped__
        step(self)

    def _fused_step(self) -> List[Tensor]:
        """Takes the whole GC step of the param groups a fused kernel supports and returns their
        parameters. The plain path (GC, then the torch step) handles every other parameter; when
        there is none, the torch step is not called. Nothing is fused by default.
        """
        return []

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], Any]] = None) -> Any:
        """Centralizes the gradients (or the update), then takes the torch step."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        built = self.__dict__.get('_gc_built')  # (absent in a copy or an unpickled optimizer)
        if built is not None:
            built.check(type(self).__name__, self.param_groups,  # type: ignore[attr-defined]
                        self.defaults['use_gc'])  # type: ignore[attr-defined]
        handled = self._fused_step()
        # Parameters without a gradient are skipped by GC and by every torch step: hiding the
        # gradients of those the fused kernels stepped leaves the rest to the plain path.
        # The kernels took every parameter with a gradient when they took as many (a parameter
        # is in one group at most, and a group they took lists none twice): then no torch step.
        if handled and len(handled) == sum(p.grad is not None for group in self.param_groups
                                           for p in group['params']):  # type: ignore
            return loss
        hidden = [(p, p.grad) for p in handled]
        for p, _ in hidden:
            p.grad = None
        try:
            with gc_step(self.param_groups, self.defaults, self._gc_decay,  # type: ignore
                         self.__dict__.get('_gc_built')):
                self._torch_step()
        finally:
            for p, grad in hidden:
                p.grad = grad
        return loss


def is_gc_optimizer(optimizer: Optimizer) -> bool:
    return isinstance(optimizer, GCOptimizer)
