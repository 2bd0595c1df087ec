"""No input makes the command raise: any file gives an exit status of 0, 1 or 2 and no traceback.

In-process (``lbcore.cli.main``, the function the console script calls), so hypothesis can try
hundreds of files quickly; the subprocess tests show the script itself does what main() does.
Files are random text, random ipvsadm-ish and YAML-ish lines, and the shipped examples with
random bytes changed.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import ROOT
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lbcore.cli import main

EXAMPLES = [p.read_text() for p in sorted((ROOT / "examples").glob("option-*.yaml"))]
WORDS = ["-A", "-a", "-E", "-e", "-D", "-d", "-C", "--set", "-t", "-u", "-f", "-s", "-r", "-g", "-m", "-i", "-w",
         "-p", "-M", "-b", "-x", "-y", "--pe", "sip", "wlc", "rr", "twos", "mh", "sh-port", "192.0.2.10:80",
         "198.51.100.1:80", "[2001:db8::1]:80", "1", "0", "70000", "-1", "services:", "real_servers:", "- ",
         "{", "}", "[", "]", ":", "address:", "port:", "health:", "check:", "kind:", "rules:", "virtual=",
         "virtual_server", "\t", "#", "'", '"', "ipvsadm", "\n", "\n  ", "backend:", "name:", "ipvs", "sim"]

mutated = st.builds(
    lambda text, cut, junk: text[:cut % (len(text) + 1)] + junk + text[cut % (len(text) + 1) + len(junk):],
    st.sampled_from(EXAMPLES), st.integers(min_value=0), st.text(max_size=5))
tokens = st.lists(st.sampled_from(WORDS), max_size=30).map(" ".join)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.one_of(st.text(max_size=200), tokens, mutated))
@pytest.mark.parametrize("command", [["validate"], ["plan"], ["export", "--to", "ipvsadm-save"]])
def test_any_file_gives_a_status_and_never_an_exception(command: list[str], text: str, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "deployment"
    path.write_text(text, encoding="utf-8", errors="surrogateescape")
    status = main([command[0], str(path), *command[1:]])
    out, err = capsys.readouterr()
    assert status in (0, 1, 2), err
    assert "Traceback" not in out + err and "internal error" not in err
