"""``ZeroRedundancyOptimizer`` that takes any registered optimizer, GC ones included.

mmengine's ``ZeroRedundancyOptimizer`` finds ``optimizer_type`` in ``torch.optim`` only, so
``optimizer_type='SGDGC'`` fails there. This subclass finds it in mmengine's ``OPTIMIZERS``
registry, where mmengine registers every ``torch.optim`` class under its own name and mmgc its GC
optimizers, and replaces mmengine's under the same name: configs written for mmengine's keep
working, and these work too::

    optim_wrapper = dict(
        optimizer=dict(type='ZeroRedundancyOptimizer', optimizer_type='SGDGC',
                       lr=0.02, momentum=0.9, weight_decay=1e-4))

ZeRO gives every parameter whole to one rank, whose local optimizer steps it, so GC is exact with
no communication of its own: the weights equal those of an unsharded run.
"""
from typing import Any, Union

from mmengine.optim import ZeroRedundancyOptimizer as _MMEngineZero
from mmengine.registry import OPTIMIZERS
from torch.optim import Optimizer

__all__ = ['ZeroRedundancyOptimizer', 'local_optimizer_class']


def local_optimizer_class(optimizer_type: Union[str, type]) -> type:
    """The optimizer class ``optimizer_type`` names: a registered name (``'SGDGC'``,
    ``'mmgc.AdamWGC'``, ``'SGD'``) or a class.

    Raises:
        ValueError: a name no registry knows, or something that is not an optimizer class.
    """
    if isinstance(optimizer_type, str):
        try:
            found = OPTIMIZERS.get(optimizer_type)
        except Exception:  # (the registry raises on malformed names: '', '.', 'scope.')
            found = None
        if found is None:
            raise ValueError(
                f'ZeroRedundancyOptimizer: optimizer_type={optimizer_type!r} is not a registered '
                "optimizer (a torch.optim name such as 'SGD', or mmgc's 'SGDGC', 'SGDWGC', "
                "'AdamGC', 'AdamWGC', 'AdagradGC')")
        optimizer_type = found
    if not (isinstance(optimizer_type, type) and issubclass(optimizer_type, Optimizer)):
        raise ValueError('ZeroRedundancyOptimizer: optimizer_type must name an optimizer class, '
                         f'got {optimizer_type!r}')
    if issubclass(optimizer_type, _MMEngineZero.__mro__[1]):
        raise ValueError('ZeroRedundancyOptimizer: optimizer_type cannot be '
                         'ZeroRedundancyOptimizer itself')
    return optimizer_type


@OPTIMIZERS.register_module(force=True)
class ZeroRedundancyOptimizer(_MMEngineZero):
    """mmengine's ``ZeroRedundancyOptimizer`` (ZeRO-1: optimizer states sharded over the ranks,
    each parameter stepped whole by one rank), with ``optimizer_type`` looked up in the
    ``OPTIMIZERS`` registry.

    Args:
        params: parameters or param groups, sharded over the ranks.
        optimizer_type (str | type): the local optimizer, e.g. ``'SGDGC'`` or ``'AdamW'``.
        **kwargs: for the local optimizer and for
            ``torch.distributed.optim.ZeroRedundancyOptimizer`` (e.g. ``parameters_as_bucket_view``).
    """

    def __init__(self, params: Any, optimizer_type: Union[str, type], **kwargs: Any) -> None:
        optimizer_class = local_optimizer_class(optimizer_type)
        # torch's constructor, with the class found above (mmengine's would look in torch.optim).
        super(_MMEngineZero, self).__init__(list(params), optimizer_class, **kwargs)
