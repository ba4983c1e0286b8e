"""Checks that ``tools/train.py`` and ``tools/test.py`` make before the ``Runner`` is built, so that
a run which cannot work stops at once with one line that says why and what to do, instead of a
traceback (often minutes later, after the model was built).

- :func:`check_checkpoint`, :func:`check_load_from`, :func:`check_last_checkpoint`,
  :func:`check_pretrained`: the checkpoint a run will load (or start a model from) exists, is a torch checkpoint, and ``torch.load`` (called as
  mmengine calls it, so in weights-only mode on torch >= 2.6) accepts it. Tensor data is mapped,
  not read, so this costs little even for a large checkpoint. A refusal of the safe loader is
  reported by its reason alone, never with torch's advice to load with ``weights_only=False``
  (which would run whatever the file holds).
- :func:`check_datasets`: the data roots and annotation files of the dataloaders (and
  evaluators) a run will use exist.
- :func:`lock_work_dir`: one training per work dir at a time (an OS lock, gone when its process
  is).
- :func:`import_error_message`: one line for an optional package (mmdet) that cannot be imported;
  :func:`import_codebase`: the codebase a config's ``default_scope`` names (mmdet, mmpretrain,
  ...) is imported, or one line that says how to install it.

Every check raises :class:`RunCheckError`, whose message is one line. Only torch and mmengine are
imported here; mmdet or mmpretrain only by name, where a config asks for them.
"""
import datetime
import importlib
import inspect
import json
import os
import os.path as osp
import pickle
import re
import socket
import tarfile
import time
import warnings
from collections.abc import Mapping
from typing import Any, Iterator, List, Optional, Sequence, Set, Tuple

import torch

try:
    import fcntl
except ImportError:  # Windows: no work-dir lock
    fcntl = None

__all__ = [
    'RunCheckError', 'checkpoint_problem', 'check_checkpoint', 'check_load_from',
    'check_last_checkpoint', 'check_pretrained', 'run_dataloaders', 'check_datasets', 'WORK_DIR_LOCK', 'WorkDirLock',
    'lock_work_dir', 'MMDET_INSTALL', 'MMPRETRAIN_INSTALL', 'CODEBASE_INSTALL',
    'import_error_message', 'config_package_missing', 'import_codebase', 'load_run_config'
]


class RunCheckError(Exception):
    """A run cannot start; the message (one line) says why and what to do."""


def _one_line(text: str) -> str:
    return ' '.join(str(text).split())


def _is_remote(path: str) -> bool:
    """A path that mmengine reads through a URL scheme (``https://``, ``s3://``,
    ``open-mmlab://``, ...): not checked here."""
    return '://' in path


def _shown(path: str) -> str:
    """A path as the config gives it, with the directory a relative one is taken from."""
    return path if osp.isabs(path) else f'{path} (in {os.getcwd()})'


# --- checkpoints --------------------------------------------------------------------------------

_ZIP_MAGIC = b'PK\x03\x04'
_LOAD_TAKES_MMAP = 'mmap' in inspect.signature(torch.load).parameters

#: Problem kinds of :func:`checkpoint_problem`.
MISSING, UNREADABLE, REFUSED = 'missing', 'unreadable', 'refused'


# Sentences of torch's errors that are advice, not a reason: to load with weights_only=False
# (which runs whatever the file holds), or to allow-list what it holds.
_ADVICE = re.compile(r'weights_only|arbitrary code|trusted source|safe_globals|allowlist|'
                     r'file an issue|can still be loaded|Alternatively|'
                     r'documentation of torch\.load')


def _without_advice(text: str) -> str:
    """The first line of an error text that is not torch's advice, with its advice sentences
    dropped ('' if nothing else is left)."""
    for line in str(text).splitlines():
        sentences = re.split(r'(?<=\.)\s+', line.strip())
        kept = ' '.join(s for s in sentences if s and not _ADVICE.search(s))
        kept = re.sub(r'^(Weights only load failed\.|\(\d\)|WeightsUnpickler error:)\s*', '',
                      kept).strip()
        if kept:
            return _one_line(kept)
    return ''


def _first_sentence(text: str) -> str:
    return re.split(r'(?<=\.)\s+', text.strip(), maxsplit=1)[0].rstrip('.')


def _refusal_reason(error: BaseException) -> str:
    """The reason of a safe-loading refusal, without torch's text around it.

    mmgc's refusals are one line starting with ``mmgc: ``. torch wraps what its safe unpickler
    raised into a long text with advice (``raise ... from None``: the unpickler's own error stays
    the ``__context__``); that error's reason is kept, without advice sentences.
    """
    texts = [str(error)]
    if isinstance(error.__context__, pickle.UnpicklingError):
        texts.insert(0, str(error.__context__))
    for text in texts:
        for line in text.splitlines():
            start = line.find('mmgc: ')
            if start >= 0:
                return line[start:].strip()
    reason = _without_advice(texts[0])
    if not reason or _ADVICE.search(reason):
        return 'it holds objects that are not allowed'
    return reason.rstrip('.')


def checkpoint_problem(path: str) -> Optional[Tuple[str, str]]:
    """Why a local checkpoint would not load, or None if it loads.

    It is loaded as mmengine's ``load_from_local`` loads it (``torch.load`` with torch's default
    ``weights_only``: True on torch >= 2.6, with what ``import mmgc`` allow-lists), on the CPU
    with ``mmap=True`` where the file is a zip archive, so tensor data is mapped, not read.
    torch's warnings while loading are not shown.

    Returns:
        ``(kind, text)``: ``kind`` is ``'missing'``, ``'unreadable'`` (not a file, empty, not a
        torch checkpoint, truncated or damaged) or ``'refused'`` (safe loading refused what it
        holds); ``text`` completes the sentence "checkpoint PATH ..." (no path in it).
    """
    path = osp.expanduser(path)
    if not osp.exists(path):
        return MISSING, 'does not exist'
    if osp.isdir(path):
        return UNREADABLE, 'is a directory, not a checkpoint file'
    try:
        with open(path, 'rb') as f:
            head = f.read(4)
    except OSError as error:
        return UNREADABLE, f'cannot be read ({error.strerror or error})'
    if not head:
        return UNREADABLE, 'is empty (0 bytes)'
    zipped = head.startswith(_ZIP_MAGIC)
    # torch.save's legacy format is a pickle (any protocol); torch < 0.4's, a tar archive.
    if not zipped and not head.startswith(b'\x80') and not tarfile.is_tarfile(path):
        return UNREADABLE, ('is not a torch checkpoint (neither the zip archive of torch.save '
                            'nor its legacy format)')
    mmap = zipped and _LOAD_TAKES_MMAP

    def load(mmap: bool) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            torch.load(path, map_location='cpu', **(dict(mmap=True) if mmap else {}))

    try:
        try:
            load(mmap)
        except pickle.UnpicklingError:
            raise
        except Exception:
            if not mmap:
                raise
            load(mmap=False)  # where mapping fails (some file systems), read it as mmengine will
    except pickle.UnpicklingError as error:
        if str(error).startswith('Weights only load failed') or 'mmgc: ' in str(error):
            reason = _refusal_reason(error)
            if re.search(r'truncated|EOF|ran out of input', reason, re.I):
                return UNREADABLE, f'is truncated or damaged ({reason})'
            if reason.startswith('Unsupported operand'):  # bytes that are no pickle opcode
                return UNREADABLE, ('is damaged, or pickled otherwise than torch.save does '
                                    f'({reason})')
            return REFUSED, f"is refused by torch's safe loading: {reason}"
        detail = _first_sentence(_without_advice(error)) or type(error).__name__
        return UNREADABLE, f'is truncated or damaged ({detail})'
    except Exception as error:  # torch's zip reader, EOFError, IndexError, ...
        if 'TorchScript' in str(error):
            return UNREADABLE, 'is a TorchScript archive (torch.jit.save), not a checkpoint'
        if '.tar format' in str(error):
            return UNREADABLE, ("is in the .tar format of torch < 0.4, which torch's safe "
                                'loading cannot read')
        detail = _first_sentence(_without_advice(error)) or type(error).__name__
        return UNREADABLE, f'is truncated or damaged ({detail})'
    return None


REFUSED_HINT = ('safe loading allows tensors and what mmengine writes, nothing else: the file was '
                'not written by an mmengine run, or was changed since; do not load it')


def check_checkpoint(path: str, label: str, missing_hint: str, unreadable_hint: str) -> None:
    """Raises :class:`RunCheckError` ``"{label}: checkpoint PATH <problem>; <hint>"`` if the
    local checkpoint ``path`` would not load; URLs (``https://``, ``s3://``, ...) pass unchecked.

    Args:
        path: the checkpoint.
        label: where the name comes from (``'--resume'``, ``'load_from'``, ...); may be empty.
        missing_hint: what writes the file, for a missing one.
        unreadable_hint: what to do instead, for a file that does not load.
    """
    if _is_remote(path):
        return
    problem = checkpoint_problem(path)
    if problem is None:
        return
    kind, text = problem
    hint = REFUSED_HINT if kind == REFUSED else missing_hint if kind == MISSING else unreadable_hint
    prefix = f'{label}: ' if label else ''
    raise RunCheckError(f'{prefix}checkpoint {path} {text}; {hint}')


#: What writes a training run's checkpoints (for the hints).
CHECKPOINTS_WRITTEN_BY = ('tools/train.py CONFIG writes epoch_N.pth or iter_N.pth into its work '
                          'dir (work_dirs/<config name> unless --work-dir is given)')


def check_load_from(cfg: Mapping, label: str) -> None:
    """The checkpoint ``cfg.load_from`` names (``--resume CKPT``, ``tools/test.py CONFIG CKPT`` or
    a config's ``load_from``), if any, loads.

    Args:
        cfg: the run's config.
        label: where the name came from, for the message (``'--resume'``, ``''``, ...).
    """
    path = cfg.get('load_from')
    if not path:
        return
    check_checkpoint(
        str(path), label, f'{CHECKPOINTS_WRITTEN_BY}, and names the latest in last_checkpoint '
        'there', 'use another checkpoint of that run (epoch_N.pth / iter_N.pth in its work dir)')


def _pretrained(node: Any, key: str) -> Iterator[Tuple[str, str]]:
    """The local checkpoints of the ``init_cfg=dict(type='Pretrained', checkpoint=...)`` entries
    under ``node``, with their config keys."""
    if isinstance(node, Mapping):
        checkpoint = node.get('checkpoint')
        if node.get('type') == 'Pretrained' and isinstance(checkpoint, str) and checkpoint:
            yield checkpoint, f'{key}.checkpoint'
        for name, value in node.items():
            yield from _pretrained(value, f'{key}.{name}')
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            yield from _pretrained(value, f'{key}.{i}')


def check_pretrained(cfg: Mapping) -> None:
    """Every local checkpoint a model starts from (``init_cfg=dict(type='Pretrained', ...)``, as
    a backbone's ImageNet weights) loads; model-zoo names and URLs (``torchvision://``,
    ``https://``) pass unchecked."""
    for path, key in _pretrained(cfg.get('model'), 'model'):
        writer = ('python tools/misc/gc_demo.py writes it (its pretraining step)'
                  if 'demo/pretrain' in path.replace(osp.sep, '/') else 'put the file there')
        check_checkpoint(
            path, key, f'{writer}, or set {key} (--cfg-options {key}=PATH), or start from '
            f'random weights with {key.rsplit(".", 1)[0]}=None',
            'use another copy of the pretrained weights')


def check_last_checkpoint(cfg: Mapping) -> None:
    """For an automatic resume (``resume=True`` without ``load_from``: ``--resume`` alone), the
    checkpoint the work dir's ``last_checkpoint`` file names loads. Without that file there is
    nothing to check (mmengine then trains from scratch)."""
    if not cfg.get('resume') or cfg.get('load_from') is not None:
        return
    work_dir = str(cfg.get('work_dir') or '')
    if not work_dir or _is_remote(work_dir):
        return
    record = osp.join(work_dir, 'last_checkpoint')
    if not osp.isfile(record):
        return
    start_over = (f'pass --resume CHECKPOINT to resume from another, or delete {record} to '
                  'train from scratch')
    try:
        with open(record) as f:
            named = f.read().strip()
    except (OSError, UnicodeDecodeError) as error:
        raise RunCheckError(f'--resume: {record} cannot be read ({error}); {start_over}')
    if not named:
        raise RunCheckError(f'--resume: {record} is empty (it names the latest checkpoint of the '
                            f'run into {work_dir}); {start_over}')
    if _is_remote(named):
        return
    problem = checkpoint_problem(named)
    if problem is None:
        return
    kind, text = problem
    hint = (REFUSED_HINT if kind == REFUSED else
            f'the run into {work_dir} writes both at each checkpoint: {start_over}')
    raise RunCheckError(f'--resume: {record} names the checkpoint {named}, which {text}; {hint}')


# --- datasets -----------------------------------------------------------------------------------

#: How to get a dataset, by the first name found in its path (case-insensitive).
DATASET_SOURCES: Sequence[Tuple[str, str]] = (
    ('synthetic_coco', 'write it with: python tools/dataset_converters/synthetic_coco.py {root}'),
    ('coco', 'COCO 2017 goes under data/coco/ of the directory you run from '
     '(annotations/instances_{{train,val}}2017.json, train2017/, val2017/): see configs/README.md'),
    ('imagenet', 'ImageNet goes under data/imagenet/ of the directory you run from (train/, val/, '
     'meta/): see configs/README.md'),
    ('cifar', 'set download=True on the dataset, or put the CIFAR python files under {root}: see '
     'configs/README.md'),
) + tuple((name, 'see configs/README.md for the layout of the fine-grained datasets')
          for name in ('cub', 'stanford', 'fgvc', 'aircraft'))

#: Dataset types that fetch their data when it is missing, unless ``download=False``.
DOWNLOADING_DATASETS = ('CIFAR10', 'CIFAR100', 'MNIST', 'FashionMNIST')


def _source_hint(path: str, key: str) -> str:
    parts = path.rstrip('/').split('/')
    for name, hint in DATASET_SOURCES:
        for i, part in enumerate(parts):
            if name in part.lower():
                return hint.format(root='/'.join(parts[:i + 1]) or '/')
    return f'put the data there, or set {key} (in the config or with --cfg-options {key}=PATH)'


def _downloads(dataset: Mapping) -> bool:
    """Whether the dataset fetches its data itself when it is missing (mmpretrain's CIFAR and
    MNIST datasets, whose ``download`` defaults to True)."""
    kind = dataset.get('type')
    name = kind.rsplit('.', 1)[-1] if isinstance(kind, str) else None
    return bool(dataset.get('download', name in DOWNLOADING_DATASETS))


def _local_backend(cfg: Mapping) -> bool:
    backend_args = cfg.get('backend_args') or cfg.get('file_client_args')
    if not backend_args:
        return True
    return (isinstance(backend_args, Mapping) and backend_args.get('backend') in (None, 'local')
            and not backend_args.get('path_mapping'))


def _datasets(cfg: Any, key: str) -> Iterator[Tuple[Mapping, str]]:
    """The innermost dataset configs of a dataset config (through ``dataset=`` and ``datasets=``
    of wrappers such as ``RepeatDataset`` and ``ConcatDataset``), with their config keys."""
    if not isinstance(cfg, Mapping):
        return
    if isinstance(cfg.get('dataset'), Mapping):
        yield from _datasets(cfg['dataset'], f'{key}.dataset')
    elif isinstance(cfg.get('datasets'), (list, tuple)):
        for i, dataset in enumerate(cfg['datasets']):
            yield from _datasets(dataset, f'{key}.datasets.{i}')
    else:
        yield cfg, key


def _metrics(cfg: Any, key: str) -> Iterator[Tuple[Mapping, str]]:
    """The metric configs of an evaluator config (a dict, a list, or ``metrics=``)."""
    if isinstance(cfg, (list, tuple)):
        for i, metric in enumerate(cfg):
            yield from _metrics(metric, f'{key}.{i}')
    elif isinstance(cfg, Mapping):
        if 'metrics' in cfg:
            yield from _metrics(cfg['metrics'], f'{key}.metrics')
        else:
            yield cfg, key


def run_dataloaders(cfg: Mapping, mode: str) -> List[str]:
    """The dataloader keys a run uses: ``'train'`` gives ``train_dataloader`` and, unless
    validation is off (``val_cfg``, ``val_dataloader`` or ``val_evaluator`` None),
    ``val_dataloader``; ``'test'`` gives ``test_dataloader``."""
    if mode == 'test':
        return ['test_dataloader']
    keys = ['train_dataloader']
    if all(cfg.get(k) is not None for k in ('val_dataloader', 'val_cfg', 'val_evaluator')):
        keys.append('val_dataloader')
    return keys


def check_datasets(cfg: Mapping, dataloaders: Sequence[str]) -> None:
    """The data root and annotation file of every dataset of these dataloaders exist, and so do
    the annotation files of their evaluators (``val_dataloader`` -> ``val_evaluator``, ...).

    Paths are taken as mmengine's ``BaseDataset`` takes them: a relative ``ann_file`` is joined
    to ``data_root``, both relative to the working directory. Datasets without ``ann_file`` or
    ``data_root``, built objects, URLs, datasets read through a non-local backend and datasets
    that download what is missing (``download=True``, mmpretrain's CIFAR default) are skipped.
    """
    for loader_key in dataloaders:
        loader = cfg.get(loader_key)
        if not isinstance(loader, Mapping):
            continue
        for dataset, key in _datasets(loader.get('dataset'), f'{loader_key}.dataset'):
            if not _local_backend(dataset) or _downloads(dataset):
                continue
            data_root = dataset.get('data_root')
            data_root = data_root if isinstance(data_root, str) else ''
            if _is_remote(data_root):
                continue
            if data_root and not osp.isdir(data_root):
                raise RunCheckError(
                    f'{loader_key}: data root {_shown(data_root)} ({key}.data_root) does not '
                    f'exist; {_source_hint(data_root, key + ".data_root")}')
            ann_file = dataset.get('ann_file')
            if not isinstance(ann_file, str) or not ann_file or _is_remote(ann_file):
                continue
            if not osp.isabs(ann_file) and data_root:
                ann_file = osp.join(data_root, ann_file)
            if not osp.exists(ann_file):
                raise RunCheckError(
                    f'{loader_key}: annotation file {_shown(ann_file)} ({key}.ann_file) does not '
                    f'exist; {_source_hint(ann_file, key + ".ann_file")}')
        evaluator_key = loader_key.replace('_dataloader', '_evaluator')
        if evaluator_key == loader_key or evaluator_key == 'train_evaluator':
            continue
        for metric, key in _metrics(cfg.get(evaluator_key), evaluator_key):
            ann_file = metric.get('ann_file')
            if (not isinstance(ann_file, str) or not ann_file or _is_remote(ann_file)
                    or not _local_backend(metric)):
                continue
            if not osp.exists(ann_file):
                raise RunCheckError(
                    f'{evaluator_key}: annotation file {_shown(ann_file)} ({key}.ann_file) does '
                    f'not exist; {_source_hint(ann_file, key + ".ann_file")}')


# --- one training per work dir ------------------------------------------------------------------

#: The lock file in a work dir while a training runs into it (it stays; the lock goes).
WORK_DIR_LOCK = '.train.lock'

# Descriptors of held locks: closed in forked children (dataloader workers), so that a killed
# training never leaves its lock to workers that outlive it.
_HELD: Set[int] = set()


def _close_held_in_child() -> None:
    for fd in list(_HELD):
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD.clear()


if hasattr(os, 'register_at_fork'):
    os.register_at_fork(after_in_child=_close_held_in_child)


def global_rank(launcher: str) -> int:
    """This process's global rank before torch.distributed is initialized: 0 without a
    launcher, else from the launcher's environment (``RANK``, ``SLURM_PROCID``,
    ``OMPI_COMM_WORLD_RANK``); 0 where it is not set."""
    if launcher in (None, 'none'):
        return 0
    names = {'slurm': ('SLURM_PROCID', 'RANK'),
             'mpi': ('OMPI_COMM_WORLD_RANK', 'PMI_RANK', 'RANK')}.get(launcher, ('RANK', ))
    for name in names:
        value = os.environ.get(name)
        if value not in (None, ''):
            try:
                return int(value)
            except ValueError:
                return 0
    return 0


class WorkDirLock:
    """An exclusive lock on a work dir, held from :func:`lock_work_dir` until :meth:`release`
    (or the end of a ``with`` block, or of the process: the OS drops it, even on SIGKILL)."""

    def __init__(self, path: Optional[str] = None, fd: Optional[int] = None):
        self.path, self._fd = path, fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        _HELD.discard(fd)
        try:
            os.ftruncate(fd, 0)
        except OSError:
            pass
        os.close(fd)  # drops the lock

    def __enter__(self) -> 'WorkDirLock':
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def __del__(self) -> None:
        try:
            self.release()
        except Exception:  # at interpreter shutdown
            pass


def _holder(fd: int) -> str:
    """Who holds the lock, from what it wrote into the lock file."""
    for _ in range(20):  # it writes right after it locks
        data = os.pread(fd, 4096, 0)
        if data:
            break
        time.sleep(0.05)
    try:
        info = json.loads(data.decode())
        return f"PID {info['pid']} on host {info['host']}, since {info['started']}"
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return 'its PID and host are not recorded'


def _unguarded(work_dir: str, why: str) -> None:
    warnings.warn(f'work dir {osp.abspath(work_dir)} cannot be locked ({why}): a second '
                  'training into it at the same time would not be refused', stacklevel=3)


def lock_work_dir(work_dir: str, launcher: str = 'none') -> WorkDirLock:
    """Takes the work dir's training lock (creating the work dir), for global rank 0 only.

    The lock is ``fcntl.flock`` on ``<work_dir>/.train.lock``, which holds the PID, host and start
    time of its holder. The ranks of one distributed run do not block each other (only rank 0
    locks; :func:`global_rank`); on a file system without ``flock`` nothing is locked, with a
    warning.

    Raises:
        RunCheckError: another process holds the lock: a training into this work dir runs.

    Returns:
        The held lock (a no-op one for the other ranks); release it when the run ends.
    """
    if _is_remote(str(work_dir)) or global_rank(launcher) != 0:
        return WorkDirLock()
    if fcntl is None:
        _unguarded(work_dir, 'this system has no fcntl.flock')
        return WorkDirLock()
    os.makedirs(work_dir, exist_ok=True)
    path = osp.join(work_dir, WORK_DIR_LOCK)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, 'O_CLOEXEC', 0), 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(fd)
        os.close(fd)
        raise RunCheckError(
            f'work dir {osp.abspath(work_dir)} is in use by another training ({holder}): wait '
            'until it ends, or pass --work-dir to train into another directory') from None
    except OSError as error:  # no flock on this file system: run unguarded, and say so
        os.close(fd)
        _unguarded(work_dir, f'flock failed: {error}')
        return WorkDirLock()
    started = datetime.datetime.now().astimezone().isoformat(timespec='seconds')
    info = json.dumps(dict(pid=os.getpid(), host=socket.gethostname(), started=started))
    os.ftruncate(fd, 0)
    os.pwrite(fd, (info + '\n').encode(), 0)
    _HELD.add(fd)
    return WorkDirLock(path, fd)


# --- optional packages --------------------------------------------------------------------------


#: How to install mmdet for the tools (setup.py's ``detection`` extra).
MMDET_INSTALL = ('pip install -e ".[detection]" in the mmgc repository (mmcv first: see README.md, '
                 '"Install on a GPU cluster")')
#: How to install mmpretrain for the tools (setup.py's ``classification`` extra).
MMPRETRAIN_INSTALL = ('pip install -e ".[classification]" in the mmgc repository (mmcv first: see '
                      'README.md, "Install on a GPU cluster")')
#: The codebases whose configs the tools run, by default scope, and how to install each.
CODEBASE_INSTALL = {'mmdet': MMDET_INSTALL, 'mmpretrain': MMPRETRAIN_INSTALL}


def import_error_message(package: str, error: BaseException, install: str) -> str:
    """One line for a failed ``import package``: not installed (``install`` says how), or
    installed but failing (the error's first line)."""
    if isinstance(error, ModuleNotFoundError) and error.name == package:
        return f'{package} is not installed: {install}'
    lines = str(error).strip().splitlines()
    detail = f'{type(error).__name__}: {lines[0]}' if lines else type(error).__name__
    return f'{package} is installed but cannot be imported ({_one_line(detail)}); {install}'


def config_package_missing(error: BaseException) -> Optional[str]:
    """The one-line message for mmengine's error on a ``_base_ = 'package::...'`` whose package
    is not installed (``ModuleNotFoundError: mmpretrain is not installed, ...``); ``None`` for
    any other error."""
    match = re.match(r'(\w+) is not installed', str(error))
    if not isinstance(error, ModuleNotFoundError) or not match:
        return None
    package = match.group(1)
    install = CODEBASE_INSTALL.get(package, f'pip install {package}')
    return f'the config takes its _base_ from {package}, which is not installed: {install}'


def import_codebase(cfg: Mapping) -> Optional[str]:
    """Imports the codebase that the config's ``default_scope`` names (``'mmdet'`` for mmdet's
    configs, ``'mmpretrain'`` for mmpretrain's; the Runner would import it later, with a
    traceback) and returns the scope. ``None`` or ``'mmengine'``: nothing to import. Raises
    :class:`RunCheckError` with the install command where the import fails."""
    scope = cfg.get('default_scope')
    if not isinstance(scope, str) or scope in ('', 'mmengine'):
        return None
    try:
        importlib.import_module(scope)
    except (ImportError, AssertionError) as error:  # mmdet / mmpretrain assert mmcv's version
        raise RunCheckError(import_error_message(
            scope, error, CODEBASE_INSTALL.get(scope, f'pip install {scope}'))) from None
    return scope


def load_run_config(path: str, cfg_options: Optional[Mapping] = None) -> Tuple[Any, Optional[str]]:
    """What ``tools/train.py`` and ``tools/test.py`` start from: the config at ``path`` with the
    ``--cfg-options`` merged in, and its codebase imported (:func:`import_codebase`, whose
    scope is returned). Raises :class:`RunCheckError` where the config's ``_base_`` comes from a
    codebase that is not installed, or its codebase cannot be imported."""
    from mmengine.config import Config
    try:
        cfg = Config.fromfile(path)
    except ModuleNotFoundError as error:
        message = config_package_missing(error)
        if message is None:
            raise
        raise RunCheckError(message) from None
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg, import_codebase(cfg)
