# mmgc's test tool: mmdet's tools/test.py (same flags, same Runner, same logs) plus
#   - `import mmgc`, so a GC config's checkpoint loads under torch >= 2.6 even for a config
#     without `custom_imports`;
#   - `--launcher pytorch` without CUDA: the process group is initialized on gloo;
#   - one error line, before the Runner is built, where the run cannot work: mmdet missing, a
#     checkpoint that is missing, damaged or refused by torch's safe loading, a missing data root
#     or annotation file.
import argparse
import os
import os.path as osp
import sys
import warnings
from copy import deepcopy
from types import SimpleNamespace

# setuptools' notice about mmengine's `import pkg_resources` is noise on every start.
warnings.filterwarnings('ignore', message='pkg_resources is deprecated', category=UserWarning)

from mmengine import ConfigDict  # noqa: E402
from mmengine.config import Config, DictAction  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

from mmgc.utils import (MMDET_INSTALL, RunCheckError, check_datasets,  # noqa: E402
                        check_load_from, import_error_message, init_cpu_distributed,
                        run_dataloaders)


def parse_args():
    parser = argparse.ArgumentParser(
        description='MMDet test (and eval) a model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument(
        '--work-dir',
        help='the directory to save the file containing evaluation metrics')
    parser.add_argument(
        '--out',
        type=str,
        help='dump predictions to a pickle file for offline evaluation')
    parser.add_argument(
        '--show', action='store_true', help='show prediction results')
    parser.add_argument(
        '--show-dir',
        help='directory where painted images will be saved. '
        'If specified, it will be automatically saved '
        'to the work_dir/timestamp/show_dir')
    parser.add_argument(
        '--wait-time', type=float, default=2, help='the interval of show (s)')
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
    parser.add_argument('--tta', action='store_true')
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
        from mmdet.engine.hooks.utils import trigger_visualization_hook
        from mmdet.evaluation import DumpDetResults
        from mmdet.registry import RUNNERS
        from mmdet.utils import setup_cache_size_limit_of_dynamo
    except (ImportError, AssertionError) as error:  # mmdet asserts its mmcv version
        fail(import_error_message('mmdet', error, MMDET_INSTALL))
    return SimpleNamespace(
        trigger_visualization_hook=trigger_visualization_hook, DumpDetResults=DumpDetResults,
        RUNNERS=RUNNERS, setup_cache_size_limit_of_dynamo=setup_cache_size_limit_of_dynamo)


def default_tta(cfg):
    """mmdet's default test-time augmentation (flip) where the config defines none."""
    if 'tta_model' not in cfg:
        warnings.warn('Cannot find ``tta_model`` in config, '
                      'we will set it as default.')
        cfg.tta_model = dict(
            type='DetTTAModel',
            tta_cfg=dict(
                nms=dict(type='nms', iou_threshold=0.5), max_per_img=100))
    if 'tta_pipeline' not in cfg:
        warnings.warn('Cannot find ``tta_pipeline`` in config, '
                      'we will set it as default.')
        test_data_cfg = cfg.test_dataloader.dataset
        while 'dataset' in test_data_cfg:
            test_data_cfg = test_data_cfg['dataset']
        cfg.tta_pipeline = deepcopy(test_data_cfg.pipeline)
        flip_tta = dict(
            type='TestTimeAug',
            transforms=[
                [
                    dict(type='RandomFlip', prob=1.),
                    dict(type='RandomFlip', prob=0.)
                ],
                [
                    dict(
                        type='PackDetInputs',
                        meta_keys=('img_id', 'img_path', 'ori_shape',
                                   'img_shape', 'scale_factor', 'flip',
                                   'flip_direction'))
                ],
            ])
        cfg.tta_pipeline[-1] = flip_tta
    cfg.model = ConfigDict(**cfg.tta_model, module=cfg.model)
    cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline


def main():
    args = parse_args()
    mmdet = import_mmdet()

    # Reduce the number of repeated compilations and improve testing speed.
    mmdet.setup_cache_size_limit_of_dynamo()

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

    cfg.load_from = args.checkpoint

    if args.show or args.show_dir:
        cfg = mmdet.trigger_visualization_hook(cfg, args)

    if args.tta:
        default_tta(cfg)

    # What the run reads must be there, before anything is built: the checkpoint, the data.
    try:
        check_load_from(cfg, '')
        check_datasets(cfg, run_dataloaders(cfg, 'test'))
    except RunCheckError as error:
        fail(str(error))

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
        runner = mmdet.RUNNERS.build(cfg)

    # add `DumpResults` dummy metric
    if args.out is not None:
        assert args.out.endswith(('.pkl', '.pickle')), \
            'The dump file must be a pkl file.'
        runner.test_evaluator.metrics.append(
            mmdet.DumpDetResults(out_file_path=args.out))

    # start testing
    runner.test()


if __name__ == '__main__':
    main()
