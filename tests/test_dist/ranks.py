"""Runs a test's worker script on two CPU processes joined over gloo; the toy model and data the
sharded tests train (the same on every rank and in the single-process reference)."""
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Sequence

ROOT = Path(__file__).resolve().parents[2]
WORLD = 2
STEPS = 3
#: GC optimizer configs every sharded test runs (built with mmengine's ``OPTIMIZERS``).
GC_CONFIGS = {
    'SGDGC': dict(type='SGDGC', lr=0.1, momentum=0.9, weight_decay=1e-2),
    'AdamWGC': dict(type='AdamWGC', lr=0.01, weight_decay=0.1),
    'AdamWGC-update': dict(type='AdamWGC', lr=0.01, weight_decay=0.1, gc_loc='update'),
}


def make_model():
    """conv (5 rows of 27: no even split by 2), fc (3 rows of 80) and fc (1 row), float64."""
    import torch
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 5, 3), torch.nn.Flatten(), torch.nn.Linear(5 * 4 * 4, 3),
        torch.nn.ReLU(), torch.nn.Linear(3, 1)).double()


def batches() -> list:
    """STEPS batches of 4 images of 6x6 (2 per rank)."""
    import torch
    gen = torch.Generator().manual_seed(1)
    return [torch.randn(4, 3, 6, 6, generator=gen, dtype=torch.float64) for _ in range(STEPS)]


def train(model, optimizer, rank: int = 0, world: int = 1) -> None:
    """STEPS steps of ``optimizer`` (or an optim wrapper) on this rank's part of each batch. The
    engines average the ranks' gradients: that of the whole batch's mean loss, as one process
    (``world=1``) computes it."""
    for batch in batches():
        optimizer.zero_grad()
        model(batch.chunk(world)[rank]).pow(2).mean().backward()
        optimizer.step()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def run_ranks(script: str, args: Sequence[str], log_dir: Path, timeout: float = 600,
              **env: str) -> List[str]:
    """Starts ``python script RANK PORT *args`` for each rank, waits for both (stops the other
    when one fails) and returns their logs; asserts both ended with status 0 (an abort in native
    code shows as a negative status, -6 for SIGABRT). ``timeout`` leaves room for a cold cache
    that builds the CPU kernels first."""
    port = free_port()
    environ = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=str(ROOT), **env)
    log_files = [Path(log_dir) / f'rank{rank}.log' for rank in range(WORLD)]
    ranks = []
    for rank, log_file in enumerate(log_files):
        with log_file.open('w') as log:
            ranks.append(subprocess.Popen(
                [sys.executable, script, str(rank), str(port), *map(str, args)], cwd=ROOT,
                env=environ, stdout=log, stderr=subprocess.STDOUT))
    deadline = time.time() + timeout
    while any(rank.poll() is None for rank in ranks) and time.time() < deadline:
        if any(rank.poll() not in (None, 0) for rank in ranks):
            break  # the other rank would wait for it forever
        time.sleep(0.2)
    for rank in ranks:
        if rank.poll() is None:
            rank.kill()
        rank.wait()
    logs = [log_file.read_text() for log_file in log_files]
    for rank, log in zip(ranks, logs):
        assert rank.returncode == 0, f'rank exited with {rank.returncode}:\n{log[-3000:]}'
    return logs


def join(rank: int, port: int) -> None:
    """Joins this worker to the two-rank gloo group."""
    import torch.distributed as dist
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    dist.init_process_group('gloo', rank=rank, world_size=WORLD)


def leave() -> None:
    """Ends a worker whose results are saved: both ranks meet, close the group and leave without
    the interpreter's teardown (which can abort on torch's native threads)."""
    import torch.distributed as dist
    dist.barrier()
    dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
