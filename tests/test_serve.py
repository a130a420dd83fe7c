"""The model server: the same answers as `mlflow models serve`, hot reload under load, refused inputs, routing,
shadow scoring, and a prediction log that holds every answered request after a graceful shutdown."""

import inspect
import json
import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import httpx
import pandas as pd
import pytest

from conftest import MLOPS_NB, cli, make_project
from mlops_nb.registry.server import free_port

MODEL = 'acs-employment'
BIN = Path(sys.executable).parent


@pytest.fixture(scope='module')
def served(tmp_path_factory):
    """A project whose registry holds version 1 (gradient boosting, champion) and version 2 (logistic regression).

    The models are trained by the stage functions on 2,000 rows and registered with the MLflow client, with the
    `mlops_nb.run_dir` tag the register stage sets (the gate deciding promotion is not what is tested here)."""
    from mlflow.tracking import MlflowClient
    from mlops_nb.stages.data import ingest
    from mlops_nb.stages.features import make_features, model_input
    from mlops_nb.stages.train import train
    from mlops_nb.core.project import load_project
    from mlops_nb.stages.validate import validate

    project = make_project(tmp_path_factory.mktemp('serve'))
    p = load_project(project / 'settings.ini')
    c = MlflowClient(p.tracking_uri, registry_uri=p.tracking_uri)
    c.create_registered_model(MODEL)
    kw = {'reference': 'none'} if 'reference' in inspect.signature(validate).parameters else {}
    for i, model in enumerate(['hist_gradient_boosting', 'logistic_regression']):
        run = project / 'runs' / f'run{i + 1}'
        ingest(str(run), max_rows=2000)
        validate(str(run), **kw)
        make_features(str(run))
        train(str(run), model=model, max_iter=60 if model == 'hist_gradient_boosting' else 500)
        c.create_model_version(MODEL, str(run / 'artifacts/04_train/model'), tags={'mlops_nb.run_dir': str(run)})
    c.set_registered_model_alias(MODEL, 'champion', '1')
    features = json.loads((project / 'runs/run1/artifacts/03_features/features.json').read_text())
    hold = model_input(pd.read_parquet(project / 'runs/run1/artifacts/03_features/holdout.parquet'), features)
    rows = hold.astype(object).where(hold.notna(), None)
    return SimpleNamespace(
        project=project, settings=p, uri=p.tracking_uri, client=c, columns=list(rows.columns), rows=rows.values.tolist()
    )


def _server(s, tmp_path, **cfg):
    "A ModelServer on the fixture's registry, with `cfg` laid over the project's [serve] settings"
    from mlops_nb.serving.app import ModelServer
    from mlops_nb.serving.config import config_from_project
    from mlops_nb.serving.models import MlflowRegistry

    base = config_from_project(s.settings)
    for k, v in {'log_url': f'sqlite:///{tmp_path}/predictions.db', **cfg}.items():
        setattr(base, k, v)
    return ModelServer(base, MlflowRegistry(s.uri, MODEL, tmp_path / 'cache')).load_models()


@contextmanager
def running(server):
    "`server` on uvicorn in a thread, on a free port of 127.0.0.1; stopped gracefully at the end"
    import uvicorn

    port = free_port()
    us = uvicorn.Server(
        uvicorn.Config(server.app(), host='127.0.0.1', port=port, log_level='warning', access_log=False)
    )
    t = threading.Thread(target=us.run, daemon=True)
    t.start()
    for _ in range(300):
        if us.started:
            break
        time.sleep(0.02)
    assert us.started, 'the server did not start'
    try:
        yield f'http://127.0.0.1:{port}'
    finally:
        us.should_exit = True
        t.join(60)


def _split(s, rows):
    return {'dataframe_split': {'columns': s.columns, 'data': rows}}


def _wait_ready(url, proc, timeout=120):
    t0 = time.time()
    while time.time() - t0 < timeout:
        assert proc.poll() is None, f'{proc.args} exited with {proc.returncode}'
        try:
            if httpx.get(url + '/ping', timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f'{url} did not become ready')


def test_same_predictions_as_mlflow_models_serve(served, tmp_path):
    "Both versions (the fast path and the general one), every input format, against MLflow's own server"
    # earlier tests in this process may have set MLFLOW_REGISTRY_URI (mlflow.set_registry_uri exports it): pin both
    env = {
        **os.environ,
        'MLFLOW_TRACKING_URI': served.uri,
        'MLFLOW_REGISTRY_URI': served.uri,
        'PYTHONWARNINGS': 'ignore',
    }
    ports = [free_port(), free_port()]
    procs = [
        subprocess.Popen(
            [
                str(BIN / 'mlflow'),
                'models',
                'serve',
                '-m',
                f'models:/{MODEL}/{v}',
                '--env-manager',
                'local',
                '-h',
                '127.0.0.1',
                '-p',
                str(port),
            ],
            env=env,
            cwd=tmp_path,
            stdout=open(tmp_path / f'mlflow{v}.log', 'w'),
            stderr=subprocess.STDOUT,
        )
        for v, port in zip((1, 2), ports)
    ]
    try:
        served.client.set_registered_model_alias(MODEL, 'lr', '2')
        rows = served.rows[:300]
        records = [dict(zip(served.columns, r)) for r in rows]
        csv = pd.DataFrame(rows, columns=served.columns).to_csv(index=False).encode()
        bodies = [
            ('application/json', json.dumps(_split(served, rows)).encode()),
            ('application/json', json.dumps({'dataframe_records': records}).encode()),
            ('application/json', json.dumps({'instances': records}).encode()),
            (
                'application/json',
                json.dumps({'inputs': {c: [r[i] for r in rows] for i, c in enumerate(served.columns)}}).encode(),
            ),
        ]
        for port, proc in zip(ports, procs):
            _wait_ready(f'http://127.0.0.1:{port}', proc)
        for port, alias in zip(ports, ('champion', 'lr')):
            server = _server(served, tmp_path / alias, alias=alias)
            assert server.models['champion'].fast == (alias == 'champion'), (
                'boosting takes the fast path, the linear model the general one'
            )
            with running(server) as url:
                for ctype, body in bodies:
                    theirs = httpx.post(
                        f'http://127.0.0.1:{port}/invocations',
                        content=body,
                        headers={'content-type': ctype},
                        timeout=60,
                    )
                    ours = httpx.post(url + '/invocations', content=body, headers={'content-type': ctype}, timeout=60)
                    assert theirs.status_code == ours.status_code == 200, (ctype, theirs.text[:300], ours.text[:300])
                    assert ours.json() == theirs.json(), f'{alias} {ctype} {body[:40]!r}: predictions differ'
                    assert len(ours.json()['predictions']) == len(rows)
                # MLflow's server cannot read CSV for a model whose signature takes any types (which pandas' categories need): ours can
                by_csv = httpx.post(url + '/invocations', content=csv, headers={'content-type': 'text/csv'}, timeout=60)
                assert by_csv.status_code == 200 and by_csv.json() == ours.json(), by_csv.text[:300]
                assert ours.headers['x-model-version'] == ('1' if alias == 'champion' else '2')
    finally:
        for p in procs:
            p.terminate()
            p.wait(30)


def test_hot_reload_under_concurrent_requests_fails_nothing(served, tmp_path):
    "Promotion and rollback while 8 clients send requests: every request answered, the switch within seconds"
    server = _server(served, tmp_path, reload_interval_s=0.2)
    body = json.dumps(_split(served, served.rows[:1])).encode()
    seen, failures, stop = [], [], threading.Event()

    def client(i):
        with httpx.Client(timeout=30) as h:
            while not stop.is_set():
                try:
                    r = h.post(url + '/invocations', content=body, headers={'content-type': 'application/json'})
                    if r.status_code != 200:
                        failures.append((r.status_code, r.text[:200]))
                    else:
                        seen.append((time.monotonic(), i, r.headers['x-model-version']))
                except httpx.HTTPError as e:
                    failures.append(repr(e))

    try:
        with running(server) as url:
            threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
            for t in threads:
                t.start()

            def switch(version):
                time.sleep(0.5)
                t0 = time.monotonic()
                served.client.set_registered_model_alias(MODEL, 'champion', version)
                while time.monotonic() - t0 < 10:
                    if any(v == version for t, _, v in seen[-8:] if t > t0):
                        return time.monotonic() - t0
                    time.sleep(0.05)
                raise AssertionError(f'version {version} was not served within 10 s')

            promote_s, rollback_s = switch('2'), switch('1')
            time.sleep(0.3)
            stop.set()
            for t in threads:
                t.join(30)
            metrics = httpx.get(url + '/metrics').text
    finally:
        stop.set()
        served.client.set_registered_model_alias(MODEL, 'champion', '1')
    assert failures == [], failures[:5]
    assert len(seen) > 100 and {v for _, _, v in seen} == {'1', '2'}
    assert promote_s < 5 and rollback_s < 5, (promote_s, rollback_s)
    assert 'mlops_nb_reloads_total{role="champion"} 2.0' in metrics
    assert 'mlops_nb_requests_total{code="200",model_version="2",role="champion"}' in metrics


def test_refused_inputs_name_the_problem(served, tmp_path):
    server = _server(served, tmp_path, max_payload_bytes=50_000, token='s3cret')
    row = dict(zip(served.columns, served.rows[0]))
    auth = {'Authorization': 'Bearer s3cret'}
    with running(server) as url:
        post = lambda **kw: httpx.post(url + '/invocations', **{'headers': auth, **kw}, timeout=30)
        r = post(json={'dataframe_records': [row]}, headers={})
        assert r.status_code == 401 and r.headers['www-authenticate'] == 'Bearer'
        assert httpx.get(url + '/ping').status_code == 200, 'health checks need no token'
        cases = [
            (
                dict(content=b'{"dataframe_split": {', headers={**auth, 'content-type': 'application/json'}),
                400,
                'malformed JSON',
            ),
            (
                dict(content=b'{"rows": []}', headers={**auth, 'content-type': 'application/json'}),
                400,
                'exactly one of',
            ),
            (dict(content=b'a,b\n1,2\n', headers={**auth, 'content-type': 'application/xml'}), 415, 'application/xml'),
            (dict(json={'dataframe_records': [row] * 500}), 413, 'serve.max_payload_mb'),
            (
                dict(json={'dataframe_records': [{k: v for k, v in row.items() if k != 'AGEP'}]}),
                422,
                "missing field 'AGEP'",
            ),
            (dict(json={'dataframe_records': [{**row, 'salary': 1}]}), 422, "unexpected field 'salary'"),
            (
                dict(json={'dataframe_records': [row, {**row, 'AGEP': 'forty'}]}),
                422,
                "field 'AGEP': expected a number, got 'forty' (str) in row 1",
            ),
            (dict(json={'dataframe_records': [{**row, 'SEX': [1]}]}), 422, "field 'SEX'"),
        ]
        for kw, status, msg in cases:
            r = post(**kw)
            assert r.status_code == status, (status, r.status_code, r.text)
            assert msg in r.json()['message'] and r.json()['error_code'], r.text
            assert r.headers['x-request-id'] and r.headers['x-model-version'] == '1'
        # missing values, integers given for whole-number categories, and a larger request all score
        nulls = [{**row, 'AGEP': None, 'SCHL': None}, {**row, 'SCHL': int(row['SCHL']), 'MAR': int(row['MAR'])}]
        r = post(json={'dataframe_records': nulls})
        assert r.status_code == 200 and len(r.json()['predictions']) == 2, r.text
        assert post(json=_split(served, served.rows[:200])).status_code == 200
        text = httpx.get(url + '/metrics', headers=auth).text
        assert httpx.get(url + '/metrics').status_code == 401
    assert 'mlops_nb_requests_total{code="422",model_version="1",role="champion"} 4.0' in text
    assert 'mlops_nb_requests_total{code="401",model_version="1",role="champion"} 1.0' in text
    assert 'mlops_nb_batch_rows_bucket' in text and 'mlops_nb_request_seconds_bucket' in text


def test_metrics_parse_with_prometheus_clients_parser(served, tmp_path):
    "What /metrics serves reads back through prometheus_client's own text parser, every family with its type"
    from prometheus_client.parser import text_string_to_metric_families

    server = _server(served, tmp_path)
    with running(server) as url:
        assert httpx.post(url + '/invocations', json=_split(served, served.rows[:5]), timeout=30).status_code == 200
        assert (
            httpx.post(url + '/invocations', json={'dataframe_records': [{'AGEP': 'old'}]}, timeout=30).status_code
            == 422
        )
        r = httpx.get(url + '/metrics', timeout=30)
    assert r.status_code == 200 and r.headers['content-type'].startswith('text/plain')
    families = {f.name: f for f in text_string_to_metric_families(r.text)}
    kinds = {
        name: f.type for name, f in families.items() if name.startswith('mlops_nb_') and not name.endswith('_created')
    }
    assert kinds == {
        'mlops_nb_requests': 'counter',
        'mlops_nb_rows': 'counter',
        'mlops_nb_request_seconds': 'histogram',
        'mlops_nb_batch_rows': 'histogram',
        'mlops_nb_shadow': 'counter',
        'mlops_nb_feedback': 'counter',
        'mlops_nb_reloads': 'counter',
        'mlops_nb_in_flight': 'gauge',
        'mlops_nb_queued_rows': 'gauge',
        'mlops_nb_shadow_queued': 'gauge',
        'mlops_nb_model_info': 'gauge',
        'mlops_nb_log_pending': 'gauge',
        'mlops_nb_log_written': 'gauge',
        'mlops_nb_log_write_errors': 'gauge',
    }, kinds
    answers = {
        s.labels['code']: s.value for s in families['mlops_nb_requests'].samples if s.name == 'mlops_nb_requests_total'
    }
    assert answers == {'200': 1.0, '422': 1.0}, answers
    assert [s.value for s in families['mlops_nb_rows'].samples if s.name == 'mlops_nb_rows_total'] == [5.0]
    assert [s.labels for s in families['mlops_nb_model_info'].samples] == [
        {'role': 'champion', 'alias': 'champion', 'model': MODEL, 'version': '1'}
    ]


def test_serve_without_the_serve_extra_says_how_to_install_it(tmp_path):
    "`mlops-nb serve` without the serve extra: one line naming the install command, no traceback"
    # mlflow brings starlette and uvicorn; prometheus_client is what a plain `pip install mlops-nb` lacks.
    # None in sys.modules makes its import fail as if it were not installed.
    code = (
        'import sys\n'
        'sys.modules["prometheus_client"] = None\n'
        'from mlops_nb.cli import main\n'
        f'sys.argv = ["mlops-nb", "--settings", {str(tmp_path / "settings.ini")!r}, "serve"]\n'
        'sys.exit(main())'
    )
    res = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120)
    assert res.returncode != 0 and 'Traceback' not in res.stderr, res.stderr
    assert res.stderr.strip().splitlines() == [
        "error: serving needs prometheus_client, which the serve extra installs: pip install 'mlops-nb[serve]'"
    ], res.stderr


def test_sticky_routing_and_shadow_scoring(served, tmp_path):
    served.client.set_registered_model_alias(MODEL, 'challenger', '2')
    try:
        server = _server(served, tmp_path, challenger_share=0.5, shadow_share=1.0)
        body = _split(served, served.rows[:3])
        with running(server) as url, httpx.Client(timeout=30) as h:
            by_client = {}
            for i in range(40):
                for _ in range(3):
                    r = h.post(url + '/invocations', json=body, headers={'X-Client-Id': f'client-{i}'})
                    assert r.status_code == 200
                    by_client.setdefault(i, set()).add((r.headers['x-model-version'], r.headers['x-model-alias']))
        assert all(len(v) == 1 for v in by_client.values()), 'one client sees one model'
        assert {next(iter(v)) for v in by_client.values()} == {('1', 'champion'), ('2', 'challenger')}
        from mlops_nb.serving.logreader import read_predictions

        log = read_predictions(server.cfg.log_url)
        assert len(log) == 40 * 3 * 3
        champion = log[log.role == 'champion']
        assert champion.shadow_model_version.eq('2').all(), 'every champion answer was also scored by the challenger'
        assert champion.shadow_prediction.notna().all() and log[log.role == 'challenger'].shadow_prediction.isna().all()
    finally:
        served.client.delete_registered_model_alias(MODEL, 'challenger')


def test_cli_serve_logs_every_request_through_sigterm_then_feedback_and_export(served, tmp_path):
    "`mlops-nb serve`, requests in flight when SIGTERM arrives, then `mlops-nb feedback` and `mlops-nb predictions export`"
    port = free_port()
    scratch = tmp_path / 'tmp'  # the server's own temporary folder: the models it downloads go there, and go
    scratch.mkdir()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith('MLFLOW_')},
        'PYTHONWARNINGS': 'ignore',
        'TMPDIR': str(scratch),
    }
    proc = subprocess.Popen(
        [*MLOPS_NB, '--settings', str(served.project / 'settings.ini'), 'serve', '--port', str(port)],
        cwd=served.project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f'http://127.0.0.1:{port}'
    answered, statuses, lock = [], [], threading.Lock()

    def client(i):
        with httpx.Client(timeout=30) as h:
            for k in range(400):
                rows = served.rows[(i * 7 + k) % 300 : (i * 7 + k) % 300 + 1 + k % 3]
                try:
                    r = h.post(url + '/invocations', json=_split(served, rows))
                except httpx.HTTPError:
                    return  # after SIGTERM the server takes no new requests
                with lock:
                    if r.status_code == 200:
                        answered.append((r.headers['x-request-id'], rows, r.json()['predictions']))
                    else:
                        statuses.append(r.status_code)

    try:
        _wait_ready(url, proc)
        threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        while len(answered) < 300:
            time.sleep(0.01)
        fb = httpx.post(
            url + '/feedback', json={'feedback': [{'request_id': answered[0][0], 'label': 1, 'source': 'call-centre'}]}
        )
        assert fb.status_code == 202 and fb.json() == {'accepted': 1}, fb.text
        proc.send_signal(signal.SIGTERM)  # while the clients keep sending
        for t in threads:
            t.join(60)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-2000:]
    assert f'on http://127.0.0.1:{port}' in out and 'stopped: ' in out and 'NOT written' not in out and statuses == []
    assert 300 <= len(answered) < 8 * 400, 'SIGTERM arrived while requests were being sent'
    assert not list(scratch.glob('mlops-nb-serve-*')), 'the models the server downloaded are removed when it stops'

    from mlops_nb.serving.logreader import read_predictions

    log = read_predictions(f'sqlite:///{served.project / "predictions.db"}')
    missing = {rid for rid, _, _ in answered} - set(log.request_id)
    assert not missing, f'{len(missing)} answered requests are missing from the log'
    assert len(log) == sum(len(rows) for _, rows, _ in answered), 'one row per prediction, nothing else'
    rid, rows, preds = answered[0]
    first = log[log.request_id == rid]
    assert (
        first.prediction.tolist() == preds
        and first.score.between(0, 1).all()
        and first.row.tolist() == list(range(len(rows)))
    )
    assert first.AGEP.tolist() == [r[served.columns.index('AGEP')] for r in rows]
    assert (log.model_version == '1').all() and log.latency_ms.gt(0).all()

    labels = tmp_path / 'labels.csv'
    pd.DataFrame({'request_id': [answered[1][0], answered[2][0], 'no-such-request'], 'label': [0, 1, 1]}).to_csv(
        labels, index=False
    )
    res = cli(served.project, 'feedback', str(labels), '--source', 'survey', '--independent')
    assert res.returncode == 0 and '3 labels recorded: 2 match logged predictions, 1 do not' in res.stdout, (
        res.stdout + res.stderr
    )
    res = cli(served.project, 'predictions', 'export', '--since', '1h', '--to', str(tmp_path / 'out.parquet'))
    assert res.returncode == 0, res.stderr
    out = pd.read_parquet(tmp_path / 'out.parquet')
    assert len(out) == len(log) and {
        'request_id',
        'row',
        'time',
        'model_version',
        'prediction',
        'score',
        'shadow_prediction',
        'label',
        'label_source',
        'label_independent',
        'AGEP',
        'SCHL',
    } <= set(out.columns)
    labelled = out[out.label.notna() & (out.row == 0)].set_index('request_id')
    assert len(labelled) == 3
    assert labelled.loc[rid, 'label'] == 1 and labelled.loc[rid, 'label_source'] == 'call-centre'
    assert not labelled.loc[rid, 'label_independent'], 'labels that do not say where they come from are not independent'
    assert labelled.loc[[answered[1][0], answered[2][0]], 'label_independent'].all()
    assert set(labelled.loc[[answered[1][0], answered[2][0]], 'label_source']) == {'survey'}
    bad = cli(served.project, 'predictions', 'export', '--since', 'yesterday', '--to', str(tmp_path / 'x.parquet'))
    assert bad.returncode == 1 and "cannot read the time 'yesterday'" in bad.stderr


def test_regressor_pipelines_answer_numbers_without_scores(served, tmp_path):
    "A regression pipeline (boosting: the fast path; ridge: the general one) answers MLflow's numbers, and logs no score"
    import mlflow.pyfunc
    import mlflow.sklearn
    import numpy as np
    import skops.io
    from concurrent.futures import ThreadPoolExecutor
    from mlflow.models import infer_signature
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler
    from mlops_nb.registry.models import pip_requirements
    from mlops_nb.serving.logreader import read_predictions
    from mlops_nb.serving.app import ModelServer
    from mlops_nb.serving.config import ServeConfig
    from mlops_nb.serving.models import load_model_dir

    features = json.loads((served.project / 'runs/run1/artifacts/03_features/features.json').read_text())
    cat, num = features['categorical'], features['numeric']
    X = pd.DataFrame(served.rows, columns=served.columns)
    y = 1000 + 25 * pd.to_numeric(X['SCHL']).fillna(0) + 3 * X['AGEP'].fillna(40) + (X['SEX'] == '2') * 50
    pipes = {
        'boosting': Pipeline(
            [
                (
                    'preprocess',
                    ColumnTransformer(
                        [
                            (
                                'categorical',
                                OrdinalEncoder(
                                    handle_unknown='use_encoded_value',
                                    unknown_value=np.nan,
                                    encoded_missing_value=np.nan,
                                ),
                                cat,
                            ),
                            ('numeric', 'passthrough', num),
                        ]
                    ),
                ),
                (
                    'model',
                    HistGradientBoostingRegressor(max_iter=30, categorical_features=[c in cat for c in cat + num]),
                ),
            ]
        ),
        'ridge': Pipeline(
            [
                (
                    'preprocess',
                    ColumnTransformer(
                        [
                            ('categorical', OneHotEncoder(handle_unknown='ignore'), cat),
                            ('numeric', make_pipeline(SimpleImputer(strategy='median'), StandardScaler()), num),
                        ]
                    ),
                ),
                ('model', Ridge()),
            ]
        ),
    }
    rows = served.rows[:300]
    for kind, pipe in pipes.items():
        pipe.fit(X, y)
        path = tmp_path / kind
        mlflow.sklearn.save_model(
            pipe,
            path,
            signature=infer_signature(X.head(5), pipe.predict(X.head(5))),
            input_example=X.head(5),
            pip_requirements=pip_requirements(),
            serialization_format='skops',
            skops_trusted_types=skops.io.get_untrusted_types(data=skops.io.dumps(pipe)),
        )
        model = load_model_dir(path, 'regressor', '1')
        assert model.fast == (kind == 'boosting'), kind
        theirs = mlflow.pyfunc.load_model(str(path)).predict(pd.DataFrame(rows, columns=served.columns)).tolist()
        server = ModelServer(
            ServeConfig('regressor', log_url=f'sqlite:///{tmp_path}/{kind}.db', reload_interval_s=3600),
            None,
            {'champion': model},
        )
        with running(server) as url:
            r = httpx.post(url + '/invocations', json=_split(served, rows), timeout=60)
            assert r.status_code == 200, r.text
            ours = r.json()['predictions']
            assert ours == theirs and all(isinstance(v, float) for v in ours), (
                f'{kind}: predictions differ from MLflow pyfunc'
            )
            assert len(set(ours)) > 10, 'the numbers depend on the input'

            def one(i):  # single rows from 8 clients: scored together in batches
                return httpx.post(url + '/invocations', json=_split(served, rows[i : i + 1]), timeout=30).json()[
                    'predictions'
                ]

            with ThreadPoolExecutor(8) as ex:
                singles = list(ex.map(one, range(40)))
            assert [s[0] for s in singles] == theirs[:40]
        log = read_predictions(server.cfg.log_url)
        assert len(log) == 300 + 40 and log.score.isna().all() and log.prediction.tolist()[:300] == theirs
        with __import__('sqlite3').connect(tmp_path / f'{kind}.db') as db:
            assert db.execute('select count(*) from predictions where scores is not null').fetchone()[0] == 0
