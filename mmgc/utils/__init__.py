from .checkpoint import allow_mmengine_checkpoints
from .launch import (AMP_OPTIM_WRAPPERS, LauncherEnvError, amp_device_available,
                     amp_optim_wrapper, end_cpu_distributed, init_cpu_distributed)
from .run_checks import (CODEBASE_INSTALL, MMDET_INSTALL, MMPRETRAIN_INSTALL, RunCheckError,
                         WorkDirLock, check_checkpoint, check_datasets, check_last_checkpoint,
                         check_load_from, check_pretrained, checkpoint_problem,
                         config_package_missing, import_codebase, import_error_message,
                         load_run_config, lock_work_dir, run_dataloaders)

__all__ = [
    'allow_mmengine_checkpoints', 'AMP_OPTIM_WRAPPERS', 'amp_device_available',
    'amp_optim_wrapper', 'end_cpu_distributed', 'init_cpu_distributed', 'LauncherEnvError',
    'CODEBASE_INSTALL',
    'MMDET_INSTALL', 'MMPRETRAIN_INSTALL', 'RunCheckError', 'WorkDirLock', 'check_checkpoint',
    'check_datasets', 'check_last_checkpoint', 'check_load_from', 'check_pretrained',
    'checkpoint_problem', 'config_package_missing', 'import_codebase', 'import_error_message',
    'load_run_config', 'lock_work_dir', 'run_dataloaders'
]
