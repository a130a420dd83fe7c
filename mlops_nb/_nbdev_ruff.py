"""nbdev's export, formatted by ruff: `[tool.nbdev] export_procs` in pyproject.toml imports this module when
`nbdev-export` starts, and the package it wrote is formatted when the process ends, so that what nbdev writes is
what `ruff format --check` expects. Not a notebook's export: nbdev runs it while exporting them."""

import atexit
import os
import subprocess
import sys


def _format_package():
    from nbdev.config import get_config

    lib = get_config().lib_path
    try:
        res = subprocess.run(
            [sys.executable, '-m', 'ruff', 'format', '--quiet', '--no-cache', str(lib)], capture_output=True, text=True
        )
    except OSError as e:
        res = subprocess.CompletedProcess([], 1, '', str(e))
    if res.returncode:
        print(
            f'nbdev-export: {lib} was exported but not formatted: ruff format failed (pip install ruff)\n{res.stderr}'.rstrip(),
            file=sys.stderr,
        )
        sys.stderr.flush()
        os._exit(1)  # an exit handler cannot set the exit status otherwise


atexit.register(_format_package)


def export_formatted(cell):
    "nbdev's processor protocol: each cell is exported as written; the package is formatted once, at exit (above)"
