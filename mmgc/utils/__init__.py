from .checkpoint import allow_mmengine_checkpoints
from .launch import (AMP_OPTIM_WRAPPERS, amp_device_available, amp_optim_wrapper,
                     init_cpu_distributed)

__all__ = [
    'allow_mmengine_checkpoints', 'AMP_OPTIM_WRAPPERS', 'amp_device_available',
    'amp_optim_wrapper', 'init_cpu_distributed'
]
