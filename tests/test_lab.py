"""`mlops-nb lab`: JupyterLab at the project; its contents API lists the stage notebooks and its kernel runs one."""

import json
import os
import secrets
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid

import pytest

from conftest import MLOPS_NB, ROOT, make_project
from mlops_nb.core.stage import find_stages


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


class Server:
    "The REST API of a Jupyter server at `base`, with `token`"

    def __init__(self, base, token):
        self.base, self.token = base, token

    def call(self, path, method='GET', body=None, token=True):
        req = urllib.request.Request(
            self.base + path,
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={'Content-Type': 'application/json', **({'Authorization': f'token {self.token}'} if token else {})},
        )
        with urllib.request.urlopen(req, timeout=30) as r:
            text = r.read().decode()
            return r.status, json.loads(text) if text and r.headers.get_content_type() == 'application/json' else text


def execute(ws, session, code, timeout=120):
    "Run `code` in the kernel behind websocket `ws`; return its outputs, raising on an error"
    msg_id = uuid.uuid4().hex
    ws.send(
        json.dumps(
            {
                'header': {
                    'msg_id': msg_id,
                    'username': 'test',
                    'session': session,
                    'msg_type': 'execute_request',
                    'version': '5.3',
                    'date': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()),
                },
                'parent_header': {},
                'metadata': {},
                'channel': 'shell',
                'buffers': [],
                'content': {
                    'code': code,
                    'silent': False,
                    'store_history': True,
                    'user_expressions': {},
                    'allow_stdin': False,
                    'stop_on_error': True,
                },
            }
        )
    )
    outputs, replied, idle, deadline = [], False, False, time.monotonic() + timeout
    while not (replied and idle):
        assert time.monotonic() < deadline, f'no reply in {timeout} s to: {code[:80]}'
        msg = json.loads(ws.recv())
        if msg.get('parent_header', {}).get('msg_id') != msg_id:
            continue
        kind = msg['msg_type']
        if kind == 'error':
            raise AssertionError(f'{msg["content"]["ename"]}: {msg["content"]["evalue"]} in: {code[:200]}')
        if kind in ('execute_result', 'display_data', 'stream'):
            outputs.append(msg['content'])
        if kind == 'execute_reply':
            replied = True
        if kind == 'status' and msg['content']['execution_state'] == 'idle':
            idle = True
    return outputs


@pytest.fixture
def lab(tmp_path):
    "`mlops-nb lab` on a fresh project, on a free loopback port with a token: `(project, Server)`"
    project = make_project(tmp_path / 'project')
    port, token = free_port(), secrets.token_hex(16)
    env = {
        **os.environ,
        'JUPYTER_TOKEN': token,
        'JUPYTER_RUNTIME_DIR': str(tmp_path / 'runtime'),
        'JUPYTER_CONFIG_DIR': str(tmp_path / 'config'),
        'JUPYTERLAB_WORKSPACES_DIR': str(tmp_path / 'workspaces'),
    }
    proc = subprocess.Popen(
        [
            *MLOPS_NB,
            '--settings',
            str(project / 'settings.ini'),
            'lab',
            '--no-browser',
            '--port',
            str(port),
            *(['--allow-root'] if os.geteuid() == 0 else []),
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / 'lab.log', 'w'),
    )
    server = Server(f'http://127.0.0.1:{port}', token)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if server.call('/api/status')[0] == 200:
                    break
            except (urllib.error.URLError, ConnectionError):
                pass
            assert proc.poll() is None, (tmp_path / 'lab.log').read_text()[-3000:]
            assert time.monotonic() < deadline, 'JupyterLab did not answer in 90 s'
            time.sleep(0.5)
        yield project, server
    finally:
        try:
            server.call('/api/shutdown', 'POST')
        except Exception:
            proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_lab_lists_the_stage_notebooks_and_runs_one_in_its_kernel(lab):
    import websocket

    project, server = lab
    status, page = server.call('/lab')
    assert status == 200 and 'JupyterLab' in page, 'JupyterLab itself, not only a Jupyter server'
    with pytest.raises(urllib.error.HTTPError) as e:
        server.call('/api/contents/notebooks/stages', token=False)
    assert e.value.code == 403, 'the token is required'
    _, listing = server.call('/api/contents/notebooks/stages')
    assert sorted(c['name'] for c in listing['content'] if c['type'] == 'notebook') == sorted(
        s.notebook for s in find_stages(ROOT).values()
    )
    path = 'notebooks/stages/01_ingest.ipynb'
    _, nb = server.call(f'/api/contents/{path}')
    cells = [c['source'] for c in nb['content']['cells'] if c['cell_type'] == 'code']
    assert 'run_dir' in cells[0], 'the parameters cell comes first'
    _, session = server.call(
        '/api/sessions',
        'POST',
        {'path': path, 'name': '01_ingest.ipynb', 'type': 'notebook', 'kernel': {'name': 'python3'}},
    )
    kernel = session['kernel']['id']
    ws = websocket.create_connection(
        f'ws://127.0.0.1:{server.base.rsplit(":", 1)[1]}/api/kernels/{kernel}/channels?session_id={session["id"]}',
        header=[f'Authorization: token {server.token}'],
        timeout=120,
    )
    try:
        assert execute(ws, session['id'], 'import os; print(os.getcwd())')[0]['text'].strip() == str(
            project / 'notebooks' / 'stages'
        )
        outputs = [
            o for code in cells for o in execute(ws, session['id'], code)
        ]  # top to bottom with the defaults, as a person would
    finally:
        ws.close()
        server.call(f'/api/sessions/{session["id"]}', 'DELETE')
    snapshot = project / 'runs' / 'interactive' / 'artifacts' / '01_ingest' / 'data_version.json'
    version = json.loads(snapshot.read_text())['data_version']
    assert any(version in json.dumps(o.get('data', {})) for o in outputs), (
        'the notebook showed the data version it wrote'
    )
