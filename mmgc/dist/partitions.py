"""Refusing what GC cannot see: param groups whose weights an engine swapped for flat partitions.

DeepSpeed (ZeRO stages 1 to 3, and its fp16 / bf16 optimizers) builds the client optimizer on the
model's parameters, then replaces each param group's ``params`` by one flat 1-D fp32 partition per
rank and steps that. Nothing in such a partition says where one weight ends and the next begins,
so GC cannot find the rows; without this check every weight would be stepped without GC.

:class:`BuiltGroups` records what each group held when the optimizer was built and refuses, at the
first step, a group that held conv / fc weights and now holds only tensors that are not.
"""
from typing import Any, List, Optional, Sequence

from torch import Tensor

from .fsdp import fsdp_flattened

__all__ = ['BuiltGroups']


def _weights(params: Sequence[Any]) -> int:
    """How many of ``params`` GC can still find rows in: tensors with a dim 1, or flattened by
    FSDP (whose layout mmgc reads, see :mod:`mmgc.dist.fsdp`)."""
    return sum(1 for p in params
               if isinstance(p, Tensor) and (p.dim() > 1 or fsdp_flattened(p)))


class BuiltGroups:
    """The ``params`` list and the number of conv / fc weights of every param group, as built."""

    def __init__(self) -> None:
        # [the group's own params list, kept alive so that its id stays its own; weight count;
        # whether FSDP flattened any of them, first asked at a step (an optimizer may be built
        # before FSDP wraps the model with use_orig_params=True, which keeps the parameters)]
        self._groups: List[list] = []

    def record(self, group: dict) -> None:
        params = group['params']
        self._groups.append([params, _weights(params), None])

    def holds_flat_shards(self, index: int, params: list) -> bool:
        """Whether ``params`` (group ``index``'s) holds tensors FSDP flattened; for the list the
        group was built with, looked at once (at the first step) and remembered."""
        built = self._built(index)
        if built is None or params is not built[0]:
            return any(map(fsdp_flattened, params))
        if built[2] is None:
            built[2] = any(map(fsdp_flattened, params))
        return built[2]

    def check(self, owner: str, param_groups: Sequence[dict], use_gc: bool) -> None:
        """Raises ``RuntimeError`` for a GC group whose weights were replaced by 1-D partitions.

        Args:
            owner: the optimizer or wrapper, for the message.
            param_groups: the groups as they are now.
            use_gc: the default of groups without their own ``use_gc``.
        """
        for index, group in enumerate(param_groups):
            built = self._built(index)
            params = group['params']
            if built is None or params is built[0] or not group.get('use_gc', use_gc):
                continue
            if built[1] and not _weights(params):
                raise RuntimeError(
                    f'{owner}: param group {index} was built with {built[1]} conv / fc weights, '
                    f'but now holds {len(params)} flat 1-D tensor(s): an engine replaced the '
                    "weights by flat partitions (DeepSpeed's ZeRO and its fp16 / bf16 "
                    'optimizers do). Gradient Centralization cannot find the rows of a weight '
                    'there and refuses to step without it. Shard with FSDP (mmengine '
                    'FSDPStrategy), FSDP2 (fully_shard) or ZeroRedundancyOptimizer '
                    "(optimizer_type='SGDGC', ...) instead; see README, Scaling out.")

    def _built(self, index: int) -> Optional[list]:
        return self._groups[index] if index < len(self._groups) else None
