"""Hostile torch checkpoints written byte by byte, and a crash-proof way to load them.

Each case is a torch zip checkpoint (``archive/data.pkl`` plus the two small records torch
needs) whose pickle is assembled here opcode by opcode, in protocol 2 as ``torch.save``
writes it, so it can hold things no real object would pickle to: a numpy dtype whose state
resets its flags, a field 2**30 bytes outside its item, an array whose raw bytes are shorter
than its shape, and so on. Writing a case needs only the standard library.

:func:`load_in_fresh_processes` loads checkpoints the way a user would (``torch.load`` and
mmengine's two loaders) in processes that never loaded anything before: one interpreter imports
torch, the allow-list under test and mmengine once, then forks a child per checkpoint and
loader. A child that segfaults only kills itself; its parent reports the signal.

    python -m tests.test_utils.crafted --allow mmgc DIR     # every case, as a table

``--allow FILE.py`` loads another allow-list instead of ``mmgc`` (any module with an
``allow_mmengine_checkpoints()``), e.g. an older ``mmgc/utils/checkpoint.py``.
"""
import argparse
import json
import os
import struct
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Union

PathLike = Union[str, Path]

# ---------------------------------------------------------------------------------------------
# A protocol-2 pickle assembler: only the opcodes torch's weights-only unpickler reads.
# Every helper returns the bytes that push one value onto the unpickler's stack.


def glob(module: str, name: str) -> bytes:
    return b'c' + module.encode() + b'\n' + name.encode() + b'\n'


def text(value: str) -> bytes:
    data = value.encode('utf-8')
    return b'X' + struct.pack('<I', len(data)) + data


def integer(value: int) -> bytes:
    if 0 <= value < 256:
        return b'K' + bytes([value])
    if 0 <= value < 65536:
        return b'M' + struct.pack('<H', value)
    if -2**31 <= value < 2**31:
        return b'J' + struct.pack('<i', value)
    length = (value.bit_length() + 8) // 8  # two's complement, room for the sign bit
    return b'\x8a' + bytes([length]) + value.to_bytes(length, 'little', signed=True)


NONE, TRUE, FALSE, EMPTY_TUPLE = b'N', b'\x88', b'\x89', b')'


def raw(data: bytes, codecs: bool = False) -> bytes:
    """Bytes as protocol 2 writes them: ``_codecs.encode(latin-1 text, 'latin1')``, and
    ``bytes()`` for ``b''`` (unless ``codecs``)."""
    if not data and not codecs:
        return glob('__builtin__', 'bytes') + EMPTY_TUPLE + b'R'
    return glob('_codecs', 'encode') + text(data.decode('latin1')) + text('latin1') + b'\x86R'


def tup(*items: bytes) -> bytes:
    return b'(' + b''.join(items) + b't'


def dictionary(*pairs: bytes) -> bytes:
    """``pairs`` alternates keys and values."""
    return b'}' + (b'(' + b''.join(pairs) + b'u' if pairs else b'')


def reduce(func: bytes, args: bytes) -> bytes:
    return func + args + b'R'


def build(obj: bytes, state: bytes) -> bytes:
    return obj + state + b'b'


def newobj(cls: bytes, args: bytes = EMPTY_TUPLE) -> bytes:
    return cls + args + b'\x81'


def put(index: int) -> bytes:
    return b'q' + bytes([index])


def get(index: int) -> bytes:
    return b'h' + bytes([index])


# ---------------------------------------------------------------------------------------------
# numpy and mmengine objects as their pickles spell them (numpy 1.x module names).

MULTIARRAY = 'numpy.core.multiarray'
HISTORY_BUFFER = ('mmengine.logging.history_buffer', 'HistoryBuffer')


def dtype_state(order: str = '<', subarray: bytes = NONE, names: bytes = NONE,
                fields: bytes = NONE, elsize: int = -1, alignment: int = -1,
                flags: int = 0, extra: Sequence[bytes] = ()) -> bytes:
    """numpy's dtype state, version 3: (3, byteorder, subarray, names, fields, elsize,
    alignment, flags); the defaults are float64's."""
    return tup(integer(3), text(order), subarray, names, fields, integer(elsize),
               integer(alignment), integer(flags), *extra)


def dtype(spec: str = 'f8', state: Optional[bytes] = None, args: Optional[bytes] = None) -> bytes:
    """``numpy.dtype(spec, False, True)`` then BUILD with ``state`` (float64's by default)."""
    args = tup(text(spec), FALSE, TRUE) if args is None else args
    return build(reduce(glob('numpy', 'dtype'), args), dtype_state() if state is None else state)


def array(dt: Optional[bytes] = None, shape: Sequence[int] = (2, ), data: Optional[bytes] = None,
          fortran: bytes = FALSE, version: int = 1, state: Optional[bytes] = None) -> bytes:
    """An ndarray as numpy pickles it: ``_reconstruct(ndarray, (0,), b'b')`` then BUILD with
    ``(version, shape, dtype, fortran, rawdata)``; float64 zeros by default."""
    dt = dtype() if dt is None else dt
    if data is None:
        count = 1
        for n in shape:
            count *= n
        data = bytes(8 * count)
    if state is None:
        state = tup(integer(version), tup(*map(integer, shape)), dt, fortran, raw(data))
    return build(_reconstruct_call(), state)


def _reconstruct_call(cls: bytes = glob('numpy', 'ndarray'), shape: bytes = tup(integer(0)),
                      code: bytes = raw(b'b')) -> bytes:
    return reduce(glob(MULTIARRAY, '_reconstruct'), tup(cls, shape, code))


def scalar(dt: Optional[bytes] = None, data: bytes = bytes(8)) -> bytes:
    """A numpy scalar: ``scalar(dtype, rawbytes)`` (float64 0.0 by default)."""
    return reduce(glob(MULTIARRAY, 'scalar'), tup(dtype() if dt is None else dt, raw(data)))


def statistic(name: str, owner: bytes = glob(*HISTORY_BUFFER)) -> bytes:
    """``getattr(owner, name)`` as protocol 2 pickles a method such as ``HistoryBuffer.min``."""
    return reduce(glob('__builtin__', 'getattr'), tup(owner, text(name)))


def history_buffer(state: Optional[bytes] = None, length: int = 2) -> bytes:
    """A HistoryBuffer as mmengine pickles it (NEWOBJ, then BUILD with its ``__dict__``)."""
    if state is None:
        state = dictionary(
            text('max_length'), integer(1000000),
            text('_log_history'), array(shape=(length, )),
            text('_count_history'), array(shape=(length, )),
            text('statistics_methods'), dictionary(
                *[x for name in ('min', 'max', 'current', 'mean')
                  for x in (text(name), statistic(name))]))
    return build(newobj(glob(*HISTORY_BUFFER)), state)


def checkpoint_pickle(meta: bytes) -> bytes:
    """``{'meta': meta, 'state_dict': {}}``: the shape of an mmengine checkpoint, so that
    mmengine's ``load_checkpoint`` gets as far as the pickle."""
    return b'\x80\x02' + dictionary(text('meta'), meta, text('state_dict'), dictionary()) + b'.'


def write_checkpoint(path: PathLike, data_pkl: bytes) -> Path:
    """A torch zip checkpoint holding ``data_pkl`` (no tensors), written with zipfile."""
    path = Path(path)
    with zipfile.ZipFile(path, 'w', zipfile.ZIP_STORED) as zf:
        zf.writestr('archive/data.pkl', data_pkl)
        zf.writestr('archive/byteorder', 'little')
        zf.writestr('archive/version', '3\n')
    return path


# ---------------------------------------------------------------------------------------------
# The cases. Each returns the bytes of the object stored under 'meta'.

def _hb_state(**changes: bytes) -> bytes:
    """A HistoryBuffer ``__dict__`` with some entries changed (a value of b'' drops one)."""
    entries = {
        'max_length': integer(1000000),
        '_log_history': array(shape=(2, )),
        '_count_history': array(shape=(2, )),
        'statistics_methods': dictionary(text('min'), statistic('min')),
    }
    entries.update(changes)
    return dictionary(*[x for k, v in entries.items() if v for x in (text(k), v)])


def _os_system(marker: Path) -> bytes:
    return reduce(glob('os', 'system'), tup(text(f'touch {marker}')))


def _posix_system(marker: Path) -> bytes:
    return reduce(glob('posix', 'system'), tup(text(f'touch {marker}')))


# name -> (what it is, how to build it from the marker path)
_CASES: Dict[str, Callable[[Path], bytes]] = {
    # The two memory-safety holes of an allow-list that lets numpy's own __setstate__ run.
    # An object array whose dtype's flags were reset: raw bytes read as object pointers.
    'object_array_flags_reset': lambda m: array(
        dt=dtype('O8', dtype_state('|', flags=0)), shape=(2, ),
        data=struct.pack('<2Q', 0x4141414141414141, 0x4242424242424242)),
    # A float64 dtype with a field 2**30 bytes past its 8-byte item.
    'field_outside_item': lambda m: array(
        dt=dtype('f8', dtype_state(names=tup(text('a')), fields=dictionary(
            text('a'), tup(dtype(), integer(2**30))))), shape=(2, )),
    # Dtypes that mmengine never writes.
    'object_dtype': lambda m: array(dt=dtype('O8', dtype_state('|', flags=63))),
    'void_dtype': lambda m: array(dt=dtype('V8', dtype_state('|', elsize=8, alignment=1))),
    'structured_dtype': lambda m: array(dt=dtype('V8', dtype_state(
        '|', names=tup(text('a')), fields=dictionary(text('a'), tup(dtype(), integer(0))),
        elsize=8, alignment=1, flags=16))),
    'subarray_dtype': lambda m: array(dt=dtype('V16', dtype_state(
        '|', subarray=tup(dtype(), tup(integer(2))), elsize=16, alignment=8))),
    'names_on_float_dtype': lambda m: array(dt=dtype('f8', dtype_state(
        names=tup(text('a')), fields=dictionary(text('a'), tup(dtype(), integer(0)))))),
    'subarray_on_float_dtype': lambda m: array(dt=dtype('f8', dtype_state(
        subarray=tup(dtype(), tup(integer(2)))))),
    'dtype_wrong_elsize': lambda m: array(dt=dtype('f8', dtype_state(elsize=4096))),
    'dtype_wrong_alignment': lambda m: array(dt=dtype('f8', dtype_state(alignment=1024))),
    'dtype_wrong_flags': lambda m: array(dt=dtype('f8', dtype_state(flags=63))),
    'dtype_wrong_byteorder': lambda m: array(dt=dtype('f8', dtype_state(order='|'))),
    'dtype_metadata': lambda m: array(dt=dtype('f8', tup(
        integer(4), text('<'), NONE, NONE, NONE, integer(-1), integer(-1), integer(0),
        dictionary(text('k'), text('v'))))),
    'dtype_aligned_args': lambda m: array(dt=dtype('f8', args=tup(text('f8'), TRUE, TRUE))),
    'dtype_unknown_spec': lambda m: array(dt=dtype('f3')),
    'dtype_state_twice': lambda m: array(dt=build(dtype(), dtype_state())),
    'dtype_without_state': lambda m: array(dt=reduce(glob('numpy', 'dtype'),
                                                     tup(text('f8'), FALSE, TRUE))),
    # ndarray states.
    'array_data_too_short': lambda m: array(shape=(4, ), data=bytes(8)),
    'array_data_too_long': lambda m: array(shape=(1, ), data=bytes(64)),
    'array_negative_shape': lambda m: array(state=tup(
        integer(1), tup(integer(-1)), dtype(), FALSE, raw(b'', codecs=True))),
    'array_overflowing_shape': lambda m: array(state=tup(
        integer(1), tup(integer(0), integer(2**40), integer(2**40)), dtype(), FALSE,
        raw(b'', codecs=True))),
    'array_huge_shape': lambda m: array(shape=(2**62, 2**62), data=bytes(8)),
    'array_state_not_tuple': lambda m: build(_reconstruct_call(), b']' + b'(' + integer(1) +
                                             tup(integer(1)) + dtype() + FALSE + raw(bytes(8)) +
                                             b'e'),
    'array_state_version': lambda m: array(version=2),
    'array_fortran_not_bool': lambda m: array(fortran=integer(1)),
    'array_data_not_bytes': lambda m: array(state=tup(
        integer(1), tup(integer(1)), dtype(), FALSE,
        reduce(glob('builtins', 'bytearray'), tup(raw(bytes(8)))))),
    'array_state_twice': lambda m: build(array(), tup(integer(1), tup(integer(1)), dtype(),
                                                      FALSE, raw(bytes(8)))),
    'bool_array_bad_byte': lambda m: array(dt=dtype('b1', dtype_state('|')), shape=(2, ),
                                           data=b'\x01\x02'),
    # _reconstruct and the ndarray class.
    'reconstruct_other_class': lambda m: _reconstruct_call(cls=glob('collections',
                                                                    'OrderedDict')),
    'reconstruct_other_shape': lambda m: _reconstruct_call(shape=tup(integer(100))),
    'reconstruct_other_typecode': lambda m: _reconstruct_call(code=raw(b'O')),
    'array_as_callable': lambda m: reduce(array(), EMPTY_TUPLE),
    'array_as_class': lambda m: newobj(array()),
    'scalar_as_callable': lambda m: reduce(scalar(), EMPTY_TUPLE),
    'ndarray_called': lambda m: reduce(glob('numpy', 'ndarray'),
                                       tup(tup(integer(2)), text('f8'))),
    'ndarray_newobj': lambda m: newobj(glob('numpy', 'ndarray'),
                                       tup(tup(integer(2**40)), text('f8'))),
    # Scalars.
    'scalar_too_few_bytes': lambda m: scalar(data=bytes(4)),
    'scalar_too_many_bytes': lambda m: scalar(data=bytes(16)),
    'scalar_object_dtype': lambda m: reduce(glob(MULTIARRAY, 'scalar'), tup(
        dtype('O8', dtype_state('|', flags=63)), text('os'))),
    # HistoryBuffer.
    'history_buffer_extra_attribute': lambda m: history_buffer(_hb_state(
        __class__=text('x'))),
    'history_buffer_missing_attribute': lambda m: history_buffer(_hb_state(
        _count_history=b'')),
    'history_buffer_log_not_array': lambda m: history_buffer(_hb_state(
        _log_history=tup(text('a'), text('b')))),
    'history_buffer_max_length_text': lambda m: history_buffer(_hb_state(
        max_length=text('10'))),
    'history_buffer_2d_log': lambda m: history_buffer(_hb_state(
        _log_history=array(shape=(1, 2)), _count_history=array(shape=(1, 2)))),
    'history_buffer_lengths_differ': lambda m: history_buffer(_hb_state(
        _count_history=array(shape=(3, )))),
    'history_buffer_bad_statistic': lambda m: history_buffer(_hb_state(
        statistics_methods=dictionary(text('min'), statistic('max')))),
    'history_buffer_state_not_dict': lambda m: history_buffer(tup(integer(1))),
    'history_buffer_called': lambda m: reduce(glob(*HISTORY_BUFFER), tup(
        b']', b']', integer(5))),
    'history_buffer_newobj_args': lambda m: newobj(glob(*HISTORY_BUFFER), tup(integer(1))),
    'history_buffer_state_twice': lambda m: build(history_buffer(), _hb_state(
        max_length=integer(7))),
    # torch's own _rebuild_from_type_v2(func, new_type, args, state) calls func(*args) and
    # then new_type's __setstate__: the same checks must run on that path.
    'rebuild_from_type_array': lambda m: reduce(
        glob('torch._tensor', '_rebuild_from_type_v2'), tup(
            glob(MULTIARRAY, '_reconstruct'), glob('numpy', 'ndarray'),
            tup(glob('numpy', 'ndarray'), tup(integer(0)), raw(b'b')),
            tup(integer(1), tup(integer(4)), dtype(), FALSE, raw(bytes(8))))),
    'rebuild_from_type_dtype': lambda m: reduce(
        glob('torch._tensor', '_rebuild_from_type_v2'), tup(
            glob('numpy', 'dtype'), glob('numpy', 'dtype'), tup(text('O8'), FALSE, TRUE),
            dtype_state('|', flags=0))),
    # getattr.
    'getattr_history_buffer_init': lambda m: statistic('__init__'),
    'getattr_register_statistics': lambda m: statistic('register_statistics'),
    'getattr_ndarray_tofile': lambda m: statistic('tofile', glob('numpy', 'ndarray')),
    'getattr_ordered_dict': lambda m: statistic('fromkeys', glob('collections', 'OrderedDict')),
    'bytes_with_arguments': lambda m: reduce(glob('__builtin__', 'bytes'),
                                             tup(integer(2**40))),
    # Code execution.
    'os_system': _os_system,
    'posix_system': _posix_system,
}

# Checkpoints that hold only what mmengine writes, built the same way: they must load.
_VALID: Dict[str, Callable[[Path], bytes]] = {
    'valid_history_buffer': lambda m: history_buffer(),
    'valid_empty_history_buffer': lambda m: history_buffer(length=0),
    'valid_float_scalar': lambda m: scalar(data=struct.pack('<d', 1.5)),
    'valid_int_scalar': lambda m: scalar(dt=dtype('i8'), data=struct.pack('<q', -3)),
    'valid_big_endian_array': lambda m: array(dt=dtype('f8', dtype_state('>')), shape=(2, ),
                                              data=struct.pack('>2d', 1.0, 2.0)),
    'valid_shared_dtype': lambda m: tup(array(dt=dtype() + put(9)), array(dt=get(9))),
}

CASES: List[str] = list(_CASES)
VALID_CASES: List[str] = list(_VALID)


def marker_for(path: PathLike) -> Path:
    """The file the code-execution cases would create (it must never appear)."""
    return Path(f'{path}.pwned')


def write_case(name: str, path: PathLike) -> Path:
    """Writes case ``name`` (from CASES or VALID_CASES) as a checkpoint at ``path``."""
    path = Path(path)
    make = _CASES.get(name) or _VALID[name]
    return write_checkpoint(path, checkpoint_pickle(make(marker_for(path))))


# ---------------------------------------------------------------------------------------------
# Loading in fresh processes.

LOADERS = ('torch.load', 'mmengine._load_checkpoint', 'mmengine.load_checkpoint')


def _touch(obj: object, depth: int = 0) -> None:
    """Reads everything a loaded object holds, as a user of it would (crashes show here)."""
    import numpy as np
    if depth > 20:
        return
    if isinstance(obj, np.ndarray):
        repr(obj)
        obj.tolist()
        for name in obj.dtype.names or ():
            obj[name].tolist()
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            _touch(item, depth + 1)
    elif isinstance(obj, dict):
        for item in obj.values():
            _touch(item, depth + 1)
    elif hasattr(obj, '__dict__') and not isinstance(obj, type):
        _touch(vars(obj), depth + 1)
    else:
        repr(obj)


def _load_once(path: str, loader: str) -> dict:
    import torch
    if loader == 'torch.load':
        loaded = torch.load(path, map_location='cpu')
    elif loader == 'mmengine._load_checkpoint':
        from mmengine.runner.checkpoint import _load_checkpoint
        loaded = _load_checkpoint(path, map_location='cpu')
    elif loader == 'mmengine.load_checkpoint':
        from mmengine.runner.checkpoint import load_checkpoint
        loaded = load_checkpoint(torch.nn.Linear(1, 1), path, map_location='cpu',
                                 logger='silent')
    else:
        raise ValueError(loader)
    _touch(loaded)
    return {'meta': _plain(loaded['meta'])}


def _type_name(obj: object) -> str:
    return f'{type(obj).__module__}.{type(obj).__qualname__}'


def _plain(obj: object, depth: int = 0) -> object:
    """A JSON rendition of a loaded value that keeps the types of what it holds."""
    import numpy as np
    if depth > 20:
        return '...'
    if isinstance(obj, np.ndarray):
        return dict(type=_type_name(obj), dtype=obj.dtype.str, values=obj.tolist())
    if isinstance(obj, np.generic):
        return dict(type=_type_name(obj), dtype=obj.dtype.str, value=obj.item())
    if isinstance(obj, dict):
        return {str(k): _plain(v, depth + 1) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v, depth + 1) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if callable(obj):
        return f'{getattr(obj, "__module__", "")}.{getattr(obj, "__qualname__", repr(obj))}'
    if hasattr(obj, '__dict__'):
        return dict(type=_type_name(obj), attributes=_plain(vars(obj), depth + 1))
    return dict(type=_type_name(obj), repr=repr(obj))


def _child(path: str, loader: str, write_fd: int) -> None:
    """Runs in a forked child: one load, its outcome as JSON on ``write_fd``."""
    try:
        outcome = dict(result='accepted', **_load_once(path, loader))
    except BaseException as e:  # noqa: B902  (the outcome is data here)
        outcome = dict(result='refused' if type(e).__name__ == 'UnpicklingError' else 'error',
                       error=_type_name(e), message=str(e))
    try:
        report = json.dumps(outcome)
    except Exception as e:  # a loaded value JSON cannot show
        report = json.dumps(dict(result=outcome['result'], meta=f'<not JSON: {e}>'))
    with os.fdopen(write_fd, 'w') as f:
        f.write(report)


def _serve(allow: str, jobs: List[List[str]], timeout: float) -> None:
    """Imports what loading needs once, then forks a child per (path, loader) job and prints
    one JSON line per job."""
    import signal
    import time
    if allow == 'mmgc':
        import mmgc  # noqa: F401
    elif allow != 'none':
        import importlib.util
        spec = importlib.util.spec_from_file_location('allow_list_under_test', allow)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        module.allow_mmengine_checkpoints()
    import mmengine.runner.checkpoint  # noqa: F401
    import numpy  # noqa: F401
    import torch  # noqa: F401
    for path, loader in jobs:
        read_fd, write_fd = os.pipe()
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:  # the child: never returns into the loop
            os.close(read_fd)
            try:
                _child(path, loader, write_fd)
            finally:
                os._exit(0)
        os.close(write_fd)
        deadline = time.monotonic() + timeout
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                status = None
                break
            time.sleep(0.005)
        with os.fdopen(read_fd) as f:
            report = f.read()
        outcome = dict(path=path, loader=loader)
        if status is None:
            outcome.update(result='timeout')
        elif os.WIFSIGNALED(status):
            outcome.update(result='crash', signal=os.WTERMSIG(status))
        else:
            try:
                outcome.update(json.loads(report))
            except ValueError:
                outcome.update(result='no report', report=report[:1000])
            outcome['exit_code'] = os.WEXITSTATUS(status)
        print('OUTCOME ' + json.dumps(outcome), flush=True)


def load_in_fresh_processes(paths: Sequence[PathLike], loaders: Sequence[str] = LOADERS,
                            allow: str = 'mmgc', timeout: float = 60.0,
                            python: str = sys.executable) -> Dict[tuple, dict]:
    """Loads every checkpoint with every loader, each in its own process.

    Returns ``{(str(path), loader): outcome}``; ``outcome['result']`` is 'accepted', 'refused'
    (a ``pickle.UnpicklingError``, with ``message``), 'error' (another exception), 'crash'
    (killed by ``signal``) or 'timeout'.
    """
    jobs = [[str(p), loader] for p in paths for loader in loaders]
    code = ('import json, sys\n'
            'from tests.test_utils.crafted import _serve\n'
            '_serve(sys.argv[1], json.loads(sys.argv[2]), float(sys.argv[3]))\n')
    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.run([python, '-c', code, allow, json.dumps(jobs), str(timeout)],
                          capture_output=True, text=True, cwd=repo)
    outcomes = {}
    for line in proc.stdout.splitlines():
        if line.startswith('OUTCOME '):
            outcome = json.loads(line[len('OUTCOME '):])
            outcomes[(outcome['path'], outcome['loader'])] = outcome
    if len(outcomes) != len(jobs):
        raise RuntimeError(f'the loading process ended early (rc {proc.returncode}):\n'
                           f'{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}')
    return outcomes


def mmgc_reason(message: str) -> Optional[str]:
    """The line of an error message that starts with 'mmgc: ', if any."""
    for line in message.splitlines():
        start = line.find('mmgc: ')
        if start >= 0:
            return line[start:]
    return None


def reason(outcome: dict) -> str:
    """One line that says why a load failed (mmgc's line, else torch's), or the signal."""
    if outcome['result'] in ('crash', 'timeout'):
        return f"signal {outcome.get('signal')}" if outcome['result'] == 'crash' else 'timeout'
    message = outcome.get('message', '')
    found = mmgc_reason(message)
    if found:
        return found
    paragraphs = [p.strip() for p in message.split('\n\n') if p.strip()]
    paragraphs = [p for p in paragraphs if not p.startswith(('Check the documentation',
                                                              'Weights only load failed'))]
    return ' '.join((paragraphs[-1] if paragraphs else message).split())


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('directory', help='where to write the cases')
    parser.add_argument('--allow', default='mmgc',
                        help="'mmgc', 'none' or a Python file with allow_mmengine_checkpoints()")
    parser.add_argument('--loaders', default=','.join(LOADERS))
    parser.add_argument('--cases', default=','.join(CASES + VALID_CASES))
    args = parser.parse_args(argv)
    directory = Path(args.directory)
    directory.mkdir(parents=True, exist_ok=True)
    names = args.cases.split(',')
    paths = [write_case(name, directory / f'{name}.pth') for name in names]
    outcomes = load_in_fresh_processes(paths, args.loaders.split(','), allow=args.allow)
    for name, path in zip(names, paths):
        for loader in args.loaders.split(','):
            outcome = outcomes[(str(path), loader)]
            detail = reason(outcome) if outcome['result'] != 'accepted' else ''
            pwned = ' MARKER CREATED' if marker_for(path).exists() else ''
            print(f'{name:36s} {loader:26s} {outcome["result"]:9s} {detail}{pwned}')


if __name__ == '__main__':
    main()
