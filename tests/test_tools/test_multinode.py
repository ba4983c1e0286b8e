"""Training on "many nodes" without CUDA, over gloo: two nodes simulated on this machine, one
process each.

- ``tools/dist_train.sh CONFIG 1`` started twice, with ``NNODES=2`` and ``NODE_RANK=0`` / ``1``:
  two torchrun agents meet at ``MASTER_ADDR:PORT`` and start one rank each.
- ``tools/slurm_train.sh`` with ``GPUS=2 GPUS_PER_NODE=1``, under a stand-in ``srun`` (below)
  that starts its tasks with the variables srun gives each task on two nodes, and a stand-in
  ``scontrol`` that names the node list's hosts (the first one, ``localhost``, is the master).

Both ranks of either run must end with bitwise identical parameters (DDP averages their
gradients) although they trained on different images (their BatchNorm statistics differ). The
model is the small mmpretrain classifier of test_classification_tools.py, trained with ``SGDGC``
for one epoch without evaluation. The training processes import this module (``custom_imports``)
for the hook that dumps each rank's weights and launcher environment.
"""
import os
import pickle
import subprocess
import time
from pathlib import Path

import pytest
import torch
from mmengine.registry import HOOKS

from .test_classification_tools import CONFIG, write_images
from .test_tools import (PYTHON, REPO, TOOLS, MmgcTestDumpWeightsHook, assert_same_tensors,
                         free_port, subprocess_env)

#: What a rank's launcher told it; recorded by the dump hook.
LAUNCH_VARS = ('RANK', 'LOCAL_RANK', 'GROUP_RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT',
               'SLURM_PROCID', 'SLURM_NODEID', 'SLURM_LOCALID')

#: Variables of an outer launcher that must not reach the simulated runs.
OUTER_VARS = LAUNCH_VARS + ('LOCAL_WORLD_SIZE', 'SLURM_NTASKS', 'SLURM_NODELIST',
                            'SLURM_JOB_NODELIST', 'SLURM_NTASKS_PER_NODE', 'SLURM_NNODES',
                            'TORCHELASTIC_RUN_ID')

RUN_TIMEOUT = 300


@HOOKS.register_module(force=True)
class MmgcMultiNodeDumpHook(MmgcTestDumpWeightsHook):
    """The weights dump of test_tools.py, with the iteration and the launcher's variables."""

    def extra(self, runner) -> dict:
        return dict(iter=runner.iter, env={k: os.environ.get(k) for k in LAUNCH_VARS})


# --- stand-ins for Slurm's commands -------------------------------------------------------------

#: srun as tools/slurm_train.sh calls it: ``-p PARTITION``, ``--opt=value`` options, then the
#: command; one process per task, each with the variables srun sets (``--ntasks-per-node`` tasks
#: on each node), its arguments written to ``$MMGC_FAKE_SLURM_LOG/srun.txt``; with
#: ``--kill-on-bad-exit=1`` a failing task ends the others.
FAKE_SRUN = '''#!{python}
import os, subprocess, sys, time
args, options = sys.argv[1:], {{}}
while args and args[0].startswith('-'):
    if args[0] == '-p':
        options['partition'], args = args[1], args[2:]
    else:
        key, _, value = args[0][2:].partition('=')
        options[key], args = value, args[1:]
with open(os.path.join(os.environ['MMGC_FAKE_SLURM_LOG'], 'srun.txt'), 'w') as f:
    f.write(repr((options, args)))
ntasks, per_node = int(options['ntasks']), int(options['ntasks-per-node'])
nodes = (ntasks + per_node - 1) // per_node
node_list = 'mmgc-cpu[0-%d]' % (nodes - 1)
tasks = []
for rank in range(ntasks):
    env = dict(os.environ, SLURM_PROCID=str(rank), SLURM_NTASKS=str(ntasks),
               SLURM_LOCALID=str(rank % per_node), SLURM_NODEID=str(rank // per_node),
               SLURM_NNODES=str(nodes), SLURM_NTASKS_PER_NODE='%d(x%d)' % (per_node, nodes),
               SLURM_NODELIST=node_list, SLURM_JOB_NODELIST=node_list,
               SLURM_JOB_NAME=options.get('job-name', ''))
    tasks.append(subprocess.Popen(args, env=env))
while any(t.poll() is None for t in tasks):
    if options.get('kill-on-bad-exit') == '1' and any(t.poll() for t in tasks):
        for t in tasks:
            if t.poll() is None:
                t.kill()
    time.sleep(0.2)
sys.exit(max(abs(t.returncode) for t in tasks))
'''

#: ``scontrol show hostname LIST``: the hosts of the list, one a line (the first, localhost,
#: resolves here); its arguments are appended to ``$MMGC_FAKE_SLURM_LOG/scontrol.txt``.
FAKE_SCONTROL = '''#!/usr/bin/env bash
echo "$@" >> "$MMGC_FAKE_SLURM_LOG/scontrol.txt"
if [ "$1 $2" = "show hostname" ] && [ "$3" = "mmgc-cpu[0-1]" ]; then
    printf 'localhost\\nmmgc-cpu1\\n'
else
    echo "scontrol: error: Invalid hostlist: $3" >&2
    exit 1
fi
'''


def fake_slurm_bin(folder: Path, commands=('srun', 'scontrol')) -> Path:
    """A folder with the stand-in commands, to put first on PATH."""
    folder.mkdir(exist_ok=True)
    scripts = dict(srun=FAKE_SRUN.format(python=PYTHON), scontrol=FAKE_SCONTROL)
    for name in commands:
        (folder / name).write_text(scripts[name])
        (folder / name).chmod(0o755)
    return folder


# --- helpers ------------------------------------------------------------------------------------


def clean_env(**extra) -> dict:
    """The test processes' environment (subprocess_env) without an outer launcher's variables."""
    env = subprocess_env()
    for key in OUTER_VARS:
        env.pop(key, None)
    env.update(extra)
    return env


def run_together(commands, tmp_path: Path, timeout: float = RUN_TIMEOUT):
    """Starts the (args, env) commands at once, waits for all; fails with their output's tails
    if one fails or they take longer than ``timeout`` (then all are killed)."""
    procs, logs = [], []
    try:
        for i, (args, env) in enumerate(commands):
            log = tmp_path / f'process{i}.log'
            logs.append(log)
            with open(log, 'w') as out:
                procs.append(subprocess.Popen([str(a) for a in args], cwd=REPO, env=env,
                                              stdout=out, stderr=subprocess.STDOUT,
                                              start_new_session=True))
        deadline = time.monotonic() + timeout
        while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, 9)
                proc.wait()
    codes = [p.returncode for p in procs]
    if any(codes):
        tails = '\n'.join(f'--- process {i} (exit {c}):\n{log.read_text()[-4000:]}'
                          for i, (c, log) in enumerate(zip(codes, logs)))
        pytest.fail(f'exit statuses {codes}:\n{tails}')
    return [log.read_text() for log in logs]


def rank_dumps(work_dir: Path):
    return [torch.load(work_dir / f'weights_rank{r}.pth', weights_only=True) for r in (0, 1)]


def assert_same_weights_different_data(dumps):
    """Both ranks: the same parameters, bit for bit; BatchNorm statistics that differ (each
    rank normalized its own images); one epoch of 16 images, 4 per rank and step: 2 steps."""
    first, second = dumps[0]['state_dict'], dumps[1]['state_dict']
    params = dumps[0]['parameters']
    assert params == dumps[1]['parameters'] and len(params) > 20
    assert_same_tensors({k: second[k] for k in params}, {k: first[k] for k in params})
    running = [k for k in first if k.endswith('running_mean')]
    assert running and any(not torch.equal(first[k], second[k]) for k in running)
    for rank, dump in enumerate(dumps):
        assert (dump['rank'], dump['world_size'], dump['backend']) == (rank, 2, 'gloo')
        assert dump['wrapper'] == 'MMDistributedDataParallel'
        assert dump['iter'] == 2


# --- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope='module')
def multinode_config(tmp_path_factory):
    """The classifier of test_classification_tools.py: one epoch, no evaluation, the dump hook."""
    folder = tmp_path_factory.mktemp('multinode')
    root = write_images(folder / 'data')
    path = folder / 'resnet18-w8_sgdgc_multinode.py'
    path.write_text(CONFIG.format(root=str(root), batch=4, lr=0.1, base_batch=8) + """
custom_imports = dict(imports=['mmgc', 'tests.test_tools.test_multinode'],
                      allow_failed_imports=False)
train_cfg = dict(by_epoch=True, max_epochs=1)
val_dataloader = None
val_cfg = None
val_evaluator = None
custom_hooks = [dict(type='MmgcMultiNodeDumpHook')]
""")
    return path


# --- tests --------------------------------------------------------------------------------------


def test_dist_train_two_nodes_on_gloo(multinode_config, tmp_path):
    """``NNODES=2 NODE_RANK=0|1 tools/dist_train.sh CONFIG 1``: node 0's rank is 0, node 1's is
    1 (each LOCAL_RANK 0); the two ranks train with identical weights. (The work dir's name
    has a space: the script passes train.py's options on as they are.)"""
    work_dir, port = tmp_path / 'work dir', free_port()
    run_together([(['bash', TOOLS / 'dist_train.sh', multinode_config, 1, '--work-dir', work_dir],
                   clean_env(NNODES='2', NODE_RANK=str(node), PORT=str(port),
                             MASTER_ADDR='127.0.0.1', PYTHON=PYTHON))
                  for node in (0, 1)], tmp_path)
    dumps = rank_dumps(work_dir)
    assert_same_weights_different_data(dumps)
    for node, dump in enumerate(dumps):
        assert dump['env'] == dict(
            RANK=str(node), LOCAL_RANK='0', GROUP_RANK=str(node), WORLD_SIZE='2',
            MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port), SLURM_PROCID=None,
            SLURM_NODEID=None, SLURM_LOCALID=None)
    # rank 0 (node 0) wrote the checkpoint: its weights
    checkpoint = torch.load(work_dir / 'epoch_1.pth', map_location='cpu', weights_only=True)
    assert checkpoint['meta']['iter'] == 2
    assert all(g['use_gc'] for g in checkpoint['optimizer']['param_groups'])
    assert_same_tensors(checkpoint['state_dict'], dumps[0]['state_dict'])


def test_slurm_train_two_nodes_on_gloo(multinode_config, tmp_path):
    """``GPUS=2 GPUS_PER_NODE=1 tools/slurm_train.sh PARTITION JOB CONFIG WORK_DIR`` under the
    stand-in srun: two tasks on two nodes, ``--launcher slurm`` on the CPU. RANK / WORLD_SIZE /
    LOCAL_RANK come from SLURM_PROCID / SLURM_NTASKS / SLURM_LOCALID, MASTER_ADDR (not set) from
    the first host scontrol names, MASTER_PORT from the environment; the two ranks train with
    identical weights."""
    work_dir, port, log = tmp_path / 'work', free_port(), tmp_path / 'slurm_log'
    log.mkdir()
    bin_dir = fake_slurm_bin(tmp_path / 'bin')
    env = clean_env(GPUS='2', GPUS_PER_NODE='1', CPUS_PER_TASK='1', PYTHON=PYTHON,
                    MASTER_PORT=str(port), MMGC_FAKE_SLURM_LOG=str(log))
    env['PATH'] = os.pathsep.join([str(bin_dir), env['PATH']])
    run_together([(['bash', TOOLS / 'slurm_train.sh', 'cpu', 'mmgc-multinode', multinode_config,
                    work_dir], env)], tmp_path)
    options, command = eval((log / 'srun.txt').read_text())
    assert options['partition'] == 'cpu' and options['job-name'] == 'mmgc-multinode'
    assert (options['ntasks'], options['ntasks-per-node']) == ('2', '1')
    assert command[-2:] == [f'--work-dir={work_dir}', '--launcher=slurm']
    # each task asked scontrol for the first host (MASTER_ADDR was not set)
    assert (log / 'scontrol.txt').read_text().splitlines() == ['show hostname mmgc-cpu[0-1]'] * 2
    dumps = rank_dumps(work_dir)
    assert_same_weights_different_data(dumps)
    for node, dump in enumerate(dumps):
        assert dump['env'] == dict(
            RANK=str(node), LOCAL_RANK='0', GROUP_RANK=None, WORLD_SIZE='2',
            MASTER_ADDR='localhost', MASTER_PORT=str(port), SLURM_PROCID=str(node),
            SLURM_NODEID=str(node), SLURM_LOCALID='0')
    checkpoint = torch.load(work_dir / 'epoch_1.pth', map_location='cpu', weights_only=True)
    assert_same_tensors(checkpoint['state_dict'], dumps[0]['state_dict'])
    # tools/slurm_test.sh on that checkpoint, the same way: each task tests its half, gathered
    out = tmp_path / 'preds.pkl'
    env['MASTER_PORT'] = str(free_port())
    logs = run_together([(['bash', TOOLS / 'slurm_test.sh', 'cpu', 'mmgc-multinode-test',
                           multinode_config, work_dir / 'epoch_1.pth', '--work-dir',
                           tmp_path / 'test', '--out', out], env)], tmp_path / 'slurm_log')
    assert "'backend': 'gloo'" in logs[0] and 'Distributed training: True' in logs[0]
    with open(out, 'rb') as f:
        assert len(pickle.load(f)) == 8
    # test.py with a srun environment it cannot use: one error line, as train.py's
    bad = clean_env(SLURM_PROCID='0', SLURM_NTASKS='2', SLURM_NODELIST='mmgc-cpu[0-1]')
    bad['PATH'] = os.pathsep.join(['/usr/bin', '/bin'])  # (no scontrol)
    proc = subprocess.run([PYTHON, TOOLS / 'test.py', multinode_config, work_dir / 'epoch_1.pth',
                           '--launcher', 'slurm', '--work-dir', tmp_path / 'bad'], cwd=REPO,
                          env=bad, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert proc.returncode == 2 and 'Traceback' not in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines() == [
        'test.py: error: --launcher slurm: MASTER_ADDR is not set and scontrol, which finds the '
        "first host of SLURM_NODELIST, is not on PATH; set MASTER_ADDR to the address of the "
        "first task's host"]


@pytest.mark.parametrize('case, expected', [
    ('no_scontrol', '--launcher slurm: MASTER_ADDR is not set and scontrol, which finds the '
     'first host of SLURM_NODELIST, is not on PATH; set MASTER_ADDR to the address of the first '
     "task's host"),
    ('bad_nodelist', '--launcher slurm: scontrol show hostname mmgc-cpu[0-x gave no host '
     '(scontrol: error: Invalid hostlist: mmgc-cpu[0-x); check SLURM_NODELIST, or set '
     "MASTER_ADDR to the address of the first task's host"),
])
def test_train_py_launcher_slurm_errors_are_one_line(case, expected, tmp_path):
    """A srun environment that cannot start the group: exit status 2 and one line on stderr,
    before any model is built (the config's model does not even exist). The other cases of
    LauncherEnvError (variables missing or malformed) are tests/test_utils/test_launch.py's."""
    config = tmp_path / 'nothing.py'
    config.write_text("model = dict(type='MmgcNoSuchModel')\n")
    bin_dir = fake_slurm_bin(tmp_path / 'bin', () if case == 'no_scontrol' else ('scontrol', ))
    env = clean_env(SLURM_PROCID='0', SLURM_NTASKS='2', SLURM_LOCALID='0',
                    SLURM_NODELIST='mmgc-cpu[0-1]', MMGC_FAKE_SLURM_LOG=str(tmp_path))
    # PATH: the stand-ins only, and the folder of the shell's basic commands (no real scontrol)
    env['PATH'] = os.pathsep.join([str(bin_dir), '/usr/bin', '/bin'])
    if case == 'bad_nodelist':
        env['SLURM_NODELIST'] = 'mmgc-cpu[0-x'
    proc = subprocess.run([PYTHON, TOOLS / 'train.py', config, '--work-dir', tmp_path / 'work',
                           '--launcher', 'slurm'], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=RUN_TIMEOUT)
    assert proc.returncode == 2 and 'Traceback' not in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines() == [f'train.py: error: {expected}']
