"""A project of one's own: `mlops-nb init` from a wheel in a folder outside the repository, on data that is not ours;
stages, model and preprocessing edited as a data scientist would; bad inputs refused before anything is written."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
from conftest import MLOPS_NB, ROOT
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

RUN = ['run', '--approve-as', 'tester']


def mlops(cwd: Path, *args, exe=MLOPS_NB, timeout=900):
    "`mlops-nb` in `cwd` in a fresh process, with no store or path of the test's own leaking in"
    env = {k: v for k, v in os.environ.items() if not k.startswith('MLFLOW_') and k != 'PYTHONPATH'}
    return subprocess.run(
        [*exe, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**env, 'PYTHONWARNINGS': 'ignore'},
        check=False,
    )


def ok(res):
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    return res


def refused(res, *words):
    "A clear one-line error naming the problem, a non-zero exit, no traceback"
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith('error:')]
    assert res.returncode != 0 and lines, res.stdout[-2000:] + res.stderr[-2000:]
    assert 'Traceback' not in res.stderr, res.stderr[-2000:]
    assert all(w in res.stderr for w in words), res.stderr
    return res.stderr


def tree(folder: Path):
    "Every file under `folder` with its bytes: to show that nothing was written or changed"
    return (
        {p.relative_to(folder): p.read_bytes() for p in folder.rglob('*') if p.is_file()} if folder.exists() else None
    )


def last_manifest(project: Path):
    return json.loads(max((project / 'runs').glob('2*/manifest.json')).read_text())


def synthetic(path: Path, target: str = 'risk', n: int = 600, seed: int = 0):
    """A credit-like table without an id or a time column: names with spaces, slashes and dots, text categories,
    missing values; `risk` coded 1 = good / 2 = bad, `income` as '<=50K'/'>50K', `price` a number"""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            'Credit amount': rng.gamma(2, 1500, n).round(0),
            'Duration (months)': rng.integers(6, 60, n),
            'Purpose/type': rng.choice(['car', 'tv', 'education', None], n),
            'Sex': rng.choice(['f', 'm'], n),
            'acct.status': rng.choice(['A11', 'A12', 'A13'], n),
            'Age': rng.integers(19, 75, n).astype(float),
        }
    )
    df.loc[rng.random(n) < 0.05, 'Age'] = np.nan
    bad = rng.random(n) < 1 / (
        1 + np.exp(-((df['Duration (months)'] - 30) / 10 + (df['acct.status'] == 'A11') * 1.5 - 0.5))
    )
    if target == 'risk':
        df['risk'] = np.where(bad, 2, 1)
    elif target == 'income':
        df['income'] = np.where(bad, '>50K', '<=50K')
    else:
        df['price'] = (
            df['Credit amount'] * 0.1
            + df['Duration (months)'] * 3
            + (df['acct.status'] == 'A11') * 80
            + rng.normal(0, 10, n)
        )
    df.to_csv(path, index=False)
    return path


# --- editing a project, as a data scientist does in JupyterLab ---


def add_stage(project: Path, body: str | None = None, name: str = '035_my_check.ipynb', parameters: bool = True):
    "A stage of the project's own: a parameters cell, then code that reads an earlier stage's table and writes its own"
    params = "run_dir: str = '../../runs/interactive'  # run folder\nmin_amount: float = 0.0  # training rows with a smaller credit amount are dropped"
    code = body or textwrap.dedent("""\
        from mlops_nb.core.project import stage_context
        ctx = stage_context(run_dir, 'my_check')
        train = ctx.read('train.parquet')
        kept = train[train['Credit amount'] >= min_amount]
        ctx.write('train.parquet', kept)
        ctx.write('result.json', {'rows_in': len(train), 'rows_kept': len(kept)})""")
    nb = new_notebook(
        cells=[
            new_markdown_cell('# My check\nDrop training rows with a small credit amount.'),
            new_code_cell(params, metadata={'tags': ['parameters']} if parameters else {}),
            new_code_cell(code),
        ]
    )
    nb.metadata['kernelspec'] = {'name': 'python3', 'display_name': 'Python 3', 'language': 'python'}
    nbformat.write(nb, project / 'notebooks' / 'stages' / name)


def replace_cell(notebook: Path, tag: str, source: str):
    nb = nbformat.read(notebook, as_version=4)
    next(c for c in nb.cells if tag in c.metadata.get('tags', [])).source = textwrap.dedent(source)
    nbformat.write(nb, notebook)


def edit_project(project: Path):
    "my_check between features and train, a random forest, preprocessing with a function of the notebook and one of a module"
    add_stage(project)
    (project / 'helpers.py').write_text('import numpy as np\n\n\ndef clip_negative(X):\n    return np.maximum(X, 0)\n')
    stages = project / 'notebooks' / 'stages'
    replace_cell(
        stages / '04_train.ipynb',
        'model',
        """\
        from sklearn.ensemble import RandomForestClassifier

        def make_model():
            return RandomForestClassifier(n_estimators=60, min_samples_leaf=3, random_state=0)""",
    )
    replace_cell(
        stages / '03_features.ipynb',
        'preprocessing',
        """\
        import numpy as np
        from sklearn.compose import ColumnTransformer
        from sklearn.impute import SimpleImputer
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import FunctionTransformer, OneHotEncoder
        from helpers import clip_negative

        def log_amount(X):
            return np.log1p(X)

        def make_preprocessing(categorical, numeric):
            numbers = make_pipeline(SimpleImputer(), FunctionTransformer(clip_negative), FunctionTransformer(log_amount))
            return ColumnTransformer([('categorical', OneHotEncoder(handle_unknown='ignore'), categorical), ('numeric', numbers, numeric)])""",
    )
    s = (project / 'settings.ini').read_text()
    assert 'stages = ingest, validate, features, train,' in s
    s = s.replace(
        'stages = ingest, validate, features, train,', 'stages = ingest, validate, features, my_check, train,'
    )
    (project / 'settings.ini').write_text(s + '\n[my_check]\nmin_amount = 100\n')


# --- the champion through plain MLflow, mlops-nb serve and mlflow models serve ---

PREDICT = textwrap.dedent("""\
    "Run in a folder of its own, with no project module on the path: the model carries what it needs"
    import json, sys, time
    import httpx, mlflow, numpy as np, pandas as pd
    uri, name, snapshot, csv_file, ports = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:]
    mlflow.set_tracking_uri(uri)
    model = mlflow.pyfunc.load_model(f'models:/{name}@champion')
    snap = pd.read_parquet(snapshot).head(300)
    text = [c for c in snap.columns if not pd.api.types.is_numeric_dtype(snap[c]) or isinstance(snap[c].dtype, pd.CategoricalDtype)]
    as_categories = snap.astype({c: 'category' for c in text})
    rows = pd.read_csv(csv_file).head(300)
    records = json.loads(rows.to_json(orient='records'))
    out = {'snapshot': model.predict(snap), 'categories': model.predict(as_categories), 'csv': model.predict(rows),
           'records': model.predict(pd.DataFrame(records))}
    for port in ports:
        for _ in range(600):
            try:
                if httpx.get(f'http://127.0.0.1:{port}/ping', timeout=2).status_code == 200: break
            except httpx.HTTPError: pass
            time.sleep(0.2)
        for what, frame in (('snapshot', snap), ('csv', rows)):
            inputs = frame[model.metadata.get_input_schema().input_names()]  # our server refuses fields the model does not take
            body = json.dumps({'dataframe_records': json.loads(inputs.to_json(orient='records'))})
            r = httpx.post(f'http://127.0.0.1:{port}/invocations', content=body, headers={'content-type': 'application/json'}, timeout=60)
            assert r.status_code == 200, (port, what, r.text[:500])
            out[f'{what} {port}'] = r.json()['predictions']
    print(json.dumps({k: np.asarray(v).tolist() for k, v in out.items()}))
""")


def free_port():
    import socket

    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def check_champion(project: Path, model: str, csv_file: Path, bin_dir: Path, tmp: Path):
    "Plain pyfunc on the snapshot (categories), the CSV (ints, strings) and JSON records; mlops-nb serve and mlflow models serve agree"
    uri = f'sqlite:///{project}/mlflow.db'
    snapshot = project / 'runs' / last_manifest(project)['run_id'] / 'artifacts/01_ingest/data.parquet'
    ours, theirs = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith('MLFLOW_') and k != 'PYTHONPATH'}
    env.update(PATH=f'{bin_dir}{os.pathsep}{env["PATH"]}', PYTHONWARNINGS='ignore', MLFLOW_TRACKING_URI=uri)
    tmp.mkdir(exist_ok=True)
    with open(tmp / 'serve.log', 'w') as out_ours, open(tmp / 'mlflow-serve.log', 'w') as out_theirs:
        procs = [
            subprocess.Popen(
                [str(bin_dir / 'mlops-nb'), 'serve', '--port', str(ours)],
                cwd=project,
                env=env,
                stdout=out_ours,
                stderr=subprocess.STDOUT,
            ),
            subprocess.Popen(
                [
                    str(bin_dir / 'mlflow'),
                    'models',
                    'serve',
                    '-m',
                    f'models:/{model}@champion',
                    '--env-manager',
                    'local',
                    '-h',
                    '127.0.0.1',
                    '-p',
                    str(theirs),
                ],
                cwd=tmp,
                env=env,
                stdout=out_theirs,
                stderr=subprocess.STDOUT,
            ),
        ]
        try:
            (tmp / 'predict.py').write_text(PREDICT)
            res = subprocess.run(
                [
                    str(bin_dir / 'python'),
                    'predict.py',
                    uri,
                    model,
                    str(snapshot),
                    str(csv_file),
                    str(ours),
                    str(theirs),
                ],
                cwd=tmp,
                env=env,
                check=False,
                capture_output=True,
                text=True,
                timeout=600,
            )
        finally:
            for p in procs:
                p.terminate()
                p.wait(30)
    assert res.returncode == 0, (
        res.stderr[-3000:] + (tmp / 'serve.log').read_text()[-2000:] + (tmp / 'mlflow-serve.log').read_text()[-2000:]
    )
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out['csv'] == out['records'] == out[f'csv {ours}'] == out[f'csv {theirs}'], out
    assert out['snapshot'] == out['categories'] == out[f'snapshot {ours}'] == out[f'snapshot {theirs}'], out
    assert len(out['csv']) == len(out['snapshot']) == 300
    return out


# --- the must-show: a wheel, a fresh environment, folders outside the repository ---


@pytest.fixture(scope='module')
def wheel_env(tmp_path_factory):
    "The package built as a wheel and installed, with its dependencies, into a new virtual environment"
    tmp = tmp_path_factory.mktemp('wheel')
    ok(
        subprocess.run(
            [sys.executable, '-m', 'pip', 'wheel', '--no-deps', '-q', '-w', str(tmp / 'dist'), str(ROOT)],
            check=False,
            capture_output=True,
            text=True,
            timeout=600,
        )
    )
    wheel = next((tmp / 'dist').glob('mlops_nb-*.whl'))
    ok(
        subprocess.run(
            [sys.executable, '-m', 'venv', str(tmp / 'venv')], check=False, capture_output=True, text=True, timeout=300
        )
    )
    pip = [
        str(tmp / 'venv' / 'bin' / 'python'),
        '-m',
        'pip',
        'install',
        '-q',
        '-c',
        str(ROOT / '.ci' / 'constraints.txt'),
    ]
    ok(
        subprocess.run([*pip, f'{wheel}[serve]', 'httpx'], check=False, capture_output=True, text=True, timeout=1200)
    )  # serves too
    where = ok(
        subprocess.run(
            [str(tmp / 'venv' / 'bin' / 'python'), '-c', 'import mlops_nb; print(mlops_nb.__file__)'],
            check=False,
            capture_output=True,
            text=True,
            cwd=tmp,
        )
    ).stdout
    assert str(tmp / 'venv') in where, f'the wheel, not the repository: {where}'
    return tmp / 'venv' / 'bin'


@pytest.mark.slow
def test_wheel_init_run_add_a_stage_and_change_the_model(wheel_env, tmp_path):
    exe = [str(wheel_env / 'mlops-nb')]
    assert not str(tmp_path).startswith(str(ROOT))
    # the bundled default data
    ok(mlops(tmp_path, 'init', 'demo', exe=exe))
    demo = tmp_path / 'demo'
    assert sorted(p.name for p in (demo / 'notebooks' / 'stages').glob('*.ipynb'))[:3] == [
        '01_ingest.ipynb',
        '02_validate.ipynb',
        '03_features.ipynb',
    ]
    assert {'runs/', 'mlflow.db', 'mlartifacts/', 'predictions.db*'} <= set((demo / '.gitignore').read_text().split())
    out = ok(mlops(demo, *RUN, '-p', 'ingest.max_rows=2000', '-p', 'audit.n_boot=50', exe=exe)).stdout
    assert 'model    demo version 1, approved by tester: champion' in out, out
    from mlops_nb.stages.sources import bundled

    bundled('acs_employment_ma').head(300).to_csv(
        tmp_path / 'acs.csv', index=False
    )  # as a user's CSV: codes read as ints
    check_champion(demo, 'demo', tmp_path / 'acs.csv', wheel_env, tmp_path / 'demo-clients')
    # a CSV of one's own: 1/2 labels, no id, no time
    data = synthetic(tmp_path / 'credit.csv')
    ok(mlops(tmp_path, 'init', 'credit', '--data', str(data), '--target', 'risk', exe=exe))
    credit = tmp_path / 'credit'
    text = (credit / 'settings.ini').read_text()
    assert 'positive_label = 1\n' in text or 'positive_label = 2\n' in text, text
    assert '\nid_column =\n' in text and '\ntime_column =\n' in text and 'candidates by name: Sex, Age' in text
    ok(mlops(credit, *RUN, exe=exe))
    first = last_manifest(credit)
    assert [r['name'] for r in first['stages']] == [
        'ingest',
        'validate',
        'features',
        'train',
        'evaluate',
        'audit',
        'register',
    ]
    assert all(r['source']['template'] == 'same' for r in first['stages'])
    # then a stage of one's own, a random forest and preprocessing with code of the notebook and of a module of the project
    edit_project(credit)
    out = ok(mlops(credit, *RUN, '-p', 'my_check.min_amount=200', exe=exe)).stdout
    assert 'model    credit version 2, approved by tester: champion' in out, out
    m = last_manifest(credit)
    rec = {r['name']: r for r in m['stages']}
    assert list(rec) == ['ingest', 'validate', 'features', 'my_check', 'train', 'evaluate', 'audit', 'register']
    assert rec['my_check']['parameters']['min_amount'] == 200.0 and rec['my_check']['source']['template'] is None
    assert set(rec['my_check']['outputs']) == {
        'artifacts/035_my_check/train.parquet',
        'artifacts/035_my_check/result.json',
    }
    assert (
        rec['train']['inputs']['artifacts/035_my_check/train.parquet']
        == rec['my_check']['outputs']['artifacts/035_my_check/train.parquet']
    )
    assert rec['train']['source']['template'] == 'edited' and rec['features']['source']['template'] == 'edited'
    assert rec['train']['result']['estimator'] == 'sklearn.ensemble._forest.RandomForestClassifier'
    assert rec['train']['result']['estimator_params']['n_estimators'] == 60
    kept = json.loads((credit / 'runs' / m['run_id'] / 'artifacts/035_my_check/result.json').read_text())
    assert kept['rows_kept'] < kept['rows_in']
    executed = nbformat.read(credit / 'runs' / m['run_id'] / '04_train.ipynb', as_version=4)
    assert any(
        'RandomForestClassifier' in str(o.get('data', {})) for c in executed.cells for o in c.get('outputs', [])
    ), 'the fitted pipeline is shown'
    shown = ok(mlops(credit, 'show', m['run_id'], exe=exe)).stdout
    assert any(ln.split()[:3] == ['my_check', 'completed', 'own'] for ln in shown.splitlines()), shown
    assert any(ln.split()[:3] == ['train', 'completed', 'edited'] for ln in shown.splitlines()), shown
    diff = ok(mlops(credit, 'diff', first['run_id'], m['run_id'], exe=exe)).stdout
    assert "notebooks/stages/035_my_check.ipynb: the project's own stage" in diff, diff
    # mlflow records the estimator actually fitted
    env = {**os.environ, 'MLFLOW_TRACKING_URI': f'sqlite:///{credit}/mlflow.db'}
    code = "import mlflow, sys; r = mlflow.get_run(sys.argv[1]); print(r.data.params.get('estimator'))"
    got = ok(
        subprocess.run(
            [str(wheel_env / 'python'), '-c', code, rec['train']['mlflow_run_id']],
            check=False,
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
        )
    )
    assert 'RandomForestClassifier' in got.stdout, got.stdout
    check_champion(credit, 'credit', data, wheel_env, tmp_path / 'clients')


# --- any tabular dataset by settings alone, from the repository's environment ---


@pytest.mark.slow
@pytest.mark.parametrize('target', ['risk', 'income', 'price'])
def test_a_csv_of_ones_own_end_to_end(target, tmp_path):
    "1/2 labels, string labels, a regression target; no id, no time column; names with spaces, slashes and dots"
    data = synthetic(tmp_path / f'{target}.csv', target)
    ok(mlops(tmp_path, 'init', 'p', '--data', str(data), '--target', target))
    project = tmp_path / 'p'
    out = ok(mlops(project, *RUN)).stdout
    assert 'model    p version 1, approved by tester: champion' in out, out
    m = last_manifest(project)
    assert m['settings']['data']['task'] == ('regression' if target == 'price' else 'classification')
    if target == 'income':
        assert m['settings']['data']['positive_label'] == '>50K'
    holdout = pd.read_parquet(project / 'runs' / m['run_id'] / 'artifacts/05_evaluate/predictions.parquet')
    assert len(holdout) == 120 and 'row' in holdout.columns, 'row numbers stand in for the missing id'
    if target == 'income':
        check_champion(project, 'p', data, Path(sys.executable).parent, tmp_path / 'clients')


# --- bad inputs: one clear line, a non-zero exit, nothing written or changed ---


def test_init_refuses_a_folder_that_is_not_empty_and_a_target_that_is_no_column(tmp_path):
    (tmp_path / 'taken').mkdir()
    (tmp_path / 'taken' / 'notes.txt').write_text('mine')
    before = tree(tmp_path)
    refused(mlops(tmp_path, 'init', 'taken'), 'is not empty')
    data = synthetic(tmp_path / 'credit.csv')
    before = tree(tmp_path)
    refused(
        mlops(tmp_path, 'init', 'new', '--data', str(data), '--target', 'Risk'),
        "--target 'Risk' is not a column",
        "(did you mean 'risk'?)",
    )
    assert tree(tmp_path) == before and not (tmp_path / 'new').exists()
    ok(mlops(tmp_path, 'init', 'p'))
    before = tree(tmp_path / 'p')
    refused(mlops(tmp_path, 'init', 'p'), 'exists: init never overwrites a file')
    assert tree(tmp_path / 'p') == before


@pytest.fixture
def csv_project(tmp_path):
    data = synthetic(tmp_path / 'credit.csv')
    ok(mlops(tmp_path, 'init', 'p', '--data', str(data), '--target', 'risk'))
    return tmp_path / 'p'


def _settings(project: Path, old: str, new: str):
    s = (project / 'settings.ini').read_text()
    assert old in s, old
    (project / 'settings.ini').write_text(s.replace(old, new))


@pytest.mark.parametrize('case', ['positive_label', 'unknown_stage', 'no_parameters_cell', 'column'])
def test_a_run_refuses_settings_the_data_or_notebooks_cannot_meet(csv_project, case):
    p = csv_project
    if case == 'positive_label':
        _settings(p, 'positive_label = ', 'positive_label = bad\n# was: ')
        words = ["data.positive_label = 'bad' is not a label of 'risk'; its labels are 1, 2"]
    elif case == 'unknown_stage':
        _settings(p, 'stages = ingest, validate,', 'stages = ingest, validat,')
        words = ["names 'validat' (did you mean 'validate'?)"]
    elif case == 'no_parameters_cell':
        add_stage(p, parameters=False)
        _settings(p, 'stages = ingest, validate, features,', 'stages = ingest, validate, features, my_check,')
        words = ['035_my_check.ipynb', 'parameters']
    else:
        _settings(p, 'slice_columns =', 'slice_columns = SEX')
        words = ["evaluate.slice_columns names 'SEX', which is not a column of", "(did you mean 'Sex'?)"]
    before = tree(p)
    refused(mlops(p, *RUN), *words)
    assert tree(p) == before, 'nothing written: no run folder, no MLflow store'
