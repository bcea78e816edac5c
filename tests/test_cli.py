"""The `swelab` command line: bad params stop with one line naming the file and the field."""

from __future__ import annotations

import subprocess
import sys

from scaffold import write_params

from swelab.cli import main


def test_bad_params_exit_2_with_file_and_field(tmp_path, capsys):
    bad = write_params(tmp_path, "models:\n  - {name: gold, kind: golden}\n", "bad.yaml")
    assert main(["run", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"swelab: {bad}: field 'models[0].kind': must be one of gold, empty, patch, shell, " \
                  "mini-swe-agent, import, probe, got 'golden'"


def test_missing_params_file_is_named(capsys):
    assert main(["run", "params/does-not-exist.yaml"]) == 2
    assert "params/does-not-exist.yaml" in capsys.readouterr().err


def test_unknown_stage_is_refused():
    result = subprocess.run([sys.executable, "-m", "swelab.cli", "run", "params/demo.yaml", "--stages", "05_x"],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "unknown stage 05_x" in result.stderr


def test_a_failing_notebook_stops_the_run_with_one_line_naming_it(tmp_path, capsys):
    params = write_params(tmp_path, "dataset: data/missing.jsonl\nmodels:\n  - {name: gold, kind: gold}\n",
                          "gone.yaml", notebooks=True)
    assert main(["run", str(params)]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("swelab: 01_select failed (") and "DatasetError" in err and "missing.jsonl" in err
