"""Honest status after a crash: a run whose process is gone reads as interrupted, at once, with how to go on."""

import json
import os
import signal
import subprocess
import time

import nbformat

from conftest import MLOPS_NB, cli, manifests, working_in


def test_sigkill_reads_as_interrupted_at_once_and_a_live_run_is_not_resumed(project):
    nb_path = project / 'notebooks' / 'stages' / '04_train.ipynb'
    nb = nbformat.read(nb_path, as_version=4)
    nb.cells.insert(2, nbformat.v4.new_code_cell('import time\ntime.sleep(300)'))
    nbformat.write(nb, nb_path)
    proc = subprocess.Popen(
        [*MLOPS_NB, '--settings', str(project / 'settings.ini'), 'run'],
        cwd=project,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 300
        while time.time() < deadline:
            ms = manifests(project) if (project / 'runs').exists() else []
            if ms and ms[-1]['stages'][3]['status'] == 'running':
                break
            assert proc.poll() is None, 'the run ended before train'
            time.sleep(0.5)
        m = manifests(project)[-1]
        assert m['process']['pid'] == proc.pid and m['process']['heartbeat']
        res = cli(project, 'runs')
        assert res.returncode == 0 and 'running' in res.stdout, res.stdout
        res = cli(project, 'run', '--resume', m['run_id'])
        assert res.returncode == 1 and f'run {m["run_id"]} is still running (process {proc.pid}' in res.stderr, (
            res.stderr
        )
        assert proc.poll() is None, 'refusing the second resume left the run alone'
        kernels = working_in(project / 'runs' / m['run_id'])
        assert kernels, 'the CLI runs its stages in kernels'
        for pid in [proc.pid, *kernels]:
            os.kill(pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert json.loads((project / 'runs' / m['run_id'] / 'manifest.json').read_text())['status'] == 'running', (
        'nothing could record the kill'
    )
    t0 = time.time()
    res = cli(project, 'runs')
    row = next(l for l in res.stdout.splitlines() if l.startswith(m['run_id']))
    assert row.split()[3] == 'interrupted', res.stdout
    run_dir = project / 'runs' / m['run_id']
    assert f'{m["run_id"]} was interrupted in stage train: its process ({proc.pid} on ' in res.stdout
    assert f'continue with: mlops-nb run --resume {run_dir}' in res.stdout
    assert time.time() - t0 < 30, 'at once: no waiting for a heartbeat to go stale on this host'
    show = cli(project, 'show', m['run_id'])
    assert show.stdout.splitlines()[0].endswith(': interrupted') and 'interrupted in stage train' in show.stdout
    assert cli(project, 'report').returncode == 0
    page = (project / 'runs' / 'index.html').read_text()
    assert 'status-interrupted' in page and f'mlops-nb run --resume {run_dir}' in page, 'the dashboard says so too'
