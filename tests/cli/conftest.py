"""The ``lbcore`` command as a user runs it: the installed entry point, in a subprocess.

``lbcore`` is the console script the installed distribution provides (tox installs the package;
locally it is an editable install). The subprocess gets this checkout first on ``PYTHONPATH``, as
pytest's ``pythonpath`` gives the tests in-process, so the code under test is this tree's, run
through the installed script and its entry-point metadata (backends are found the same way).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent

Run = Callable[..., subprocess.CompletedProcess[str]]

#: The guide's Option 1A as ipvsadm-save prints it: a DR service on 8080, persistence 3600 s.
OPTION_1A_SAVE = """\
-A -t 192.168.2.202:8080 -s wlc -p 3600
-a -t 192.168.2.202:8080 -r 192.168.2.210:8080 -g -w 1
-a -t 192.168.2.202:8080 -r 192.168.2.211:8080 -g -w 1
-a -t 192.168.2.202:8080 -r 192.168.2.212:8080 -g -w 1
"""


def lbcore_env(**extra: str) -> dict[str, str]:
    """The environment of an ``lbcore`` subprocess: this checkout first on PYTHONPATH (then
    ``extra``'s PYTHONPATH, then the caller's)."""
    env = dict(os.environ)
    paths = [str(ROOT), str(ROOT / "backends")]
    for more in (extra.pop("PYTHONPATH", ""), env.get("PYTHONPATH", "")):
        if more:
            paths.append(more)
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.pop("LBCORE_DEBUG", None)
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def lbcore_path() -> str:
    """The installed ``lbcore`` console script.

    Raises:
        pytest.fail.Exception: it is not on PATH (the package is not installed).
    """
    found = shutil.which("lbcore")
    if found is None:
        pytest.fail("the lbcore console script is not on PATH: pip install -e . (or run under tox)", pytrace=False)
    return found


@pytest.fixture
def lbcore(lbcore_path: str, tmp_path: Path) -> Run:
    """``lbcore(*args, input=None, cwd=None, **env)``: run the command (in a fresh directory unless
    ``cwd`` is given); its CompletedProcess (text).

    Every run is checked for what must never happen: a traceback on either stream.
    """

    def run(*args: str, input: str | None = None, cwd: Path | None = None,
            **env: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([lbcore_path, *args], input=input, capture_output=True, text=True, check=False,
                              env=lbcore_env(**env), cwd=cwd or tmp_path, timeout=120)
        assert "Traceback" not in done.stderr + done.stdout, done.stderr
        return done

    return run


@pytest.fixture
def option_1a(tmp_path: Path) -> Path:
    """Option 1A as an ipvsadm-save dump, in a file."""
    path = tmp_path / "option-1a.save"
    path.write_text(OPTION_1A_SAVE)
    return path
