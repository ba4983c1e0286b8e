"""Hostile checkpoints, written byte by byte (tests/test_utils/crafted.py), after ``import mmgc``.

Each case is loaded with ``torch.load`` and mmengine's ``_load_checkpoint`` and
``load_checkpoint``, each load in its own process forked from one that has imported torch, mmgc
and mmengine and loaded nothing (a segfault shows as a signal, not as a dead pytest). Every case
must be refused with a ``pickle.UnpicklingError`` that names the reason, the process must end
normally, and nothing must run. Before the allow-list checked what it lets numpy build,
``object_array_flags_reset`` and ``field_outside_item`` killed all three loaders with SIGSEGV and
most other cases loaded or failed with other errors; to see that table for any allow-list:
``python -m tests.test_utils.crafted DIR --allow PATH/TO/checkpoint.py``.
"""
import pickle
import zipfile

import numpy as np
import pytest
from mmengine.logging import HistoryBuffer

from .crafted import (CASES, LOADERS, VALID_CASES, load_in_fresh_processes, marker_for,
                      mmgc_reason, write_case)

# What each refusal must say: mmgc's one line, or (where torch refuses first) torch's text.
REFUSED_BY_MMGC = {
    'object_array_flags_reset': "numpy dtype 'O8': only bool, integer, float and complex",
    'field_outside_item': "numpy dtype 'f8' with state (3, '<', None, ('a',), {'a': "
                          "(dtype('float64'), 1073741824)}",
    'object_dtype': "numpy dtype 'O8'",
    'void_dtype': "numpy dtype 'V8'",
    'structured_dtype': "numpy dtype 'V8'",
    'subarray_dtype': "numpy dtype 'V16'",
    'names_on_float_dtype': "numpy dtype 'f8' with state (3, '<', None, ('a',)",
    'subarray_on_float_dtype': "numpy dtype 'f8' with state (3, '<', (dtype('float64'), (2,))",
    'dtype_wrong_elsize': "numpy dtype 'f8' with state (3, '<', None, None, None, 4096, -1, 0)",
    'dtype_wrong_alignment': "with state (3, '<', None, None, None, -1, 1024, 0): not the state "
                             "numpy writes",
    'dtype_wrong_flags': "with state (3, '<', None, None, None, -1, -1, 63)",
    'dtype_wrong_byteorder': "with state (3, '|', None, None, None, -1, -1, 0)",
    'dtype_metadata': "with state (4, '<',",
    'dtype_aligned_args': "numpy.dtype('f8', True, True): only numpy.dtype(spec, False, True)",
    'dtype_unknown_spec': "numpy dtype 'f3'",
    'dtype_state_twice': "a second state for numpy dtype 'f8'",
    'dtype_without_state': "numpy dtype 'f8' without its state",
    'array_data_too_short': '8 bytes of data for a numpy float64 array of shape (4,): it needs 32',
    'array_data_too_long': '64 bytes of data for a numpy float64 array of shape (1,): it needs 8',
    'array_negative_shape': 'numpy array shape (-1,): not a tuple',
    'array_overflowing_shape': 'numpy array shape (0, 1099511627776, 1099511627776): too large',
    'array_huge_shape': 'numpy array shape (4611686018427387904, 4611686018427387904): too large',
    'array_state_not_tuple': 'numpy array state [1, (1,)',
    'array_state_version': 'numpy array state version 2',
    'array_fortran_not_bool': 'numpy array is_fortran 1: not a bool',
    'array_data_not_bytes': 'data bytearray(',
    'array_state_twice': 'a second state for a numpy array',
    'bool_array_bad_byte': 'a bool byte other than 0 or 1',
    'reconstruct_other_class': "numpy _reconstruct(<class 'collections.OrderedDict'>, (0,), b'b')",
    'reconstruct_other_shape': "numpy _reconstruct(numpy.ndarray, (100,), b'b')",
    'reconstruct_other_typecode': "numpy _reconstruct(numpy.ndarray, (0,), b'O')",
    'ndarray_called': 'a call of numpy.ndarray',
    'ndarray_newobj': 'a call of numpy.ndarray',
    'scalar_too_few_bytes': '4 bytes of data for a numpy float64 scalar: it needs 8',
    'scalar_too_many_bytes': '16 bytes of data for a numpy float64 scalar: it needs 8',
    'scalar_object_dtype': "numpy dtype 'O8'",
    'history_buffer_extra_attribute': "HistoryBuffer attributes '__class__',",
    'history_buffer_missing_attribute': "HistoryBuffer attributes '_log_history', 'max_length', "
                                        "'statistics_methods':",
    'history_buffer_log_not_array': "HistoryBuffer _log_history ('a', 'b'): not a 1-d",
    'history_buffer_max_length_text': "HistoryBuffer max_length '10'",
    'history_buffer_2d_log': 'HistoryBuffer _log_history _NumpyArray([[0., 0.]]): not a 1-d',
    'history_buffer_lengths_differ': 'HistoryBuffer histories of different lengths: 2 and 3',
    'history_buffer_bad_statistic': "HistoryBuffer statistics_methods {'min': <function "
                                    'HistoryBuffer.max',
    'history_buffer_state_not_dict': 'HistoryBuffer state (1,): not a dict',
    'history_buffer_called': 'HistoryBuffer.__new__ with arguments ([], [], 5)',
    'history_buffer_newobj_args': 'HistoryBuffer.__new__ with arguments (1,)',
    'rebuild_from_type_array': '8 bytes of data for a numpy float64 array of shape (4,)',
    'rebuild_from_type_dtype': "numpy dtype 'O8'",
    'bytes_with_arguments': 'bytes(1099511627776,): only bytes()',
    'getattr_history_buffer_init': "getattr(mmengine.logging.history_buffer.HistoryBuffer, "
                                   "'__init__')",
    'getattr_register_statistics': "getattr(mmengine.logging.history_buffer.HistoryBuffer, "
                                   "'register_statistics')",
    'getattr_ndarray_tofile': "getattr(numpy.ndarray, 'tofile')",
    'getattr_ordered_dict': "getattr(<class 'collections.OrderedDict'>, 'fromkeys')",
}
REFUSED_BY_TORCH = {
    'os_system': 'GLOBAL os.system whose module os is blocked',
    'posix_system': 'GLOBAL posix.system whose module posix is blocked',
    # Loaded values used as functions or classes: torch's allow-list check compares them with
    # what it holds (a ValueError or TypeError, were those comparisons numpy's elementwise ones).
    'array_as_callable': 'Trying to call reduce for unrecognized function',
    'array_as_class': 'Can only create new object for nn.Parameter or classes allowlisted',
    'scalar_as_callable': 'Trying to call reduce for unrecognized function 0.0',
    # The first BUILD turned it into a plain HistoryBuffer, which is not allow-listed.
    'history_buffer_state_twice': "but got <class 'mmengine.logging.history_buffer.HistoryBuffer'>",
}


def test_every_case_has_an_expected_refusal():
    assert set(REFUSED_BY_MMGC) | set(REFUSED_BY_TORCH) == set(CASES)
    assert not set(REFUSED_BY_MMGC) & set(REFUSED_BY_TORCH)


@pytest.fixture(scope='module')
def outcomes(tmp_path_factory):
    directory = tmp_path_factory.mktemp('crafted')
    paths = {name: write_case(name, directory / f'{name}.pth') for name in CASES + VALID_CASES}
    results = load_in_fresh_processes(list(paths.values()), LOADERS, allow='mmgc')
    return {(name, loader): results[(str(path), loader)]
            for name, path in paths.items() for loader in LOADERS}, paths


@pytest.mark.parametrize('loader', LOADERS)
@pytest.mark.parametrize('name', CASES)
def test_crafted_checkpoint_is_refused(outcomes, name, loader):
    results, paths = outcomes
    outcome = results[(name, loader)]
    assert outcome['result'] == 'refused', outcome  # not 'crash', 'accepted' or another error
    assert outcome['error'] == '_pickle.UnpicklingError'
    assert outcome['exit_code'] == 0
    message = outcome['message']
    if name in REFUSED_BY_TORCH:
        assert REFUSED_BY_TORCH[name] in message
        assert 'mmgc: ' not in message
    else:
        reason = mmgc_reason(message)
        assert reason is not None, message
        assert reason.startswith('mmgc: refused ')
        assert REFUSED_BY_MMGC[name] in reason, reason
        assert message.count('mmgc: ') == 1
    assert not marker_for(paths[name]).exists()


@pytest.mark.parametrize('name', ['os_system', 'posix_system'])
def test_the_code_execution_cases_do_create_their_marker_when_run(tmp_path, name):
    """Unrestricted pickle runs the payload (our own: it touches a file in tmp_path), so the
    marker's absence above means that nothing ran."""
    path = write_case(name, tmp_path / f'{name}.pth')
    with zipfile.ZipFile(path) as zf:
        pickle.loads(zf.read('archive/data.pkl'))
    assert marker_for(path).exists()


def plain_array(values, dtype='<f8'):
    return dict(type='numpy.ndarray', dtype=dtype, values=values)


VALID_META = {
    'valid_history_buffer': dict(
        type='mmengine.logging.history_buffer.HistoryBuffer',
        attributes=dict(max_length=1000000, _log_history=plain_array([0.0, 0.0]),
                        _count_history=plain_array([0.0, 0.0]))),
    'valid_empty_history_buffer': dict(
        type='mmengine.logging.history_buffer.HistoryBuffer',
        attributes=dict(max_length=1000000, _log_history=plain_array([]),
                        _count_history=plain_array([]))),
    'valid_float_scalar': dict(type='numpy.float64', dtype='<f8', value=1.5),
    'valid_int_scalar': dict(type='numpy.int64', dtype='<i8', value=-3),
    # numpy itself swaps a big-endian array to native order when it unpickles it.
    'valid_big_endian_array': dict(type='mmgc.utils.checkpoint._NumpyArray', dtype='<f8',
                                   values=[1.0, 2.0]),
    'valid_shared_dtype': [dict(type='mmgc.utils.checkpoint._NumpyArray', dtype='<f8',
                                values=[0.0, 0.0])] * 2,
}


@pytest.mark.parametrize('loader', LOADERS)
@pytest.mark.parametrize('name', VALID_CASES)
def test_crafted_checkpoint_with_what_mmengine_writes_loads(outcomes, name, loader):
    outcome = outcomes[0][(name, loader)]
    assert outcome['result'] == 'accepted', outcome
    assert outcome['meta'] == VALID_META[name]


@pytest.mark.parametrize('name', VALID_CASES)
def test_valid_crafted_pickles_mean_what_numpy_and_mmengine_write(tmp_path, name):
    """Plain pickle (no allow-list) reads the valid hand-made pickles as the objects they
    imitate, so the hostile ones differ from real pickles only where they mean to."""
    with zipfile.ZipFile(write_case(name, tmp_path / 'case.pth')) as zf:
        meta = pickle.loads(zf.read('archive/data.pkl'))['meta']  # our own bytes
    if name in ('valid_history_buffer', 'valid_empty_history_buffer'):
        assert type(meta) is HistoryBuffer and meta.max_length == 1000000
        length = 2 if name == 'valid_history_buffer' else 0
        np.testing.assert_array_equal(meta._log_history, np.zeros(length))
    elif name == 'valid_float_scalar':
        assert type(meta) is np.float64 and meta == 1.5
    elif name == 'valid_int_scalar':
        assert type(meta) is np.int64 and meta == -3
    elif name == 'valid_big_endian_array':
        assert type(meta) is np.ndarray and meta.tolist() == [1.0, 2.0]
    else:
        assert [a.tolist() for a in meta] == [[0.0, 0.0]] * 2
