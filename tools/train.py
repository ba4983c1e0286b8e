# mmgc's train tool, one for every OpenMMLab codebase whose config it is given (mmdet's, as
# mmdet's tools/train.py; mmpretrain's, as mmpretrain's): the same flags, Runner and logs, plus
#   - `import mmgc`, so GC optimizers / wrappers are registered and mmengine checkpoints load
#     under torch >= 2.6 even for a config without `custom_imports`;
#   - the codebase is the one the config's default_scope names, imported only then: an
#     mmpretrain config needs no mmdet, and a missing codebase is one error line;
#   - `--amp` for GC configs: OptimWrapper -> AmpOptimWrapper, GCOptimWrapper ->
#     AmpGCOptimWrapper, and one clear error line where no CUDA/NPU/MLU/MUSA device exists;
#   - `--launcher pytorch` / `--launcher slurm` without CUDA: the process group is initialized
#     on gloo (from torchrun's or srun's environment; one error line where it is incomplete);
#   - one error line, before the Runner is built, where the run cannot work: the codebase
#     missing, a checkpoint to resume from (or a model's pretrained checkpoint) that is missing,
#     damaged or refused by torch's safe loading, a missing data root or annotation file, or another training running into the
#     same work dir.
import argparse
import os
import os.path as osp
import sys
import warnings

# setuptools' notice about mmengine's `import pkg_resources` is noise on every start (and would
# come before the one-line errors below); nothing else is silenced.
warnings.filterwarnings('ignore', message='pkg_resources is deprecated', category=UserWarning)

from mmengine.config import DictAction  # noqa: E402
from mmengine.registry import RUNNERS  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

from mmgc.utils import (LauncherEnvError, RunCheckError, amp_device_available,  # noqa: E402
                        amp_optim_wrapper, check_datasets, check_last_checkpoint, check_load_from,
                        check_pretrained, end_cpu_distributed, init_cpu_distributed,
                        load_run_config, lock_work_dir, run_dataloaders)


def parse_args():
    parser = argparse.ArgumentParser(
        description='Train a model of an mmdet or mmpretrain config (with or without GC)')
    parser.add_argument('config', help='the config file to train')
    parser.add_argument('--work-dir', help='where logs and checkpoints go '
                        '(default: work_dirs/<config name>)')
    parser.add_argument(
        '--amp',
        action='store_true',
        default=False,
        help='enable automatic-mixed-precision training (OptimWrapper -> AmpOptimWrapper, '
        'GCOptimWrapper -> AmpGCOptimWrapper; needs a CUDA, NPU, MLU or MUSA device)')
    parser.add_argument(
        '--auto-scale-lr',
        action='store_true',
        help='scale the learning rate linearly from auto_scale_lr.base_batch_size to the batch '
        'this run trains with (GPUs x samples per GPU)')
    parser.add_argument(
        '--resume',
        nargs='?',
        type=str,
        const='auto',
        help='resume training: from this checkpoint, or, without a path, from the latest '
        'checkpoint of the work dir (if there is one)')
    parser.add_argument(
        '--no-validate',
        action='store_true',
        help='do not evaluate during training (mmpretrain\'s flag; any config)')
    parser.add_argument(
        '--no-pin-memory',
        action='store_true',
        help='pin_memory=False in every dataloader (mmpretrain\'s flag; any config)')
    parser.add_argument(
        '--no-persistent-workers',
        action='store_true',
        help='persistent_workers=False in every dataloader (mmpretrain\'s flag; any config)')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='config entries to override, as key=value pairs merged into the config '
        '(a list: key="[a,b]" or key=a,b; nested lists and tuples: key="[(a,b),(c,d)]", with '
        'the quotes and no spaces)')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher (pytorch or slurm without CUDA: gloo on the CPU)')
    # torch >= 2.0's `torch.distributed.launch` passes `--local-rank`, older ones `--local_rank`
    # (torchrun passes neither and sets LOCAL_RANK).
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)

    return args


def fail(message):
    """Ends the run with one line on stderr (no traceback) and exit status 2, as argparse."""
    print(f'{osp.basename(sys.argv[0])}: error: {message}', file=sys.stderr)
    sys.exit(2)


def set_dataloaders(cfg, **options):
    """Sets these dataloader options in every dataloader of the config."""
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        if isinstance(cfg.get(key), dict):
            cfg[key].update(options)


def main():
    args = parse_args()

    # Checked first, before the config (and what it imports) is loaded.
    if args.amp and not amp_device_available():
        fail('--amp needs a CUDA (or NPU/MLU/MUSA) device; none is available on this machine')

    # The config, and its codebase (mmdet, mmpretrain), or one line saying how to install it.
    try:
        cfg, scope = load_run_config(args.config, args.cfg_options)
    except RunCheckError as error:
        fail(str(error))
    cfg.launcher = args.launcher
    if scope == 'mmdet':
        # mmdet's tool does this: DYNAMO_CACHE_SIZE_LIMIT (if set) bounds torch.compile's cache.
        from mmdet.utils import setup_cache_size_limit_of_dynamo
        setup_cache_size_limit_of_dynamo()

    # the work dir: --work-dir, else the config's work_dir, else work_dirs/<config name>
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(args.config))[0])

    # enable automatic-mixed-precision training, GC kept
    if args.amp is True:
        if cfg.get('optim_wrapper') is None:
            fail('--amp: the config has no optim_wrapper')
        try:
            amp_optim_wrapper(cfg.optim_wrapper)
        except ValueError as error:
            fail(str(error))

    # scale lr to this run's batch (mmpretrain's configs give base_batch_size without `enable`)
    if args.auto_scale_lr:
        if not isinstance(cfg.get('auto_scale_lr'), dict) or \
                'base_batch_size' not in cfg.auto_scale_lr:
            fail('--auto-scale-lr: the config has no auto_scale_lr.base_batch_size (the batch '
                 'its lr is meant for); add auto_scale_lr = dict(base_batch_size=N)')
        cfg.auto_scale_lr.enable = True

    if args.no_validate:
        cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    if args.no_pin_memory:
        set_dataloaders(cfg, pin_memory=False)
    if args.no_persistent_workers:
        set_dataloaders(cfg, persistent_workers=False)

    # --resume CKPT resumes from that file; a bare --resume from the work dir's latest
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume

    # What the run reads must be there, before anything is built: the datasets, the checkpoint
    # to resume from (or load); then this run takes the work dir (one training at a time), and
    # under that lock the work dir's last_checkpoint (--resume alone) is read.
    try:
        check_datasets(cfg, run_dataloaders(cfg, 'train'))
        check_load_from(cfg, '--resume' if args.resume not in (None, 'auto') else 'load_from')
        check_pretrained(cfg)
        work_dir_lock = lock_work_dir(cfg.work_dir, args.launcher)
        check_last_checkpoint(cfg)
    except RunCheckError as error:
        fail(str(error))

    with work_dir_lock:  # held until the run ends
        # --launcher pytorch / slurm without CUDA: gloo, initialized before the Runner (which
        # then skips mmengine's CUDA-only init). With CUDA this does nothing: mmengine's path.
        try:
            init_cpu_distributed(cfg, args.launcher)
        except LauncherEnvError as error:
            fail(str(error))

        # the Runner: mmengine's, or the one the config names (runner_type)
        runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)

        runner.train()


if __name__ == '__main__':
    main()
    end_cpu_distributed()  # a gloo rank: exit handlers, then out without the C++ teardown
