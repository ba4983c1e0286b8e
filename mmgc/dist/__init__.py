"""What sharded engines need for GC to stay exact (or to be refused, never silently off).

- :mod:`mmgc.dist.fsdp`: FSDP1's flat shards (mmengine ``FSDPStrategy``): exact GC with one
  all-reduce of per-row sums.
- :mod:`mmgc.dist.zero`: ``ZeroRedundancyOptimizer`` that takes GC optimizers by name.
- :mod:`mmgc.dist.partitions`: refuses flat partitions GC cannot read (DeepSpeed).

FSDP2's ``DTensor`` parameters (``Shard(0)``: whole rows per rank) are handled where the operator
is, in :mod:`mmgc.gc`. The optimizers ask this package; they never import FSDP themselves.
"""
from .fsdp import FlatJob, FlatUpdate, centralize_flat_, flat_shard, fsdp_flattened
from .partitions import BuiltGroups
from .zero import ZeroRedundancyOptimizer

__all__ = ['BuiltGroups', 'FlatJob', 'FlatUpdate', 'ZeroRedundancyOptimizer',
           'centralize_flat_', 'flat_shard', 'fsdp_flattened']
