"""What every GC optimizer and GC optim wrapper shares: the GC options and the GC step."""
import inspect
from contextlib import ExitStack, contextmanager
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional

import torch
from torch import Tensor
from torch.optim import Optimizer

from mmgc.gc import centralize_, centralized_update

#: The GC options, with their defaults. Each is a constructor argument of every GC optimizer
#: and GC optim wrapper, and a key that a param group may override.
GC_DEFAULTS: Dict[str, Any] = dict(use_gc=True, gc_conv_only=False, gc_loc='grad')
GC_LOCS = ('grad', 'update')


def normalize_gc_options(owner: str, options: Dict[str, Any],
                         gc_locs: Iterable[str] = GC_LOCS) -> Dict[str, Any]:
    """Checks GC options and spells ``gc_loc=True/False`` (the authors' spelling) as
    ``'grad'/'update'``. Raises ``ValueError`` naming the option and the value."""
    gc_locs = tuple(gc_locs)
    options = dict(options)
    for key in ('use_gc', 'gc_conv_only'):
        if key in options and not isinstance(options[key], bool):
            raise ValueError(f'{owner}: {key} must be True or False, got {options[key]!r}')
    if 'gc_loc' in options:
        loc = options['gc_loc']
        if isinstance(loc, bool):
            loc = 'grad' if loc else 'update'
        if loc not in gc_locs:
            raise ValueError(f'{owner}: gc_loc must be one of {gc_locs}, got {options["gc_loc"]!r}')
        options['gc_loc'] = loc
    return options


@contextmanager
def gc_step(param_groups: Iterable[dict],
            defaults: Dict[str, Any],
            decay_of: Optional[Callable[[dict], float]] = None) -> Iterator[None]:
    """Applies GC to one optimizer step run inside the ``with`` body.

    Per param group (its own GC keys first, then ``defaults``): ``gc_loc='grad'`` centralizes
    the gradients before the step, so that ``grad + decay_of(group) * param`` is centralized;
    ``gc_loc='update'`` centralizes the change the step makes to the parameters.
    """
    with ExitStack() as stack:
        for group in param_groups:
            if not group.get('use_gc', defaults['use_gc']):
                continue
            conv_only = group.get('gc_conv_only', defaults['gc_conv_only'])
            params = [p for p in group['params'] if p.grad is not None]
            if group.get('gc_loc', defaults['gc_loc']) == 'update':
                stack.enter_context(centralized_update(params, conv_only))
            else:
                decay = decay_of(group) if decay_of is not None else 0.0
                centralize_([p.grad for p in params], conv_only, params=params, decay=decay)
        yield


def _check_hyperparameters(owner: str, values: Dict[str, Any]) -> None:
    """Clear errors for the hyperparameters torch's optimizers share."""
    for name in ('lr', 'momentum', 'weight_decay', 'eps', 'lr_decay', 'dampening',
                 'initial_accumulator_value'):
        value = values.get(name)
        if value is not None and not isinstance(value, bool) and float(value) < 0:
            raise ValueError(f'{owner}: {name} must be >= 0, got {value!r}')
    betas = values.get('betas')
    if betas is not None:
        for i, beta in enumerate(betas):
            if not 0.0 <= float(beta) < 1.0:
                raise ValueError(f'{owner}: betas[{i}] must be in [0, 1), got betas={betas!r}')
    if values.get('nesterov') and (values.get('momentum', 0) <= 0
                                   or values.get('dampening', 0) != 0):
        raise ValueError(f'{owner}: nesterov=True needs momentum > 0 and dampening == 0, got '
                         f'momentum={values.get("momentum")!r}, '
                         f'dampening={values.get("dampening")!r}')


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
        signature = inspect.signature(self._torch_optimizer.__init__)
        bound = signature.bind(self, params, *args, **kwargs)
        bound.apply_defaults()
        _check_hyperparameters(owner, bound.arguments)
        if bound.arguments.get('differentiable'):
            raise ValueError(f'{owner}: differentiable=True is not supported')
        self._gc_defaults = normalize_gc_options(
            owner, dict(use_gc=use_gc, gc_conv_only=gc_conv_only, gc_loc=gc_loc), self.gc_locs)
        super().__init__(params, *args, **kwargs)  # type: ignore[call-arg]
        self.defaults.update(self._gc_defaults)
        # GradScaler must unscale before GC sees the gradients (fused torch steps would
        # otherwise receive scaled ones).
        self._step_supports_amp_scaling = False

    def add_param_group(self, param_group: dict) -> None:
        for key, value in self._gc_defaults.items():
            param_group.setdefault(key, value)
        owner = type(self).__name__
        param_group.update(normalize_gc_options(owner, param_group, self.gc_locs))
        _check_hyperparameters(owner, param_group)
        super().add_param_group(param_group)  # type: ignore[misc]

    def __setstate__(self, state: dict) -> None:
        # A torch optimizer's state dict has no GC keys: its groups get this optimizer's.
        super().__setstate__(state)  # type: ignore[misc]
        for group in self.param_groups:  # type: ignore[attr-defined]
            for key, value in self.defaults.items():  # type: ignore[attr-defined]
                if key in GC_DEFAULTS:
                    group.setdefault(key, value)

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
        handled = self._fused_step()
        # Parameters without a gradient are skipped by GC and by every torch step: hiding the
        # gradients of those the fused kernels stepped leaves the rest to the plain path.
        handled_ids = {id(p) for p in handled}
        if handled and all(p.grad is None or id(p) in handled_ids
                           for group in self.param_groups for p in group['params']):  # type: ignore
            return loss
        hidden = [(p, p.grad) for p in handled]
        for p, _ in hidden:
            p.grad = None
        try:
            with gc_step(self.param_groups, self.defaults, self._gc_decay):  # type: ignore
                self._torch_step()
        finally:
            for p, grad in hidden:
                p.grad = grad
        return loss


def is_gc_optimizer(optimizer: Optimizer) -> bool:
    return isinstance(optimizer, GCOptimizer)
