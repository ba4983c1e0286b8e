from .gc_stats import GCStatsHook

__all__ = ['GCStatsHook']
