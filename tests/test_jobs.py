"""`--jobs auto`: how many worker processes a search starts, from cores, memory and device."""

import pytest
from click.testing import CliRunner

from sceneclf.cli import actions
from sceneclf.cli.group import cli

GIB = 1024**3


@pytest.mark.parametrize(("cores", "free", "device", "expected"), [
    (2, 20 * GIB, "cpu", 2),
    (16, 128 * GIB, "cpu", actions.AUTO_MAX_JOBS),
    (16, 5 * GIB, "cpu", 2),  # memory for two workers only
    (8, 1 * GIB, "cpu", 1),
    (2, None, "cpu", 2),  # memory unknown: the cores decide
    (16, 128 * GIB, "cuda", 1),
])  # fmt: skip
def test_auto_jobs_follows_cores_memory_and_device(cores, free, device, expected):
    assert actions.auto_jobs(cores, free, device) == expected


def test_jobs_never_exceed_the_trials():
    assert actions.resolve_jobs(3, "cpu", 2) == 2
    assert actions.resolve_jobs("auto", "cpu", 1) == 1


@pytest.mark.parametrize("bad", ["two", "0", "65"])
def test_a_bad_jobs_value_is_one_line_naming_the_option(bad, tmp_path):
    result = CliRunner().invoke(cli, ["search", "--jobs", bad, "--trials", "1"])
    assert result.exit_code == 2
    assert "--jobs" in result.output and "Traceback" not in result.output
