# mmgc's test tool, one for every OpenMMLab codebase whose config it is given (mmdet's, as
# mmdet's tools/test.py; mmpretrain's, as mmpretrain's): the same flags, Runner and logs, plus
#   - `import mmgc`, so a GC config's checkpoint loads under torch >= 2.6 even for a config
#     without `custom_imports`;
#   - the codebase is the one the config's default_scope names, imported only then: an
#     mmpretrain config needs no mmdet, and a missing codebase is one error line;
#   - `--launcher pytorch` / `--launcher slurm` without CUDA: the process group is initialized
#     on gloo (one error line where the launcher's environment is incomplete);
#   - one error line, before the Runner is built, where the run cannot work: the codebase
#     missing, a checkpoint that is missing, damaged or refused by torch's safe loading, a
#     missing data root or annotation file, a bad --out.
import argparse
import os
import os.path as osp
import sys
import warnings
from copy import deepcopy

# setuptools' notice about mmengine's `import pkg_resources` is noise on every start.
warnings.filterwarnings('ignore', message='pkg_resources is deprecated', category=UserWarning)

import mmengine  # noqa: E402
from mmengine import ConfigDict  # noqa: E402
from mmengine.config import DictAction  # noqa: E402
from mmengine.evaluator import DumpResults  # noqa: E402
from mmengine.registry import RUNNERS  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

from mmgc.utils import (LauncherEnvError, RunCheckError, check_datasets,  # noqa: E402
                        check_load_from, end_cpu_distributed, init_cpu_distributed,
                        load_run_config, run_dataloaders)


def parse_args():
    parser = argparse.ArgumentParser(
        description='Test (evaluate) a checkpoint of an mmdet or mmpretrain config')
    parser.add_argument('config', help='the config file of the model')
    parser.add_argument('checkpoint', help='the checkpoint to evaluate')
    parser.add_argument(
        '--work-dir',
        help='where the log and the metrics go (default: work_dirs/<config name>)')
    parser.add_argument(
        '--out',
        type=str,
        help='also write the predictions (or, with --out-item metrics, the metrics) to this '
        'file (.pkl / .pickle for predictions)')
    parser.add_argument(
        '--out-item',
        choices=['metrics', 'pred'],
        help='what --out holds: the predictions (pred, the default) or the metrics')
    parser.add_argument(
        '--show', action='store_true', help='show each prediction in a window')
    parser.add_argument(
        '--show-dir',
        help='save images with the predictions drawn on them into this folder (under the '
        'run\'s timestamped folder of the work dir)')
    parser.add_argument(
        '--wait-time', type=float, default=2, help='seconds each image is shown (--show)')
    parser.add_argument(
        '--interval', type=int, default=1,
        help='draw every n-th image of an mmpretrain config (--show, --show-dir)')
    parser.add_argument(
        '--amp', action='store_true',
        help='test under automatic mixed precision (test_cfg.fp16 = True; mmpretrain\'s flag, '
        'any config)')
    parser.add_argument(
        '--no-pin-memory',
        action='store_true',
        help='pin_memory=False in the test dataloader (mmpretrain\'s flag; any config)')
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
    parser.add_argument(
        '--tta', action='store_true',
        help='test-time augmentation: the config\'s tta_model / tta_pipeline, or, where it '
        'has none, the prediction averaged with that of the flipped image')
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


def show_predictions(cfg, args, scope):
    """--show / --show-dir: switches on the config's visualization hook."""
    hook = cfg.get('default_hooks', {}).get('visualization')
    if not isinstance(hook, dict):
        fail('--show / --show-dir need a visualization hook in default_hooks '
             '(default_hooks = dict(visualization=dict(type=...)))')
    if scope == 'mmdet':
        from mmdet.engine.hooks.utils import trigger_visualization_hook
        trigger_visualization_hook(cfg, args)
        return
    # mmpretrain's VisualizationHook: enable, show, wait_time, out_dir, interval
    hook.update(enable=True, interval=args.interval)
    if args.show:
        hook.update(show=True, wait_time=args.wait_time)
    if args.show_dir:
        hook['out_dir'] = args.show_dir


def prediction_dumper(scope, path):
    """The metric that writes the predictions to ``path`` (masks as RLE for mmdet)."""
    if scope == 'mmdet':
        from mmdet.evaluation import DumpDetResults
        return DumpDetResults(out_file_path=path)
    return DumpResults(out_file_path=path)


#: The model that merges the predictions of an image and its flip, where a config has no
#: tta_model: mmdet's (boxes merged by NMS), or mmpretrain's (class scores averaged).
TTA_MODELS = {
    'mmdet': dict(type='DetTTAModel',
                  tta_cfg=dict(nms=dict(type='nms', iou_threshold=0.5), max_per_img=100)),
    'mmpretrain': dict(type='AverageClsScoreTTA'),
}
FLIP_KEYS = ('flip', 'flip_direction')


def default_tta(cfg, scope):
    """--tta: the config's tta_model and tta_pipeline; where it has none, each test image is
    predicted as it is and flipped, and the codebase's TTA model merges the two predictions."""
    if 'tta_model' not in cfg:
        if scope not in TTA_MODELS:
            fail(f'--tta: the config has no tta_model, and mmgc knows no default for '
                 f'default_scope {scope!r}; add tta_model (and tta_pipeline) to the config')
        cfg.tta_model = deepcopy(TTA_MODELS[scope])
        warnings.warn(f'--tta: the config has no tta_model; using {cfg.tta_model["type"]} on '
                      'each image and its horizontal flip')
    if 'tta_pipeline' not in cfg:
        dataset = cfg.test_dataloader.dataset
        while 'dataset' in dataset:  # inside dataset wrappers
            dataset = dataset['dataset']
        pipeline = deepcopy(dataset.pipeline)
        pack = pipeline.pop()
        if 'meta_keys' in pack:  # the merge step needs to know which prediction was flipped
            pack['meta_keys'] = tuple(pack['meta_keys']) + tuple(
                key for key in FLIP_KEYS if key not in pack['meta_keys'])
        pipeline.append(dict(type='TestTimeAug', transforms=[
            [dict(type='RandomFlip', prob=1.), dict(type='RandomFlip', prob=0.)], [pack]]))
        cfg.tta_pipeline = pipeline
    cfg.model = ConfigDict(**cfg.tta_model, module=cfg.model)
    cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline


def main():
    args = parse_args()

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

    cfg.load_from = args.checkpoint

    if args.out is not None and args.out_item != 'metrics' and \
            not args.out.endswith(('.pkl', '.pickle')):
        fail(f'--out {args.out}: predictions are written as a pickle: name a .pkl or .pickle '
             'file (or add --out-item metrics)')

    if args.show or args.show_dir:
        show_predictions(cfg, args, scope)

    if args.tta:
        default_tta(cfg, scope)

    if args.amp:
        cfg.test_cfg = dict(cfg.get('test_cfg') or {}, fp16=True)

    if args.no_pin_memory and isinstance(cfg.get('test_dataloader'), dict):
        cfg.test_dataloader.pin_memory = False

    # What the run reads must be there, before anything is built: the checkpoint, the data.
    try:
        check_load_from(cfg, '')
        check_datasets(cfg, run_dataloaders(cfg, 'test'))
    except RunCheckError as error:
        fail(str(error))

    # --launcher pytorch / slurm without CUDA: gloo, initialized before the Runner (which then
    # skips mmengine's CUDA-only init). With CUDA this does nothing: mmengine's path (nccl).
    try:
        init_cpu_distributed(cfg, args.launcher)
    except LauncherEnvError as error:
        fail(str(error))

    # the Runner: mmengine's, or the one the config names (runner_type)
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)

    if args.out is not None and args.out_item != 'metrics':
        runner.test_evaluator.metrics.append(prediction_dumper(scope, args.out))

    metrics = runner.test()

    if args.out is not None and args.out_item == 'metrics':
        mmengine.dump(metrics, args.out)


if __name__ == '__main__':
    main()
    end_cpu_distributed()  # a gloo rank: exit handlers, then out without the C++ teardown
