"""The benchmark's command line refuses bad input by name, before it starts anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.main import main


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--database", "mysql"], "--database"),
        (["--database", "mysql://db.example/x"], "--database"),
        (["--phases", "release,warp"], "unknown phases ['warp']"),
        (["--approvals", "-5"], "--approvals must be positive"),
    ],
)
def test_bad_input_is_one_line_naming_the_option(
    argv: list[str], named: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stopped:
        main([*argv, "--workdir", str(tmp_path)])
    assert stopped.value.code == 2
    error = capsys.readouterr().err
    assert named in error and "Traceback" not in error
