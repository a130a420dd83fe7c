"""Data contracts: every kind of bad input the ingest stage meets, every anomaly kind, the champion's schema,
`mlops-nb data versions`, and the data version as MLflow's dataset input."""

import gzip
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import cli, make_project, manifests
from mlops_nb.core.basics import MlopsError
from mlops_nb.stages.data_version import data_version, log_dataset_input
from mlops_nb.stages.data import ingest
from mlops_nb.core.stage import get_stage
from mlops_nb.stages.anomalies import SEVERITIES, format_anomaly, validate_batch
from mlops_nb.stages.contract import infer_schema, load_champion_schema
from mlops_nb.stages.validate import validate

TARGET = 'employed'


def ingest_fails(tmp_path, source, **kw):
    "Ingest `source` into a fresh run folder, expecting an MlopsError: its message, after checking nothing was written"
    run = Path(tempfile.mkdtemp(prefix='run', dir=tmp_path))
    with pytest.raises(MlopsError) as e:
        ingest(run, source=str(source), **kw)
    written = [p.relative_to(run) for p in run.rglob('*') if p.is_file()] if run.exists() else []
    assert written == [], f'a failed ingest left {written}'
    return str(e.value)


def ingest_ok(tmp_path, source, **kw):
    "Ingest `source` into a fresh run folder: `(run folder, result)`, after checking the version is the snapshot's"
    run = Path(tempfile.mkdtemp(prefix='run', dir=tmp_path))
    r = ingest(run, source=str(source), **kw)
    snap = pd.read_parquet(run / 'artifacts/01_ingest/data.parquet')
    assert (
        data_version(snap)
        == r.version['data_version']
        == json.loads((run / 'artifacts/01_ingest/data_version.json').read_text())['data_version']
    )
    assert [p.name for p in run.rglob('.*')] == [], 'no temporary files are left'
    return run, r


def validate_errors(run, **kw):
    "Validate the snapshot of `run` with no reference, expecting an MlopsError: its message"
    with pytest.raises(MlopsError) as e:
        validate(run, reference='none', **kw)
    return str(e.value)


# --- bad input, one test each ---------------------------------------------------------------------------------


def test_empty_file_is_an_error_naming_it(tmp_path):
    (tmp_path / 'batch.csv').write_bytes(b'')
    msg = ingest_fails(tmp_path, tmp_path / 'batch.csv')
    assert str(tmp_path / 'batch.csv') in msg and 'empty (0 bytes)' in msg


def test_header_only_is_an_error_naming_the_file_and_columns(tmp_path):
    (tmp_path / 'batch.csv').write_text('id,AGEP,employed\n')
    msg = ingest_fails(tmp_path, tmp_path / 'batch.csv')
    assert 'batch.csv: has a header (3 columns: id, AGEP, employed) but no data rows' in msg


def test_wrong_delimiter_is_detected_with_a_warning_or_is_an_error_when_one_is_set(tmp_path):
    (tmp_path / 'batch.csv').write_text('id;AGEP;employed\n1;30;0\n2;40;1\n')
    _, r = ingest_ok(tmp_path, tmp_path / 'batch.csv')
    assert r.version['columns'] == 3 and any("delimiter ';'" in w and 'batch.csv' in w for w in r.version['warnings'])
    msg = ingest_fails(tmp_path, tmp_path / 'batch.csv', delimiter='comma')
    assert (
        "batch.csv: the header is one column 'id;AGEP;employed' when split at ','" in msg
        and 'ingest.delimiter = semicolon' in msg
    )


def test_non_utf8_bytes_are_an_error_naming_line_and_column_until_the_encoding_is_set(tmp_path):
    (tmp_path / 'batch.csv').write_bytes('id,town,employed\n1,Lyon,0\n2,Orl\xe9ans,1\n'.encode('latin-1'))
    msg = ingest_fails(tmp_path, tmp_path / 'batch.csv')
    assert "batch.csv: line 3, column 'town': byte e9" in msg and 'ingest.encoding' in msg
    run, _ = ingest_ok(tmp_path, tmp_path / 'batch.csv', encoding='cp1252')
    assert pd.read_parquet(run / 'artifacts/01_ingest/data.parquet').town.tolist() == ['Lyon', 'Orléans']


def test_utf8_bom_is_skipped(tmp_path):
    (tmp_path / 'bom.csv').write_bytes('\ufeffid,AGEP,employed\n1,30,0\n2,40,1\n'.encode())
    (tmp_path / 'plain.csv').write_text('id,AGEP,employed\n1,30,0\n2,40,1\n')
    run, r = ingest_ok(tmp_path, tmp_path / 'bom.csv')
    assert list(pd.read_parquet(run / 'artifacts/01_ingest/data.parquet').columns) == ['id', 'AGEP', 'employed']
    assert ingest_ok(tmp_path, tmp_path / 'plain.csv')[1].version['data_version'] == r.version['data_version'], (
        'same data, same version'
    )


def test_excel_csv_with_quoted_newlines_loads(tmp_path):
    (tmp_path / 'excel.csv').write_bytes(
        b'\xef\xbb\xbfid,comment,employed\r\n1,"two\r\nlines, one comma",0\r\n2,plain,1\r\n'
    )
    run, r = ingest_ok(tmp_path, tmp_path / 'excel.csv', chunk_rows=1)
    df = pd.read_parquet(run / 'artifacts/01_ingest/data.parquet')
    assert df.comment.tolist() == ['two\r\nlines, one comma', 'plain'] and df.employed.tolist() == [0, 1]


def test_duplicate_column_names_are_an_error_naming_them(tmp_path):
    (tmp_path / 'batch.csv').write_text('id,AGEP,SEX,AGEP,employed\n1,30,1,31,0\n')
    msg = ingest_fails(tmp_path, tmp_path / 'batch.csv')
    assert "batch.csv: column 'AGEP' appears 2 times in the header (columns 2, 4)" in msg


def test_string_in_a_numeric_column_warns_at_ingest_and_stops_validate(tmp_path):
    (tmp_path / 'batch.csv').write_text('id,AGEP,employed\n1,30,0\n2,41,1\n3,abc,0\n4,52,1\n')
    run, r = ingest_ok(tmp_path, tmp_path / 'batch.csv')
    assert any(
        "batch.csv: column 'AGEP' holds numbers and 1 value that is not: 'abc', first at data row 3" in w
        for w in r.version['warnings']
    )
    msg = validate_errors(run)
    assert (
        "error: column 'AGEP': parse_failure: expected numbers (3 of 4 values are), found 1 values that are not: 'abc'"
        in msg
    )
    assert 'batch.csv' in msg, 'the error names the source'


def test_an_all_nan_column_loads_and_is_a_warning(tmp_path):
    (tmp_path / 'batch.csv').write_text('id,AGEP,SEX,employed\n1,30,,0\n2,41,,1\n3,52,,0\n')
    run, r = ingest_ok(tmp_path, tmp_path / 'batch.csv')
    assert any("column 'SEX' has no values" in w for w in r.version['warnings'])
    res = validate(run, reference='none')
    assert [(a['column'], a['kind'], a['severity']) for a in res.anomalies] == [('SEX', 'all_null', 'warning')]


def test_a_single_row_loads_with_a_warning_and_cannot_train(tmp_path):
    (tmp_path / 'batch.csv').write_text('id,AGEP,employed\n1,30,1\n')
    run, r = ingest_ok(tmp_path, tmp_path / 'batch.csv')
    assert r.version['rows'] == 1 and any('only 1 row' in w for w in r.version['warnings'])
    assert "error: column 'employed': single_class: expected two labels, found only 1 in 1 rows" in validate_errors(run)


def test_missing_target_stops_validate_naming_the_column(tmp_path):
    (tmp_path / 'batch.csv').write_text('id,AGEP\n1,30\n2,40\n')
    run, _ = ingest_ok(tmp_path, tmp_path / 'batch.csv')
    msg = validate_errors(run)
    assert (
        "error: column 'employed': missing_column: expected the target column, found no such column" in msg
        and 'batch.csv' in msg
    )


def test_a_path_that_does_not_exist_is_an_error(tmp_path):
    msg = ingest_fails(tmp_path, tmp_path / 'nowhere' / 'batch.csv')
    assert 'nowhere/batch.csv' in msg and 'not found' in msg and 'bundled dataset' in msg


def test_a_folder_with_no_data_files_is_an_error_saying_what_it_holds(tmp_path):
    (tmp_path / 'incoming').mkdir()
    (tmp_path / 'incoming' / 'README.md').write_text('batches arrive here')
    (tmp_path / 'incoming' / '_SUCCESS').write_text('')
    msg = ingest_fails(tmp_path, tmp_path / 'incoming')
    assert f'{tmp_path / "incoming"} has no data files' in msg and 'README.md' in msg


def test_a_gzip_csv_loads_with_the_version_of_the_plain_file(tmp_path):
    text = b'id,AGEP,employed\n1,30,0\n2,41,1\n3,52,0\n'
    (tmp_path / 'batch.csv.gz').write_bytes(gzip.compress(text))
    (tmp_path / 'plain.csv').write_bytes(text)
    run, r = ingest_ok(tmp_path, tmp_path / 'batch.csv.gz')
    assert (
        r.version['rows'] == 3
        and ingest_ok(tmp_path, tmp_path / 'plain.csv')[1].version['data_version'] == r.version['data_version']
    )
    big = gzip.compress(text + b''.join(b'%d,%d,%d\n' % (i, i * 7919 % 97, i % 2) for i in range(4, 20000)))
    (tmp_path / 'broken.csv.gz').write_bytes(big[: len(big) // 2])  # a download cut short
    assert 'broken.csv.gz: cannot be read as CSV (gzip)' in ingest_fails(tmp_path, tmp_path / 'broken.csv.gz')


def test_a_parquet_file_with_another_schema_than_its_siblings_is_an_error(tmp_path):
    d = tmp_path / 'parts'
    d.mkdir()
    pd.DataFrame({'id': [1, 2], 'AGEP': [30.0, 41.0], 'employed': [0, 1]}).to_parquet(d / 'part-0.parquet')
    pd.DataFrame({'id': [3], 'AGEP': ['fifty'], 'employed': [1]}).to_parquet(d / 'part-1.parquet')
    msg = ingest_fails(tmp_path, f'{d}/*.parquet')
    assert "part-1.parquet: column 'AGEP' is str, but float64 in" in msg and 'part-0.parquet' in msg
    pd.DataFrame({'id': [3], 'employed': [1]}).to_parquet(d / 'part-1.parquet')
    assert "part-1.parquet: has no column 'AGEP', which" in ingest_fails(tmp_path, d)
    pd.DataFrame({'id': [3], 'AGEP': [50], 'employed': [1]}).to_parquet(
        d / 'part-1.parquet'
    )  # int beside float: read as float
    run, r = ingest_ok(tmp_path, d)
    assert pd.read_parquet(run / 'artifacts/01_ingest/data.parquet').AGEP.tolist() == [30.0, 41.0, 50.0]
    assert any("part-1.parquet: column 'AGEP' is int64 here and float64" in w for w in r.version['warnings'])


# --- reading in chunks, folders, globs and URIs ----------------------------------------------------------------


@pytest.fixture(scope='module')
def acs_parts(tmp_path_factory):
    "The ACS 2015 data as three CSV files and three Parquet files, with the whole DataFrame"
    from mlops_nb.stages.sources import bundled

    df = bundled('acs_employment_ma', '2015').head(3000)
    d = tmp_path_factory.mktemp('parts')
    for i, part in enumerate(np.array_split(np.arange(len(df)), 3)):
        df.iloc[part].to_csv(d / f'part-{i}.csv', index=False)
        df.iloc[part].to_parquet(d / f'part-{i}.parquet', index=False)
    return d, df


def test_chunked_reading_of_a_glob_gives_the_version_of_one_read(tmp_path, acs_parts):
    d, df = acs_parts
    versions = set()
    for chunk_rows in (250, 1_000_000):
        run = tmp_path / f'run{chunk_rows}'
        versions.add(ingest(run, source=f'{d}/part-*.parquet', chunk_rows=chunk_rows).version['data_version'])
        back = pd.read_parquet(run / 'artifacts/01_ingest/data.parquet')
        assert len(back) == 3000 and back.SEX.astype(str).tolist() == df.SEX.astype(str).tolist()
    assert versions == {data_version(back)}, 'the chunk size does not change the snapshot'
    r = ingest(tmp_path / 'csv', source=f'{d}/*.csv', chunk_rows=400, max_rows=500)
    assert (
        r.version['rows'] == 500 and r.version['files'] == 3 and [i['rows'] for i in r.version['inputs']] == [1000] * 3
    )


def test_a_large_file_is_read_in_bounded_memory(tmp_path):
    import tracemalloc

    n = 300_000
    rng = np.random.default_rng(0)
    df = pd.DataFrame(
        {
            'id': np.arange(n),
            'AGEP': rng.random(n) * 90,
            'SEX': rng.choice(['1', '2'], n),
            TARGET: rng.integers(0, 2, n),
        }
    )
    df.to_csv(tmp_path / 'big.csv', index=False)
    peaks = {}
    for chunk_rows in (10_000, n):
        tracemalloc.start()
        version = ingest(
            tmp_path / f'run{chunk_rows}', source=str(tmp_path / 'big.csv'), chunk_rows=chunk_rows, reference='none'
        ).version
        peaks[chunk_rows] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert version['data_version'] == data_version(pd.read_csv(tmp_path / 'big.csv')), (
            'the version of one read of the file'
        )
    size = df.memory_usage(deep=True).sum()
    assert peaks[10_000] < 0.25 * size < size < peaks[n], (peaks, size)


def test_fsspec_uris_are_read_like_local_files(tmp_path, acs_parts):
    fsspec = pytest.importorskip('fsspec')
    d, _ = acs_parts
    fs = fsspec.filesystem('memory')
    for p in sorted(d.glob('part-*.parquet')):
        fs.pipe(f'/contracts/{p.name}', p.read_bytes())
    local = ingest(tmp_path / 'local', source=f'{d}/part-*.parquet').version
    remote = ingest(tmp_path / 'remote', source='memory://contracts/').version
    assert remote['data_version'] == local['data_version'] and remote['inputs'][0]['file'].startswith('memory://')
    msg = ingest_fails(tmp_path, 'memory://contracts/nothing-here.csv')
    assert 'not found' in msg
    if not shutil.which('s3fs'):
        try:
            import s3fs  # noqa: F401
        except ImportError:
            assert 's3fs' in ingest_fails(tmp_path, 's3://bucket/batch.csv'), 'the package to install is named'


# --- anomaly kinds ------------------------------------------------------------------------------------------------


@pytest.fixture(scope='module')
def reference():
    "A training table and its schema"
    rng = np.random.default_rng(0)
    n = 400
    df = pd.DataFrame(
        {
            'id': np.arange(n),
            'AGEP': rng.integers(18, 90, n).astype('float64'),
            'SEX': pd.Categorical(rng.choice(['1', '2'], n)),
            'town': rng.choice(['a', 'b', 'c'], n),
            'year': 2015,
            TARGET: rng.integers(0, 2, n),
        }
    )
    return df, infer_schema(df, TARGET, 'id', 'year')


def _set(df, column, values):
    df = df.copy()
    df[column] = values
    return df


KINDS = {
    'missing_column': (lambda df: df.drop(columns='town'), 'town', {}),
    'new_column': (lambda df: df.assign(income=1.0), 'income', {}),
    'dtype_change': (lambda df: _set(df, 'SEX', df.SEX.astype(int)), 'SEX', {}),
    'parse_failure': (lambda df: _set(df, 'AGEP', df.AGEP.astype(str).where(df.index != 7, 'forty')), 'AGEP', {}),
    'null_rate': (lambda df: _set(df, 'AGEP', df.AGEP.where(df.index % 4 != 0)), 'AGEP', {}),
    'all_null': (lambda df: _set(df, 'town', None), 'town', {}),
    'out_of_range': (lambda df: _set(df, 'AGEP', df.AGEP.where(df.index != 3, 130.0)), 'AGEP', {}),
    'unseen_category': (lambda df: _set(df, 'town', df.town.where(df.index % 10 != 0, 'zz')), 'town', {}),
    'duplicate_ids': (lambda df: _set(df, 'id', df.id.where(df.index != 5, 4)), 'id', {}),
    'empty_batch': (lambda df: df.iloc[:0], '', {}),
    'constant': (lambda df: _set(df, 'town', 'a'), 'town', {}),
    'target_leakage': (lambda df: df, TARGET, {'serving': True}),
    'bad_target': (lambda df: _set(df, TARGET, df[TARGET].where(df.index != 2, 7)), TARGET, {}),
    'null_target': (lambda df: _set(df, TARGET, df[TARGET].where(df.index != 2)), TARGET, {}),
}


@pytest.mark.parametrize('kind', KINDS)
def test_each_anomaly_kind_is_found_with_its_severity(reference, kind):
    df, schema = reference
    change, column, kw = KINDS[kind]
    found = validate_batch(change(df), schema, **kw)
    hits = [a for a in found if a['kind'] == kind]
    assert [a['column'] for a in hits] == [column], found
    assert hits[0]['severity'] == SEVERITIES.get(kind, 'error')
    line = format_anomaly(hits[0])
    assert line.startswith(f'{hits[0]["severity"]}: ') and 'expected ' in line and 'found ' in line
    if column:
        assert f'column {column!r}' in line


def test_severities_are_settings(reference):
    df, schema = reference
    batch = df.assign(income=1.0)
    assert validate_batch(batch, schema, {'new_column': 'error'})[0]['severity'] == 'error'
    assert validate_batch(batch, schema, {'new_column': 'ignore'}) == []
    with pytest.raises(MlopsError, match='validate.new_column must be error, warning or ignore'):
        validate_batch(batch, schema, {'new_column': 'fatal'})


def test_a_serving_payload_needs_only_the_features(reference):
    df, schema = reference
    payload = df.drop(columns=['id', 'year', TARGET]).head(1).astype({'SEX': str})
    assert validate_batch(payload, schema, serving=True) == []
    assert [a['kind'] for a in validate_batch(payload.drop(columns='AGEP'), schema, serving=True)] == ['missing_column']


def test_a_large_batch_is_checked_to_its_last_row(reference):
    "100,000 rows: clean, then the anomalies of its last row and no others (speed is benchmarks/validate.py's)"
    df, schema = reference
    big = pd.concat([df] * 250, ignore_index=True).assign(id=lambda d: np.arange(len(d)))
    assert validate_batch(big, schema) == []
    big.loc[len(big) - 1, ['AGEP', 'id']] = [130.0, 0]
    assert sorted(a['kind'] for a in validate_batch(big, schema)) == ['duplicate_ids', 'out_of_range']


# --- the stage against the champion, through the CLI ---------------------------------------------------------------


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """A project whose first run ingested and validated the default data, and whose champion is a model version
    registered from that run, tagged as the register stage tags it: `(project, completed process, manifest)`.
    (Training a real model adds a minute and nothing to what these tests check.)"""
    from mlflow.tracking import MlflowClient

    project = make_project(tmp_path_factory.mktemp('contracts'))
    res = cli(project, 'run', '-p', 'pipeline.stages=ingest,validate')
    assert res.returncode == 0, res.stdout + res.stderr
    m = manifests(project)[-1]
    c = MlflowClient(_uri(project), registry_uri=_uri(project))
    c.create_registered_model('acs-employment')
    validate_run = m['stages'][1]['mlflow_run_id']
    v = c.create_model_version(
        'acs-employment',
        f'runs:/{validate_run}/model',
        run_id=validate_run,
        tags={'mlops_nb.run_id': m['run_id'], 'mlops_nb.run_dir': str(project.resolve() / 'runs' / m['run_id'])},
    )
    c.set_registered_model_alias('acs-employment', 'champion', v.version)
    return project, res, m


def _uri(project):
    return f'sqlite:///{project.resolve()}/mlflow.db'


def _registered(project):
    from mlops_nb.registry.tracking import alias_version, client

    v = alias_version(client(_uri(project)), 'acs-employment')
    return None if v is None else str(v.version)


def test_a_batch_breaking_the_champions_schema_stops_the_run(trained):
    project, _, m = trained
    champion = _registered(project)
    assert champion is not None
    snap = pd.read_parquet(project / 'runs' / m['run_id'] / 'artifacts/01_ingest/data.parquet')
    bad = snap.head(300).drop(columns='DIS').assign(bonus_feature=1.5)
    bad['AGEP'] = bad.AGEP.astype('Int64').astype(str)
    bad.loc[bad.index[:3], 'AGEP'] = 'unknown'
    bad.to_csv(project / 'batch.csv', index=False)
    res = cli(project, 'run', '-p', 'data.source=batch.csv', '-p', 'pipeline.stages=ingest,validate')
    assert res.returncode == 1 and 'Traceback' not in res.stderr, res.stderr
    assert (
        'stage validate failed' in res.stderr and 'checked against the schema of acs-employment@champion' in res.stderr
    )
    assert (
        "error: column 'AGEP': parse_failure: expected numbers (float64), found 3 values that are not numbers, e.g. 'unknown'"
        in res.stderr
    )
    assert "error: column 'DIS': missing_column: expected a category column, found no such column" in res.stderr
    assert 'bonus_feature' not in res.stderr, 'warnings are in the notebook and anomalies.json, not in the error'
    failed = manifests(project)[-1]
    assert failed['status'] == 'failed' and [r['status'] for r in failed['stages']] == ['completed', 'failed']
    report = json.loads((project / 'runs' / failed['run_id'] / 'artifacts/02_validate/anomalies.json').read_text())
    assert report['reference']['kind'] == 'champion' and report['reference']['version'] == champion
    assert {(a['column'], a['kind']) for a in report['anomalies']} >= {
        ('bonus_feature', 'new_column'),
        ('AGEP', 'parse_failure'),
        ('DIS', 'missing_column'),
    }
    assert _registered(project) == champion, 'the champion is untouched'


def test_the_champions_schema_is_found_in_mlflow_when_its_run_folder_is_gone(trained, tmp_path):
    project, _, m = trained
    uri = _uri(project)
    run_dir = project / 'runs' / m['run_id']
    assert load_champion_schema(uri, 'acs-employment')['reference']['path'] == str(
        run_dir / 'artifacts/02_validate/schema.json'
    )
    moved = tmp_path / 'moved'
    shutil.copytree(run_dir, moved)
    shutil.rmtree(run_dir, onerror=lambda f, p, e: (Path(p).chmod(0o755), f(p)))
    try:
        schema = load_champion_schema(uri, 'acs-employment')
        assert schema['reference']['path'].startswith('runs:/') and schema['columns']['AGEP']['kind'] == 'float'
    finally:
        shutil.copytree(moved, run_dir)
    assert load_champion_schema(uri, 'no-such-model') is None
    assert load_champion_schema(f'sqlite:///{tmp_path}/absent.db', 'acs-employment') is None


def test_the_training_data_exported_to_csv_reads_back_with_its_version(trained):
    "CSV loses types: the champion's schema gives them back, so the same data is the same version"
    project, _, m = trained
    snap = pd.read_parquet(project / 'runs' / m['run_id'] / 'artifacts/01_ingest/data.parquet')
    snap.sample(frac=1, random_state=1).to_csv(project / 'export.csv', index=False)  # another file, another row order
    res = cli(project, 'run', '-p', 'data.source=export.csv', '-p', 'pipeline.stages=ingest,validate')
    assert res.returncode == 0, res.stderr
    again = manifests(project)[-1]
    ingest_result = again['stages'][0]['result']
    assert (
        ingest_result['data_version'] == m['summary']['data_version']
        and 'acs-employment@champion' in ingest_result['csv_types_from']
    )
    assert again['stages'][1]['result']['errors'] == 0


def test_bad_input_through_the_cli_is_one_error_and_no_snapshot(trained):
    project, _, _ = trained
    (project / 'empty.csv').write_bytes(b'')
    res = cli(project, 'run', '-p', 'data.source=empty.csv', '-p', 'pipeline.stages=ingest,validate')
    assert res.returncode == 1 and 'Traceback' not in res.stderr
    assert f'{project.resolve() / "empty.csv"}: the file is empty (0 bytes)' in res.stderr, res.stderr
    assert manifests(project)[-1]['status'] == 'completed', (
        'refused before a run folder is made, so none holds a snapshot'
    )


def test_data_versions_lists_each_version_with_its_first_and_last_run(trained):
    project, _, m = trained
    res = cli(project, 'run', '-p', 'pipeline.stages=ingest')
    assert res.returncode == 0, res.stderr
    again = manifests(project)[-1]
    res = cli(project, 'data', 'versions')
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].split() == [
        'data_version',
        'rows',
        'columns',
        'schema_hash',
        'source',
        'runs',
        'first_run',
        'last_run',
    ]
    v = m['summary']['data_version']
    row = next(l for l in lines if l.startswith(v)).split()
    assert row[1:3] == ['2000', '19'] and row[4] == 'acs_employment_ma'
    assert row[-2:] == [m['run_id'], again['run_id']] and int(row[5]) >= 2, (
        'the same data in another run is the same version'
    )


# --- MLflow -------------------------------------------------------------------------------------------------------


def test_the_data_version_is_logged_as_the_runs_dataset_input(tmp_path):
    from mlflow.tracking import MlflowClient

    run, r = ingest_ok(tmp_path, 'acs_employment_ma', max_rows=300)
    c = MlflowClient(f'sqlite:///{tmp_path}/mlflow.db')
    mlflow_run = c.create_run(c.create_experiment('contracts', artifact_location=(tmp_path / 'art').as_uri()))
    log_dataset_input(c, mlflow_run.info.run_id, r.version, get_stage('ingest').paths(run)['snapshot'])
    [inp] = c.get_run(mlflow_run.info.run_id).inputs.dataset_inputs
    assert inp.dataset.digest == r.version['data_version'] and inp.dataset.name == 'acs_employment_ma'
    assert json.loads(inp.dataset.profile)['num_rows'] == 300
    assert {'name': 'AGEP', 'type': 'double', 'required': True} in json.loads(inp.dataset.schema)['mlflow_colspec']
    assert {t.key: t.value for t in inp.tags}['mlflow.data.context'] == 'training'


RACER = """
import sys, time
from pathlib import Path
from mlops_nb.stages.data_version import log_dataset_input
from mlops_nb.registry.tracking import client
d, i, trials = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
c = client(f'sqlite:///{d}/mlflow.db')
run = c.create_run(c.get_experiment_by_name('race').experiment_id).info.run_id
for t in range(trials):
    (d / f'ready{t}-{i}').touch()
    while not (d / f'go{t}').exists(): time.sleep(0.002)
    log_dataset_input(c, run, {'data_version': f'{t:016x}', 'rows': 2, 'source': 'race.csv'}, d / 'snap.parquet')
print(run)
"""


def test_two_runs_logging_the_same_new_data_at_once_both_get_it(tmp_path):
    "MLflow looks a dataset up, then inserts it: the run that loses the race finds the other's and reuses it"
    import subprocess
    import sys
    import time
    from mlflow.tracking import MlflowClient

    pd.DataFrame({'a': [1, 2]}).to_parquet(tmp_path / 'snap.parquet')
    (tmp_path / 'racer.py').write_text(RACER)
    c = MlflowClient(f'sqlite:///{tmp_path}/mlflow.db')
    exp = c.create_experiment('race', artifact_location=(tmp_path / 'art').as_uri())
    trials = 20  # unguarded, 39 of 50 such trials failed one of the two calls
    procs = [
        subprocess.Popen(
            [sys.executable, str(tmp_path / 'racer.py'), str(tmp_path), str(i), str(trials)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    for t in range(trials):  # both wait at each trial's start line; `go` releases them together
        while len(list(tmp_path.glob(f'ready{t}-*'))) < 2 and all(p.poll() is None for p in procs):
            time.sleep(0.002)
        (tmp_path / f'go{t}').touch()
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-1500:] for _, err in outs]
    for out, _ in outs:
        digests = sorted(i.dataset.digest for i in c.get_run(out.strip()).inputs.dataset_inputs)
        assert digests == [f'{t:016x}' for t in range(trials)]
    import sqlalchemy

    with sqlalchemy.create_engine(f'sqlite:///{tmp_path}/mlflow.db').connect() as db:
        stored = db.execute(
            sqlalchemy.text('SELECT count(*) FROM datasets WHERE experiment_id = :e'), {'e': int(exp)}
        ).scalar()
    assert stored == trials, 'each dataset is stored once'
