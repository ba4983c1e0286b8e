"""Safe loading of mmengine checkpoints under torch >= 2.6's ``weights_only=True`` default.

mmengine 0.10 pickles a few non-tensor objects into every checkpoint: the message hub's
``HistoryBuffer`` logs (each holding two numpy arrays and ``getattr(HistoryBuffer, 'min')``
style references to its statistics methods) and numpy scalars, whose pickles carry numpy dtypes.
torch's safe unpickler refuses them, so ``--resume`` and ``tools/test.py CONFIG CKPT`` fail.

Allow-listing numpy's own ``dtype``, ``ndarray`` and their reconstructors would be unsafe: the
unpickler then runs numpy's ``__setstate__`` on whatever state the file holds, and a crafted
state makes an object array out of raw bytes or places a field far outside its item; reading
either crashes the process. :func:`allow_mmengine_checkpoints` therefore maps those pickle names
to stand-ins of ours that check every value before numpy sees it:

* ``numpy.dtype`` -> :class:`_NumpyDtype`: only ``numpy.dtype(spec, False, True)`` for a bool,
  integer, float or complex ``spec``, and only the exact state numpy writes for that dtype in
  either byte order (no fields, subarray, metadata, object or void kinds, no other flags, item
  size or alignment). It stands for a canonical dtype that numpy itself built.
* ``numpy.core.multiarray._reconstruct`` (and ``numpy._core`` for numpy 2) -> only the call
  ``_reconstruct(ndarray, (0,), b'b')``; it makes an empty :class:`_NumpyArray` whose single
  BUILD takes ``(1, shape, dtype, fortran, rawbytes)`` with a shape of non-negative ints that
  does not overflow, a bool ``fortran`` and exactly ``prod(shape) * itemsize`` bytes.
* ``numpy.core.multiarray.scalar`` -> only ``scalar(dtype, bytes)`` with ``itemsize`` bytes.
* ``numpy.ndarray`` -> :class:`_NumpyArray` itself, which cannot be called or NEWOBJ-created.
* ``mmengine...HistoryBuffer`` -> a subclass that is made by NEWOBJ only and whose BUILD takes
  mmengine's attribute dict (``max_length``, two 1-d arrays of one length, the default
  statistics); it then becomes a plain ``HistoryBuffer`` holding plain ``np.ndarray``.
* ``builtins.getattr`` -> only ``getattr(HistoryBuffer, 'min' | 'max' | 'current' | 'mean')``.
* ``builtins.bytes`` -> only ``bytes()``, which is how protocol 2 writes ``b''`` (the data of an
  empty array, as in a HistoryBuffer without values).

numpy's DType classes and the real ``np.dtype``/``np.ndarray`` are never allow-listed, so the
unpickler cannot run numpy's ``__setstate__`` on anything unchecked. Every refusal raises
``pickle.UnpicklingError('mmgc: refused ...')`` (torch adds its own text around it). Arrays and
dtypes that a checkpoint holds outside a HistoryBuffer load as :class:`_NumpyArray` (an ndarray)
and :class:`_NumpyDtype`; both pickle again as plain numpy objects.
"""
import pickle
from typing import Any, Dict, List, Tuple

import numpy as np
import torch
from mmengine.logging import HistoryBuffer

try:  # numpy >= 2
    from numpy._core.multiarray import scalar as _numpy_scalar
except ImportError:
    from numpy.core.multiarray import scalar as _numpy_scalar

__all__ = ['allow_mmengine_checkpoints']

_DEFAULT_STATISTICS = ('min', 'max', 'current', 'mean')
_KINDS = 'biufc'  # bool, signed and unsigned integers, floats, complex numbers
_MAX_NDIM = 32  # numpy 1.x's limit (numpy 2 allows 64; mmengine writes 1-d arrays)
_MAX_NBYTES = np.iinfo(np.intp).max


def _refused(what: str, why: str) -> pickle.UnpicklingError:
    return pickle.UnpicklingError(f'mmgc: refused {what}: {why}')


def _short(obj: Any, limit: int = 100) -> str:
    """A one-line, bounded description of an untrusted value."""
    text = _describe(obj, 0)
    text = ' '.join(text.split())
    return text if len(text) <= limit else text[:limit - 3] + '...'


def _describe(obj: Any, depth: int) -> str:
    if type(obj) is tuple and depth < 3:
        inner = ', '.join(_describe(x, depth + 1) for x in obj[:8])
        return f"({inner}{', ...' if len(obj) > 8 else ',' if len(obj) == 1 else ''})"
    if isinstance(obj, (bytes, bytearray)) and len(obj) > 16:
        return f'<{type(obj).__name__} of {len(obj)} bytes>'
    try:
        return _NAMES.get(obj) or repr(obj)
    except Exception:  # unhashable, or a repr that fails
        try:
            return repr(obj)
        except Exception:
            return f'<{type(obj).__name__}>'


def _same(a: Any, b: Any) -> bool:
    """Equal and of the same types throughout (``True == 1`` and ``3.0 == 3`` do not count).
    ``b`` is trusted: a tuple of None, bool, int and str."""
    if type(a) is not type(b):
        return False
    if type(a) is tuple:
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _canonical_dtypes() -> Dict[str, List[Tuple[tuple, np.dtype]]]:
    """For each spec numpy pickles a b/i/u/f/c dtype with ('f8', 'u1', ...), the states it
    writes for it (both byte orders) and the dtype numpy's own unpickling makes of each."""
    table: Dict[str, List[Tuple[tuple, np.dtype]]] = {}
    for scalar_type in set(np.sctypeDict.values()):
        base = np.dtype(scalar_type)
        if base.kind not in _KINDS:
            continue
        for order in '<>':
            dt = base.newbyteorder(order)
            _, args, state = dt.__reduce__()
            if len(args) != 3 or args[1:] != (False, True):
                continue  # a layout this module does not know: such dtypes are refused
            known = table.setdefault(args[0], [])
            if not any(_same(state, s) for s, _ in known):
                known.append((state, pickle.loads(pickle.dumps(dt))))  # our own, trusted bytes
    return table


_CANONICAL = _canonical_dtypes()


class _NumpyDtype:
    """What ``numpy.dtype`` means in a checkpoint: a checked spec plus its single BUILD."""

    __slots__ = ('spec', '_dtype')

    def __new__(cls, *args: Any) -> '_NumpyDtype':
        # REDUCE (cls(*args)) and NEWOBJ (cls.__new__(cls, *args)) both come here.
        if not (len(args) == 3 and type(args[0]) is str and args[1] is False
                and args[2] is True):
            raise _refused(f'numpy.dtype{_short(args)}',
                           "only numpy.dtype(spec, False, True) as numpy pickles it")
        if args[0] not in _CANONICAL:
            raise _refused(f'numpy dtype {args[0]!r}',
                           'only bool, integer, float and complex dtypes load')
        self = object.__new__(cls)
        self.spec = args[0]
        self._dtype = None
        return self

    def __init__(self, *args: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        if self._dtype is not None:
            raise _refused(f'a second state for numpy dtype {self.spec!r}',
                           'numpy sets it once')
        for known, dt in _CANONICAL[self.spec]:
            if _same(state, known):
                self._dtype = dt
                return
        raise _refused(f'numpy dtype {self.spec!r} with state {_short(state)}',
                       'not the state numpy writes for that dtype')

    @property
    def dtype(self) -> np.dtype:
        """The numpy dtype (``np.dtype(this)`` gives it too)."""
        if self._dtype is None:
            raise _refused(f'numpy dtype {self.spec!r} without its state', 'numpy writes one')
        return self._dtype

    def __reduce__(self) -> Any:
        return self.dtype.__reduce__()

    def __repr__(self) -> str:
        return repr(self._dtype) if self._dtype is not None else f'numpy.dtype({self.spec!r})'


class _IdentityEqualClass(type):
    """A metaclass whose classes compare by identity only: torch's allow-list check compares
    each allow-listed class with the object at hand, and without this ``_NumpyArray == x``
    would let a numpy scalar ``x`` answer, which raises TypeError for an ndarray class."""

    def __eq__(cls, other: Any) -> bool:
        return cls is other

    def __ne__(cls, other: Any) -> bool:
        return cls is not other

    __hash__ = type.__hash__


class _NumpyArray(np.ndarray, metaclass=_IdentityEqualClass):
    """What ``numpy.ndarray`` means in a checkpoint; only :func:`_reconstruct` makes one, and
    only its first BUILD, with a checked state, fills it."""

    def __new__(cls, *args: Any, **kwargs: Any) -> '_NumpyArray':
        raise _refused('a call of numpy.ndarray', 'numpy pickles arrays with _reconstruct')

    def __setstate__(self, state: Any) -> None:
        if self.__dict__.get('_mmgc_state') != 'empty':
            raise _refused('a second state for a numpy array', 'numpy sets it once')
        if type(state) is not tuple or len(state) != 5:
            raise _refused(f'numpy array state {_short(state)}',
                           'not (1, shape, dtype, is_fortran, rawdata)')
        version, shape, spec, fortran, data = state
        if not _same(version, 1):
            raise _refused(f'numpy array state version {_short(version)}', 'numpy writes 1')
        if type(spec) is not _NumpyDtype:
            raise _refused(f'numpy array dtype {_short(spec)}', 'not a numpy.dtype')
        dt = spec.dtype
        size = _checked_size(shape, dt)
        if type(fortran) is not bool:
            raise _refused(f'numpy array is_fortran {_short(fortran)}', 'not a bool')
        _check_data(data, size * dt.itemsize, dt, f'numpy {dt} array of shape {_short(shape)}')
        try:
            np.ndarray.__setstate__(self, (1, shape, dt, fortran, data))
        except Exception as e:
            raise _refused('a numpy array state', f'{type(e).__name__}: {e}') from None
        self._mmgc_state = 'built'

    def __reduce__(self) -> Any:
        return self.view(np.ndarray).__reduce__()

    def __reduce_ex__(self, protocol: Any) -> Any:
        return self.view(np.ndarray).__reduce_ex__(protocol)

    # torch's unpickler checks ``obj in allowed.values()`` before it calls or NEWOBJs ``obj``;
    # for an array numpy's elementwise == would make that check raise ValueError instead of
    # torch's UnpicklingError. Against what such lists hold (classes, functions, torch dtypes
    # and qschemes, storage types) == and != fall back to identity.
    def __eq__(self, other: Any) -> Any:
        if _is_allow_list_entry(other):
            return NotImplemented
        return super().__eq__(other)

    def __ne__(self, other: Any) -> Any:
        if _is_allow_list_entry(other):
            return NotImplemented
        return super().__ne__(other)


def _is_allow_list_entry(obj: Any) -> bool:
    return isinstance(obj, (type, torch.dtype, torch.qscheme, torch.serialization.StorageType)) \
        or (callable(obj) and not isinstance(obj, np.ndarray))


def _checked_size(shape: Any, dt: np.dtype) -> int:
    if type(shape) is not tuple or len(shape) > _MAX_NDIM or \
            not all(type(n) is int and n >= 0 for n in shape):
        raise _refused(f'numpy array shape {_short(shape)}',
                       f'not a tuple of at most {_MAX_NDIM} non-negative ints')
    size, span = 1, dt.itemsize  # span: the bytes numpy would address without the zero dims
    for n in shape:
        size *= n
        span *= max(n, 1)
    if span > _MAX_NBYTES:
        raise _refused(f'numpy array shape {_short(shape)}', 'too large for this machine')
    return size


def _check_data(data: Any, nbytes: int, dt: np.dtype, what: str) -> None:
    if type(data) is not bytes:
        raise _refused(f'data {_short(data)} for a {what}', 'not bytes')
    if len(data) != nbytes:
        raise _refused(f'{len(data)} bytes of data for a {what}', f'it needs {nbytes}')
    if dt.kind == 'b' and data.translate(None, b'\x00\x01'):
        raise _refused(f'data for a {what}', 'a bool byte other than 0 or 1')


def _reconstruct(*args: Any) -> _NumpyArray:
    """``numpy.core.multiarray._reconstruct`` in a checkpoint: numpy's first step of unpickling
    an ndarray, always with the same arguments."""
    if not (len(args) == 3 and args[0] is _NumpyArray and _same(args[1], (0, ))
            and _same(args[2], b'b')):
        raise _refused(f'numpy _reconstruct{_short(args)}', "only (numpy.ndarray, (0,), b'b')")
    # An empty array on a buffer it does not own: nothing is freed when its BUILD replaces it.
    array = np.ndarray.__new__(_NumpyArray, (0, ), np.int8, buffer=b'')
    array._mmgc_state = 'empty'
    return array


def _scalar(*args: Any) -> Any:
    """``numpy.core.multiarray.scalar(dtype, rawbytes)`` in a checkpoint: a numpy scalar."""
    if len(args) != 2 or type(args[0]) is not _NumpyDtype:
        raise _refused(f'numpy scalar{_short(args)}', 'not (numpy.dtype, bytes)')
    dt = args[0].dtype
    _check_data(args[1], dt.itemsize, dt, f'numpy {dt} scalar')
    return _numpy_scalar(dt, args[1])


class _HistoryBuffer(HistoryBuffer):
    """What mmengine's ``HistoryBuffer`` means in a checkpoint: NEWOBJ, then one checked
    BUILD, after which the object is a plain ``HistoryBuffer``."""

    def __new__(cls, *args: Any, **kwargs: Any) -> '_HistoryBuffer':
        if args or kwargs:
            raise _refused(f'HistoryBuffer.__new__ with arguments {_short(args)}',
                           'mmengine pickles it with none')
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise _refused('a call of HistoryBuffer', 'mmengine pickles it by its state')

    def __setstate__(self, state: Any) -> None:
        required = {'max_length', '_log_history', '_count_history'}
        if type(state) is not dict:
            raise _refused(f'HistoryBuffer state {_short(state)}', 'not a dict')
        keys = set(state)
        if not required <= keys <= required | {'statistics_methods'}:
            raise _refused(f"HistoryBuffer attributes {', '.join(sorted(map(_short, keys)))}",
                           'only max_length, _log_history, _count_history, '
                           'statistics_methods')
        max_length = state['max_length']
        if type(max_length) is not int or max_length < 0:
            raise _refused(f'HistoryBuffer max_length {_short(max_length)}',
                           'not a non-negative int')
        arrays = []
        for key in ('_log_history', '_count_history'):
            array = state[key]
            if type(array) is not _NumpyArray or array.__dict__.get('_mmgc_state') != 'built' \
                    or array.ndim != 1:
                raise _refused(f'HistoryBuffer {key} {_short(array)}', 'not a 1-d numpy array')
            arrays.append(np.array(array, subok=False))  # a plain np.ndarray, a copy
        if len(arrays[0]) != len(arrays[1]):
            raise _refused('HistoryBuffer histories of different lengths',
                           f'{len(arrays[0])} and {len(arrays[1])}')
        methods = state.get('statistics_methods', {})
        if type(methods) is not dict or not all(
                type(k) is str and k in _DEFAULT_STATISTICS and v is getattr(HistoryBuffer, k)
                for k, v in methods.items()):
            raise _refused(f'HistoryBuffer statistics_methods {_short(methods)}',
                           'only min, max, current and mean, as HistoryBuffer defines them')
        HistoryBuffer.__setstate__(self, dict(
            max_length=max_length, _log_history=arrays[0], _count_history=arrays[1],
            statistics_methods=dict(methods)))
        self.__class__ = HistoryBuffer  # a second BUILD is refused by torch from now on


def _empty_bytes(*args: Any) -> bytes:
    """``bytes()``: how protocol 2 pickles ``b''``, e.g. the data of an empty array (a
    HistoryBuffer that has no values yet); other bytes come as ``_codecs.encode``."""
    if args:
        raise _refused(f'bytes{_short(args)}', "only bytes(), for b''")
    return b''


def _history_buffer_statistic(*args: Any) -> Any:
    """``getattr`` as mmengine checkpoints use it: a default statistics method of
    ``HistoryBuffer`` (how protocol 2 pickles ``HistoryBuffer.min``)."""
    if len(args) == 2 and (args[0] is _HistoryBuffer or args[0] is HistoryBuffer) and \
            type(args[1]) is str and args[1] in _DEFAULT_STATISTICS:
        return getattr(HistoryBuffer, args[1])
    what = ', '.join(_short(a) for a in args)
    raise _refused(f'getattr({what})', 'only the statistics min, max, current and mean of '
                   'HistoryBuffer')


def _safe_globals() -> List[Tuple[Any, str]]:
    """(stand-in, the name a checkpoint's pickle uses for it)."""
    entries: List[Tuple[Any, str]] = [
        (_NumpyDtype, 'numpy.dtype'),
        (_NumpyArray, 'numpy.ndarray'),
        (_HistoryBuffer, f'{HistoryBuffer.__module__}.{HistoryBuffer.__qualname__}'),
        (_history_buffer_statistic, 'builtins.getattr'),
        (_empty_bytes, 'builtins.bytes'),
    ]
    for module in ('numpy.core.multiarray', 'numpy._core.multiarray'):
        entries += [(_reconstruct, f'{module}._reconstruct'), (_scalar, f'{module}.scalar')]
    return entries


# For messages: our stand-ins under the names they stand for.
_NAMES: Dict[Any, str] = {obj: name for obj, name in _safe_globals()}


def allow_mmengine_checkpoints() -> None:
    """Lets ``torch.load(weights_only=True)`` read what mmengine puts into checkpoints, through
    the checked stand-ins above.

    Called by ``import mmgc``; idempotent. A no-op on torch without ``add_safe_globals``.
    """
    add_safe_globals = getattr(torch.serialization, 'add_safe_globals', None)
    if add_safe_globals is None:
        return
    add_safe_globals(_safe_globals())
