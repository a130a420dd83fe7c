"""Parameters checked before the run: values outside their declared domain or the estimator's constraints, a line each."""

import subprocess
import time

from conftest import MLOPS_NB, cli


def init_project(tmp_path):
    "A project as a user makes one: `mlops-nb init` in a folder outside the repo"
    folder = tmp_path / 'proj'
    res = subprocess.run([*MLOPS_NB, 'init', str(folder)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    return folder


def test_a_bad_value_is_one_line_before_any_stage(tmp_path):
    project = init_project(tmp_path)
    t0 = time.time()
    res = cli(project, 'run', '-p', 'train.learning_rate=-1')
    assert res.returncode == 1 and res.stdout == '', res.stdout + res.stderr
    assert res.stderr.splitlines() == [
        f'error: {project / "settings.ini"}: train.learning_rate = -1.0 must be in (0, inf) (boosting step size)'
    ]
    assert time.time() - t0 < 30 and not (project / 'runs').exists(), (
        'refused before a run folder exists, so none says running'
    )


def test_every_bad_value_has_its_line_and_nan_and_inf_are_refused(tmp_path):
    project = init_project(tmp_path)
    res = cli(
        project,
        'run',
        '-p',
        'train.learning_rate=1' + '0' * 400,
        '-p',
        'train.max_leaf_nodes=1',
        '-p',
        'features.holdout_share=nan',
        '-p',
        'validate.null_rate=eror',
    )
    assert res.returncode == 1 and 'Traceback' not in res.stderr, res.stderr
    lines = res.stderr.splitlines()[1:]
    assert len(lines) == 4, res.stderr
    assert "  validate.null_rate = 'eror' must be one of error, warning, ignore (did you mean 'error'?)" in lines[0]
    assert lines[1] == '  features.holdout_share = nan must be in (0, 1) (share of rows kept out of training)'
    assert lines[2] == '  train.learning_rate = inf must be in (0, inf) (boosting step size)', (
        'a number too long for a float'
    )
    assert lines[3].startswith(
        "  train.max_leaf_nodes = 1: The 'max_leaf_nodes' parameter of HistGradientBoostingClassifier must be"
    ), "the notebook's own estimator, checked by scikit-learn's constraints without fitting"
    assert not (project / 'runs').exists()


def test_the_model_cell_is_the_estimator_checked(tmp_path):
    "A project that edits its model cell is checked against that estimator's constraints, not the template's"
    project = init_project(tmp_path)
    nb = project / 'notebooks' / 'stages' / '04_train.ipynb'
    text = nb.read_text()
    nb.write_text(
        text.replace(
            'max_leaf_nodes=max_leaf_nodes,', 'max_leaf_nodes=max_leaf_nodes, l2_regularization=-learning_rate,', 1
        )
    )
    res = cli(project, 'run')
    assert res.returncode == 1 and 'Traceback' not in res.stderr, res.stderr
    assert (
        "train: the notebook's model cell makes HistGradientBoostingClassifier(l2_regularization=-0.1): The 'l2_regularization'"
        in res.stderr
    )
    assert not (project / 'runs').exists()


def test_a_stage_notebook_of_an_earlier_version_says_which_line_to_change(tmp_path):
    "A project made before `register` moved out of mlops_nb.tracking: one line naming the notebook and the new import"
    project = init_project(tmp_path)
    nb = project / 'notebooks' / 'stages' / '07_register.ipynb'
    nb.write_text(
        nb.read_text().replace(
            'from mlops_nb.stages.register import register', 'from mlops_nb.tracking import register'
        )
    )
    res = cli(project, 'run')
    assert res.returncode == 1 and 'Traceback' not in res.stderr, res.stderr
    assert res.stderr.splitlines() == [
        f'error: {project / "settings.ini"}: 07_register.ipynb: `from mlops_nb.tracking import register` '
        'no longer works: register moved; write `from mlops_nb.stages.register import register`'
    ]
    assert not (project / 'runs').exists()
