"""The stage cache: a run redoes exactly the stages whose notebook, parameters, inputs, data or packages changed."""

import json
import re

import nbformat
import pytest

from conftest import cli, make_project, manifests
from mlops_nb.stages.sources import bundled

STAGES = ['ingest', 'validate', 'features', 'train', 'evaluate']


@pytest.fixture(scope='module')
def project(tmp_path_factory):
    "A project on a CSV of its own (so that a byte of it can change), without audit and register; one run done"
    project = make_project(tmp_path_factory.mktemp('cache'))
    bundled('acs_employment_ma').sample(2000, random_state=0).to_csv(project / 'data.csv', index=False)
    text = (project / 'settings.ini').read_text()
    text = text.replace('source = acs_employment_ma', 'source = data.csv')
    text = re.sub(r'^stages = .*$', 'stages = ' + ', '.join(STAGES), text, flags=re.M)
    (project / 'settings.ini').write_text(text)
    run(project)
    return project


def run(project, *args):
    res = cli(project, 'run', *args)
    assert res.returncode == 0, res.stdout + res.stderr
    return res, manifests(project)[-1]


def reused(m):
    "`{stage: run it was reused from}` of the stages of `m` that were not executed"
    return {r['name']: r['cached_from']['run'] for r in m['stages'] if r.get('cached_from')}


def outputs(project, m, stage):
    return next(r for r in m['stages'] if r['name'] == stage)['outputs']


def test_one_parameter_reruns_only_the_stages_it_reaches(project):
    first = manifests(project)[0]
    assert reused(first) == {} and all(r['cache_key'] for r in first['stages'])
    res, m = run(project, '-p', 'train.learning_rate=0.05')
    assert reused(m) == {s: first['run_id'] for s in STAGES[:3]}
    assert re.search(rf'\[3/5\] features +reused .* from {first["run_id"]}', res.stdout)
    assert re.search(r'\[4/5\] train +completed', res.stdout)
    old, new = (project / 'runs' / r / 'artifacts/03_features/train.parquet' for r in (first['run_id'], m['run_id']))
    assert old.stat().st_ino == new.stat().st_ino, 'hard links, not copies'
    assert outputs(project, m, 'features') == outputs(project, first, 'features')
    assert m['summary']['metrics'] and m['status'] == 'completed'

    show = cli(project, 'show', m['run_id'])
    assert 'reused from' in show.stdout and re.search(rf'features +completed .* {first["run_id"]}', show.stdout)
    diff = cli(project, 'diff', first['run_id'], m['run_id'])
    assert (
        f'ingest from {first["run_id"]}' in diff.stdout
        and 'likely cause: train.learning_rate: 0.1 -> 0.05' in diff.stdout
    )
    report = (project / 'runs' / m['run_id'] / 'report.html').read_text()
    assert f'reused from {first["run_id"]}' in report


def test_an_unchanged_run_reuses_every_stage(project):
    first = manifests(project)[0]
    _, m = run(project)
    assert reused(m) == {s: first['run_id'] for s in STAGES}, 'the same settings as the first run: all of it'
    assert m['summary']['metrics'] == first['summary']['metrics']
    _, fresh = run(project, '--no-cache')
    assert reused(fresh) == {}
    for s in ('ingest', 'validate', 'features'):
        assert outputs(project, fresh, s) == outputs(project, first, s), (
            f'{s}: a reused stage has the files a fresh execution writes'
        )
    assert fresh['summary']['metrics'] == first['summary']['metrics']


def test_one_character_of_a_notebook_reruns_that_stage_alone(project):
    path = project / 'notebooks' / 'stages' / '03_features.ipynb'
    original = path.read_text()
    nb = nbformat.reads(original, as_version=4)
    nb.cells[0].source += '.'
    nbformat.write(nb, path)
    try:
        _, m = run(project)
    finally:
        path.write_text(original)
    assert set(reused(m)) == {'ingest', 'validate', 'train', 'evaluate'}, (
        'features wrote the same files, so train is reused'
    )


def test_one_byte_of_the_data_reruns_everything(project):
    data = project / 'data.csv'
    original = data.read_bytes()
    lines = original.decode().splitlines(keepends=True)
    header = lines[0].split(',')
    row = lines[1].split(',')
    row[header.index('AGEP')] = str(float(row[header.index('AGEP')]) + 1)
    data.write_text(''.join([lines[0], ','.join(row), *lines[2:]]))
    try:
        _, m = run(project)
    finally:
        data.write_bytes(original)
    assert reused(m) == {}


def test_a_package_version_reruns_everything(project, tmp_path, monkeypatch):
    fake = tmp_path / 'skops-0.0.1.dist-info'
    fake.mkdir()
    (fake / 'METADATA').write_text('Metadata-Version: 2.1\nName: skops\nVersion: 0.0.1\n')
    monkeypatch.setenv('PYTHONPATH', str(tmp_path))  # importlib.metadata finds this skops first
    _, m = run(project)
    assert m['packages']['skops'] == '0.0.1' and reused(m) == {}


def test_a_deleted_or_truncated_cached_file_is_executed_again_with_a_warning(project):
    ms = manifests(project)
    newest = next(m for m in reversed(ms) if 'validate' in reused(m))
    (project / 'runs' / newest['run_id'] / 'artifacts/02_validate/schema.json').unlink()
    res, m = run(project)
    assert (
        f'stage validate of run {newest["run_id"]} cannot be reused (artifacts/02_validate/schema.json is gone)'
        in res.stdout
    )
    linked = next(r for r in m['stages'] if r['name'] == 'validate')['cached_from']['linked_from']
    assert linked != newest['run_id'], 'an intact earlier execution of the same key is used instead'

    digest = outputs(project, ms[0], 'features')['artifacts/03_features/train.parquet']
    for m in ms:  # every copy: the first run's file and the runs that link it, and the run that wrote its own
        if outputs(project, m, 'features')['artifacts/03_features/train.parquet'] == digest:
            train = project / 'runs' / m['run_id'] / 'artifacts/03_features/train.parquet'
            train.chmod(0o644)
            train.write_bytes(train.read_bytes()[:100])
    res, m = run(project)
    assert 'artifacts/03_features/train.parquet changed since it was written): running it again' in res.stdout
    assert 'features' not in reused(m) and {'ingest', 'validate', 'train'} <= set(reused(m))
    assert outputs(project, m, 'features')['artifacts/03_features/train.parquet'] == digest, (
        'executed again, it writes what it wrote first'
    )


def test_after_a_failure_the_next_run_reuses_what_completed(project):
    path = project / 'notebooks' / 'stages' / '05_evaluate.ipynb'
    original = path.read_text()
    nb = nbformat.reads(original, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell('raise RuntimeError("simulated failure")'))
    nbformat.write(nb, path)
    res = cli(project, 'run')
    path.write_text(original)
    assert res.returncode == 1 and 'completed stages whose inputs did not change are reused' in res.stderr
    failed = manifests(project)[-1]
    assert failed['status'] == 'failed' and json.dumps(failed).count('"cache_key"') == len(STAGES)
    _, m = run(project)
    assert set(reused(m)) == set(STAGES), 'the fixed notebook is the one that ran before the failure'


def test_reproduce_executes_a_run_again_and_compares_every_number(project):
    first = manifests(project)[0]
    res = cli(project, 'reproduce', first['run_id'])
    assert res.returncode == 0, res.stdout + res.stderr
    m = manifests(project)[-1]
    assert m['kind'] == 'reproduce' and reused(m) == {} and m['trigger']['run'] == first['run_id']
    assert re.search(r'reproduced .*: (\d+) of \1 numbers equal', res.stdout), res.stdout
    assert re.search(r'evaluate\.roc_auc +0\.\d{4} +0\.\d{4}', res.stdout) and 'DIFFERS' not in res.stdout

    data = project / 'data.csv'
    original = data.read_bytes()
    data.write_bytes(original.replace(b'\n', b'\r\n', 1))
    try:
        res = cli(project, 'reproduce', first['run_id'])
    finally:
        data.write_bytes(original)
    assert res.returncode == 1 and 'Traceback' not in res.stderr
    assert res.stderr.strip().splitlines() == [
        f'error: cannot reproduce {first["run_id"]}: the source data changed since the run: {data}'
    ]
    assert manifests(project)[-1]['run_id'] == m['run_id'], 'refused before a run folder is made'

    path = project / 'notebooks' / 'stages' / '04_train.ipynb'
    original = path.read_text()
    path.write_text(original.replace('"cells": [', '"cells": [ ', 1))
    try:
        res = cli(project, 'reproduce', first['run_id'])
    finally:
        path.write_text(original)
    assert res.returncode == 1 and 'notebooks/stages/04_train.ipynb changed since the run' in res.stderr
