"""``GCStatsHook``: what Gradient Centralization does in a run, logged as it trains.

Config (any default scope; ``custom_imports=dict(imports=['mmgc'])`` registers it)::

    custom_hooks = [dict(type='GCStatsHook', interval=50)]
    custom_hooks = [dict(type='GCStatsHook', interval=50, by_layer=True)]  # per parameter too

Every ``interval`` iterations it puts these scalars in mmengine's message hub, from where the
``LoggerHook`` writes them to the text log, ``vis_data/scalars.json`` and every visualization
backend of the config (TensorBoard, W&B, ...):

- ``gc/grad_norm``, ``gc/grad_max``: L2 norm and largest magnitude of the gradients of the
  weights GC applies to (conv and fc weights, or conv only with ``gc_conv_only``), as they reach
  the step: after AMP's unscaling and clipping, before GC;
- ``gc/grad_norm_gc``, ``gc/grad_max_gc``: the same for ``Phi(g)``, those gradients with the
  mean of every output channel's slice removed (Eq. 1 of the paper);
- ``gc/mean_energy``: ``||g - Phi(g)||^2 / ||g||^2``, the share of the gradients' squared norm
  that GC removes;
- ``gc/weight_mean_drift``: the largest change since this training process started of the mean
  of any of those weight vectors, ``max_i |mean(w_t[i]) - mean(w_0[i])|``;
- ``gc/iter``: the iteration they were computed at (the logger repeats a scalar's last value on
  every line until it is updated; each value is logged as computed, never averaged over
  iterations, although mmengine's log processor averages keys named like ``grad_norm``);
- with ``by_layer=True``, the same per parameter as ``gc/<parameter name>/<quantity>``.

The numbers do not depend on what applies GC: a GC optimizer (``SGDGC``, ``AdamWGC``, ..., fused
kernels or not), ``GCOptimWrapper``, or nothing at all. Under a plain optimizer they say what GC
*would* remove, so a baseline run logs the same curves as its GC twin. ``Phi(g)`` is always of
the gradient itself: a GC optimizer with L2 decay centralizes ``g + wd * w``, and with
``gc_loc='update'`` GC acts on the step, not the gradient.

Where the weight means move (Eq. 4 holds them fixed only when every update is centralized):
exact zero up to rounding under ``SGDGC``, ``AdagradGC``, ``AdamWGC(gc_loc='update')`` and
``GCOptimWrapper(gc_loc='update')``; they move, legitimately, under decoupled weight decay
(``SGDWGC``, ``AdamWGC(gc_loc='grad')``: ``w * (1 - lr * wd)`` scales the mean), under Adam's
per-value scaling of a centralized gradient (``AdamGC`` / ``AdamWGC`` with ``gc_loc='grad'``),
under ``GCOptimWrapper(gc_loc='grad')`` with an L2-decay optimizer (``Phi(g) + wd * w``), and of
course without GC.

The hook only reads: training is the same, to the bit, with and without it. It never stops
training either: a parameter whose numbers cannot be computed (a tensor subclass whose
reductions fail, say) is left out of them, with one warning naming it.
"""
import re
import warnings
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import torch
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.optim import OptimWrapperDict
from mmengine.registry import HOOKS
from torch import Tensor

from mmgc.dist import fsdp_flattened
from mmgc.gc import gc_applies
from mmgc.optim.optim_wrapper import GCWrapperMixin

__all__ = ['GCStatsHook']

QUANTITIES = ('grad_norm', 'grad_max', 'grad_norm_gc', 'grad_max_gc', 'mean_energy',
              'weight_mean_drift')


def _rows(tensor: Tensor) -> Tensor:
    """``tensor`` as (slices, values): a view where the memory allows."""
    return tensor.detach().reshape(tensor.shape[0], -1)


def _acc(tensor: Tensor) -> torch.dtype:
    """The accumulation dtype of reductions: float32, or float64 for float64 tensors."""
    return torch.float64 if tensor.dtype is torch.float64 else torch.float32


def _slice_means(tensor: Tensor) -> Tensor:
    rows = _rows(tensor)
    return rows.sum(1, dtype=_acc(rows)).to(torch.float64) / rows.shape[1]


def gradient_stats(grad: Tensor) -> Dict[str, Tensor]:
    """Squared norms and largest magnitudes of one gradient ``g`` and of ``Phi(g)`` (0-dim
    float64 tensors on the gradient's device): ``sq``, ``max``, ``sq_gc``, ``max_gc`` and
    ``sq_mean``, the squared norm of ``g - Phi(g)`` (each slice's mean, once per value). Three
    reading passes over ``g`` (float32 sums; float64 for float64) and no copy of it, from
    ``||Phi(g)[i]||^2 = ||g[i]||^2 - M mean_i^2`` and
    ``max |Phi(g)[i]| = max(max g[i] - mean_i, mean_i - min g[i])``."""
    rows = _rows(grad)
    m, acc = rows.shape[1], _acc(rows)
    means = rows.sum(1, dtype=acc).to(torch.float64) / m
    sq_rows = torch.linalg.vector_norm(rows, dim=1, dtype=acc).to(torch.float64).square()
    low, high = (t.to(torch.float64) for t in torch.aminmax(rows, dim=1))
    sq_mean_rows = means.square() * m
    return dict(sq=sq_rows.sum(), max=torch.maximum(high.abs(), low.abs()).max(),
                sq_gc=(sq_rows - sq_mean_rows).clamp_(min=0).sum(),
                max_gc=torch.maximum(high - means, means - low).max(),
                sq_mean=sq_mean_rows.sum())


_PARTS = ('sq', 'max', 'sq_gc', 'max_gc', 'sq_mean')


def _table(parts: List[Dict[str, Tensor]]) -> Tensor:
    """The parts of several gradients as one float64 CPU tensor (gradients, parts), fetched
    from the device at once."""
    rows = [torch.stack([p[key].to(torch.float64) for key in _PARTS]) for p in parts]
    if len({row.device for row in rows}) == 1:
        return torch.stack(rows).cpu()
    return torch.stack([row.cpu() for row in rows])


def summarize(parts: List[Dict[str, Tensor]]) -> Dict[str, float]:
    """The logged gradient quantities of several gradients together."""
    return _summarize(_table(parts))


def _summarize(table: Tensor) -> Dict[str, float]:
    sq, top, sq_gc, top_gc, sq_mean = (table[:, i] for i in range(len(_PARTS)))
    total = float(sq.sum())
    return dict(grad_norm=total**0.5, grad_max=float(top.max()),
                grad_norm_gc=float(sq_gc.sum())**0.5, grad_max_gc=float(top_gc.max()),
                mean_energy=float(sq_mean.sum()) / total if total > 0 else 0.0)


@HOOKS.register_module()
class GCStatsHook(Hook):
    """Logs what GC removes from the gradients and how far the weight means move.

    Args:
        interval (int): every how many training iterations. Default 50.
        by_layer (bool): also log every parameter's own numbers. Default False.
        conv_only (bool, optional): which weights count: conv ones only (True) or conv and fc
            (False). Default None: as the optimizer's param groups say (``gc_conv_only``; conv
            and fc for an optimizer without GC options); groups with ``use_gc=False`` are left
            out then.
    """
    priority = 'NORMAL'

    def __init__(self, interval: int = 50, by_layer: bool = False,
                 conv_only: Optional[bool] = None) -> None:
        if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
            raise ValueError(f'GCStatsHook: interval must be a positive integer, got '
                             f'{interval!r}')
        for name, value in (('by_layer', by_layer), ('conv_only', conv_only)):
            if not (isinstance(value, bool) or (name == 'conv_only' and value is None)):
                raise TypeError(f'GCStatsHook: {name} must be True or False, got {value!r}')
        self.interval = interval
        self.by_layer = by_layer
        self.conv_only = conv_only
        self._due = False
        self._grads: Optional[List[Tuple[str, Dict[str, Tensor]]]] = None
        self._watched: List[Tuple[str, Tensor]] = []
        self._start_means: Dict[int, Tensor] = {}
        self._undo: List[Any] = []
        self._left_out: set = set()

    # -- which weights -------------------------------------------------------------------------
    def _selected(self, optimizer: torch.optim.Optimizer) -> List[Tensor]:
        chosen, seen = [], set()
        for group in optimizer.param_groups:
            if self.conv_only is None and not group.get('use_gc', True):
                continue
            conv_only = (group.get('gc_conv_only', False) if self.conv_only is None
                         else self.conv_only)
            for p in group['params']:
                if id(p) not in seen and isinstance(p, Tensor) and gc_applies(p, conv_only):
                    seen.add(id(p))
                    chosen.append(p)
                elif fsdp_flattened(p) and p.dim() == 1 and '<fsdp shards>' not in self._left_out:
                    self._left_out.add('<fsdp shards>')
                    warnings.warn('GCStatsHook: the weights FSDP flattened into 1-D shards are '
                                  'left out of the numbers (GC itself centralizes them, see '
                                  'mmgc.dist.fsdp); FSDP2 (fully_shard) keeps them measurable')
        return chosen

    def _slice_means(self, name: str, p: Tensor) -> Optional[Tensor]:
        if type(p) in (Tensor, torch.nn.Parameter):
            return _slice_means(p)
        return self._guarded(name, p, lambda: torch.tensor(_slice_means(p).tolist(),
                                                            dtype=torch.float64))

    # -- the hook ------------------------------------------------------------------------------
    def before_train(self, runner: Any) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        names = {id(p): name for name, p in model.named_parameters()}
        wrappers = (list(runner.optim_wrapper.values())
                    if isinstance(runner.optim_wrapper, OptimWrapperDict)
                    else [runner.optim_wrapper])
        self._watched = []
        for wrapper in wrappers:
            params = self._selected(wrapper.optimizer)
            self._watched += [(names.get(id(p), f'param{len(self._watched) + i}'), p)
                              for i, p in enumerate(params)]
            self._install(wrapper, params)
        with torch.no_grad():
            self._start_means = {}
            for name, p in self._watched:
                means = self._slice_means(name, p)
                if means is not None:
                    self._start_means[id(p)] = means
        self._log_current_values(runner)

    def _log_current_values(self, runner: Any) -> None:
        """mmengine's log processor writes the mean of the last ``window_size`` values of
        every key its ``mean_pattern`` matches (``grad_norm``, and any parameter name holding
        ``loss`` or ``time``): the hook's numbers are each of one iteration, so those keys are
        set to be logged as they are, unless the config already says how to log them."""
        processor = getattr(runner, 'log_processor', None)
        pattern = getattr(processor, 'mean_pattern', None)
        custom = getattr(processor, 'custom_cfg', None)
        if pattern is None or not isinstance(custom, list):
            return
        keys = [f'gc/{q}' for q in QUANTITIES + ('iter', )]
        if self.by_layer:
            keys += [f'gc/{name}/{q}' for name, _ in self._watched for q in QUANTITIES]
        configured = {cfg.get('log_name', cfg.get('data_src')) for cfg in custom}
        for key in keys:
            if key not in configured and re.search(pattern, key) is not None:
                custom.append(dict(data_src=key, method_name='current'))

    def _install(self, wrapper: Any, params: List[Tensor]) -> None:
        """Reads the gradients where the step receives them, before any GC: around a GC
        wrapper's GC, else as the optimizer's step begins (a GC optimizer centralizes inside
        its step; AMP has unscaled by then)."""
        named = [(n, p) for n, p in self._watched if any(p is q for q in params)]
        if isinstance(wrapper, GCWrapperMixin):
            original = wrapper.gc_context

            @contextmanager
            def capturing() -> Iterator[None]:
                self._capture(named)
                with original():
                    yield
            wrapper.gc_context = capturing
            self._undo.append(lambda: wrapper.__dict__.pop('gc_context', None))
        else:
            handle = wrapper.optimizer.register_step_pre_hook(
                lambda optimizer, args, kwargs: self._capture(named))
            self._undo.append(handle.remove)

    def after_train(self, runner: Any) -> None:
        for undo in self._undo:
            undo()
        self._undo = []

    def before_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None) -> None:
        if self.every_n_train_iters(runner, self.interval):
            self._due = True
            self._grads = []

    @torch.no_grad()
    def _capture(self, named: List[Tuple[str, Tensor]]) -> None:
        if not self._due or self._grads is None:
            return
        for name, p in named:
            grad = p.grad
            if grad is None or grad.layout is not torch.strided:
                continue
            if type(grad) is Tensor:
                self._grads.append((name, gradient_stats(grad)))
                continue
            stats = self._guarded(name, grad, lambda: {  # a subclass (DTensor, ...): as floats
                key: torch.tensor(float(value), dtype=torch.float64)
                for key, value in gradient_stats(grad).items()})
            if stats is not None:
                self._grads.append((name, stats))

    def _guarded(self, name: str, tensor: Tensor, compute: Callable[[], Any]) -> Any:
        """``compute()`` for a tensor subclass; where it fails, the parameter is left out of
        the numbers, with one warning, and training goes on."""
        try:
            return compute()
        except Exception as error:
            if name not in self._left_out:
                self._left_out.add(name)
                warnings.warn(f'GCStatsHook: {name} ({type(tensor).__name__}) is left out of the '
                              f'GC statistics: {type(error).__name__}: {error}')
            return None

    @torch.no_grad()
    def after_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None,
                         outputs: Any = None) -> None:
        if not self._due:
            return
        grads = self._grads or []
        if not grads:  # no step this iteration (gradient accumulation, AMP skipped it)
            return  # still due: the next step is measured
        self._due, self._grads = False, None
        drifts = {}
        with torch.no_grad():
            moved = []
            for name, p in self._watched:
                start = self._start_means.get(id(p))
                now = self._slice_means(name, p) if start is not None else None
                if now is not None and now.shape == start.shape:
                    moved.append((name, (now - start).abs().max()))
            if moved:
                shifts = [m for _, m in moved]
                if len({m.device for m in shifts}) > 1:  # (one transfer where they can share)
                    shifts = [m.cpu() for m in shifts]
                drifts = dict(zip([name for name, _ in moved],
                                  torch.stack(shifts).cpu().tolist()))
            table = _table([stats for _, stats in grads])
        values = _summarize(table)
        values['weight_mean_drift'] = max(drifts.values(), default=0.0)
        hub = runner.message_hub
        for key, value in values.items():
            hub.update_scalar(f'train/gc/{key}', value)
        hub.update_scalar('train/gc/iter', runner.iter + 1)
        if self.by_layer:
            for (name, _), row in zip(grads, table):
                for key, value in _summarize(row[None]).items():
                    hub.update_scalar(f'train/gc/{name}/{key}', value)
            for name, drift in drifts.items():
                hub.update_scalar(f'train/gc/{name}/weight_mean_drift', drift)
