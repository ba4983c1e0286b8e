"""Building the CPU kernels: processes that start at once share one build under torch's lock, and
a build that cannot run (no compiler) says so in one line.

torch 2.14's loader holds an OS lock (``flock``) on ``<build dir>/lock`` while it builds; the file
stays on disk between builds, so its age says nothing, and the OS drops the lock when its holder
dies. mmgc leaves that lock alone.
"""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

BUILDER = '''
import sys, time
import torch
import torch.utils.cpp_extension
import mmgc.ops
open(sys.argv[1], "w").close()          # about to ask for the kernels
start = time.time()
kernels = mmgc.ops.cpu_kernels()
assert kernels is not None, "no kernels"
t = torch.randn(6, 5, dtype=torch.float64)
expected = t - t.mean(dim=1, keepdim=True)
assert kernels.gc_centralize_([t], [], 0.0)
torch.testing.assert_close(t, expected, rtol=0, atol=1e-12)
print(f"built and loaded in {time.time() - start:.0f} s")
'''

HOLDER = '''
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.flock(fd, fcntl.LOCK_EX)          # as torch's loader does while it builds
print("held", flush=True)
time.sleep(3600)
'''


def child_env(extensions: Path, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith('MMGC_')}
    env.update(TORCH_EXTENSIONS_DIR=str(extensions), PYTHONPATH=str(ROOT), **extra)
    return env


def wait_for(paths, timeout: float) -> None:
    deadline = time.time() + timeout
    while not all(p.exists() for p in paths):
        assert time.time() < deadline, f'not all of {paths} appeared in {timeout} s'
        time.sleep(0.2)


def test_two_processes_build_at_once_and_a_held_old_lock_stays(tmp_path):
    """Two fresh processes ask for the kernels at once, in an empty extensions dir whose lock
    file is an hour old and held by a third process (a build in progress): they wait for it
    (the file is neither removed nor replaced); once the holder is killed (the OS releases its
    lock), one builds and the other loads the same build; both get working kernels."""
    extensions = tmp_path / 'extensions'
    build_dir = extensions / 'mmgc_gc_cpu'
    build_dir.mkdir(parents=True)
    lock = build_dir / 'lock'
    lock.touch()
    old = time.time() - 3600
    os.utime(lock, (old, old))
    inode = lock.stat().st_ino
    env = child_env(extensions, OMP_NUM_THREADS='1')
    holder = subprocess.Popen([sys.executable, '-c', HOLDER, str(lock)], env=env,
                              stdout=subprocess.PIPE, text=True)
    builders = []
    try:
        assert holder.stdout.readline().strip() == 'held'
        started = [tmp_path / f'started.{i}' for i in range(2)]
        builders = [subprocess.Popen([sys.executable, '-c', BUILDER, str(flag)], cwd=ROOT,
                                     env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True) for flag in started]
        wait_for(started, timeout=120)
        time.sleep(5)                      # both are now waiting on the lock
        assert lock.exists() and lock.stat().st_ino == inode, 'the held lock was replaced'
        assert abs(lock.stat().st_mtime - old) < 1
        assert not (build_dir / 'build.ninja').exists(), 'a build ran beside the lock holder'
        assert all(b.poll() is None for b in builders)
        holder.send_signal(signal.SIGKILL)  # a build killed mid-way: its lock goes with it
        holder.wait(timeout=10)
        t0 = time.time()
        outputs = [b.communicate(timeout=900) for b in builders]
        elapsed = time.time() - t0
    finally:
        for process in [holder] + builders:
            if process.poll() is None:
                process.kill()
                process.wait()
    for builder, (out, err) in zip(builders, outputs):
        assert builder.returncode == 0, f'exit {builder.returncode}:\n{err[-3000:]}'
        assert 'built and loaded' in out
    assert len(list(build_dir.glob('*.so'))) == 1
    print(f'two concurrent builders done {elapsed:.0f} s after the holder died:',
          [out.strip() for out, _ in outputs])


@pytest.mark.parametrize('verbose', [False, True])
def test_a_missing_compiler_is_reported_in_one_line(tmp_path, verbose):
    """No compiler: one warning line saying so and that the plain path is used, where the build
    log can be seen, and nothing else on stderr; with MMGC_BUILD_VERBOSE=1, the whole log is
    printed."""
    script = '''
import warnings
import torch
import mmgc.ops
from mmgc.gc import centralize_
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    assert mmgc.ops.cpu_kernels() is None
    assert mmgc.ops.cpu_kernels() is None       # (warns once)
    t = torch.randn(6, 5, dtype=torch.float64)
    expected = t - t.mean(dim=1, keepdim=True)
    centralize_([t])                            # the plain path
    torch.testing.assert_close(t, expected, rtol=0, atol=1e-12)
for w in caught:
    print("WARNING:" + str(w.message).replace("\\n", "<NL>"))
'''
    extra = dict(CXX='/nonexistent/g++-missing')
    if verbose:
        extra['MMGC_BUILD_VERBOSE'] = '1'
    run = subprocess.run([sys.executable, '-c', script], cwd=ROOT,
                         env=child_env(tmp_path / 'extensions', **extra),
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    warned = [line[len('WARNING:'):] for line in run.stdout.splitlines()
              if line.startswith('WARNING:')]
    assert len(warned) == 1, warned
    message = warned[0]
    assert 'no C++ compiler found (/nonexistent/g++-missing)' in message
    assert 'plain path (same results, slower)' in message
    if verbose:  # torch's loader prints the build log as it runs
        assert 'g++-missing: not found' in run.stdout and 'ninja: build stopped' in run.stdout
    else:
        assert '<NL>' not in message and len(message) < 250, message
        assert 'MMGC_BUILD_VERBOSE=1' in message
        noise = [line for line in run.stderr.splitlines() if 'No CUDA runtime' not in line]
        assert noise == [], run.stderr[-3000:]
