# mmgc's train tool: mmdet's tools/train.py (same flags, same Runner, same logs) plus
#   - `import mmgc`, so GC optimizers / wrappers are registered and mmengine checkpoints load
#     under torch >= 2.6 even for a config without `custom_imports`;
#   - `--amp` for GC configs: OptimWrapper -> AmpOptimWrapper, GCOptimWrapper ->
#     AmpGCOptimWrapper, and one clear error line where no CUDA/NPU/MLU/MUSA device exists;
#   - `--launcher pytorch` without CUDA: the process group is initialized on gloo;
#   - one error line, before the Runner is built, where the run cannot work: mmdet missing, a
#     checkpoint to resume from that is missing, damaged or refused by torch's safe loading, a
#     missing data root or annotation file, or another training running into the same work dir.
import argparse
import os
import os.path as osp
import sys
import warnings

# setuptools' notice about mmengine's `import pkg_resources` is noise on every start (and would
# come before the one-line errors below); nothing else is silenced.
warnings.filterwarnings('ignore', message='pkg_resources is deprecated', category=UserWarning)

from mmengine.config import Config, DictAction  # noqa: E402
from mmengine.registry import RUNNERS  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

from mmgc.utils import (MMDET_INSTALL, RunCheckError, amp_device_available,  # noqa: E402
                        amp_optim_wrapper, check_datasets, check_last_checkpoint,
                        check_load_from, import_error_message, init_cpu_distributed,
                        lock_work_dir, run_dataloaders)


def parse_args():
    parser = argparse.ArgumentParser(description='Train a detector')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--amp',
        action='store_true',
        default=False,
        help='enable automatic-mixed-precision training (OptimWrapper -> AmpOptimWrapper, '
        'GCOptimWrapper -> AmpGCOptimWrapper; needs a CUDA, NPU, MLU or MUSA device)')
    parser.add_argument(
        '--auto-scale-lr',
        action='store_true',
        help='enable automatically scaling LR.')
    parser.add_argument(
        '--resume',
        nargs='?',
        type=str,
        const='auto',
        help='If specify checkpoint path, resume from it, while if not '
        'specify, try to auto resume from the latest checkpoint '
        'in the work directory.')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override some settings in the used config, the key-value pair '
        'in xxx=yyy format will be merged into config file. If the value to '
        'be overwritten is a list, it should be like key="[a,b]" or key=a,b '
        'It also allows nested list/tuple values, e.g. key="[(a,b),(c,d)]" '
        'Note that the quotation marks are necessary and that no white space '
        'is allowed.')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher (pytorch without CUDA: gloo on the CPU)')
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


def import_mmdet():
    """What this tool takes from mmdet (imported here only), or one error line without it."""
    try:
        from mmdet.utils import setup_cache_size_limit_of_dynamo
    except (ImportError, AssertionError) as error:  # mmdet asserts its mmcv version
        fail(import_error_message('mmdet', error, MMDET_INSTALL))
    return setup_cache_size_limit_of_dynamo


def main():
    args = parse_args()
    setup_cache_size_limit_of_dynamo = import_mmdet()

    # Checked first, before the config (and what it imports) is loaded.
    if args.amp and not amp_device_available():
        fail('--amp needs a CUDA (or NPU/MLU/MUSA) device; none is available on this machine')

    # Reduce the number of repeated compilations and improve training speed.
    setup_cache_size_limit_of_dynamo()

    # load config
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)

    # work_dir is determined in this priority: CLI > segment in file > filename
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

    # enable automatically scaling LR
    if args.auto_scale_lr:
        if 'auto_scale_lr' in cfg and \
                'enable' in cfg.auto_scale_lr and \
                'base_batch_size' in cfg.auto_scale_lr:
            cfg.auto_scale_lr.enable = True
        else:
            raise RuntimeError('Can not find "auto_scale_lr" or '
                               '"auto_scale_lr.enable" or '
                               '"auto_scale_lr.base_batch_size" in your'
                               ' configuration file.')

    # resume is determined in this priority: resume from > auto_resume
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
        work_dir_lock = lock_work_dir(cfg.work_dir, args.launcher)
        check_last_checkpoint(cfg)
    except RunCheckError as error:
        fail(str(error))

    with work_dir_lock:  # held until the run ends
        # --launcher pytorch without CUDA: gloo, initialized before the Runner (which then skips
        # mmengine's CUDA-only init). With CUDA this does nothing: mmengine's path (nccl).
        init_cpu_distributed(cfg, args.launcher)

        # build the runner from config
        if 'runner_type' not in cfg:
            # build the default runner
            runner = Runner.from_cfg(cfg)
        else:
            # build customized runner from the registry
            # if 'runner_type' is set in the cfg
            runner = RUNNERS.build(cfg)

        # start training
        runner.train()


if __name__ == '__main__':
    main()
