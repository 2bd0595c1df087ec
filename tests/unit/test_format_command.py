"""formats.ipvsadm.format_command is parse_command's inverse, in ipvsadm-save's spelling."""

from __future__ import annotations

import pytest

from lbcore import (
    DeleteRealServer,
    DeleteService,
    EditRealServer,
    EditService,
    InvalidField,
    SetSysctls,
    Sysctls,
    Table,
    plan,
)
from lbcore.formats.ipvsadm import dump_save, format_command, parse_command, parse_save

DUMP = """\
-A -t 192.0.2.10:80 -s wlc -p 300 -M 255.255.255.0
-a -t 192.0.2.10:80 -r 198.51.100.1:80 -m -w 3 -x 100 -y 50
-a -t 192.0.2.10:80 -r 198.51.100.2:8080 -m -w 0
-A -u [2001:db8::10]:53 -s sh -b sh-port -o
-a -u [2001:db8::10]:53 -r [2001:db8::1]:53 -g -w 1
-A -f 5 -6 -s mh -b mh-fallback,mh-port -p 60 --pe sip
-a -f 5 -6 -r [2001:db8::2]:0 -i -w 2 --tun-type gue --tun-port 6080 --tun-remcsum
-A --sctp-service 192.0.2.11:9 -s rr
--set 900 120 60
"""


def test_every_op_of_a_dump_reads_back_as_itself() -> None:
    table = parse_save(DUMP)
    ops = plan(Table(), table)
    svc = next(iter(table))  # and one edit and delete of each kind
    ops += [EditService(svc.settings), EditRealServer(svc.key, svc.real_servers[0]),
            DeleteRealServer(svc.key, svc.real_servers[0].address, svc.real_servers[0].port), DeleteService(svc.key)]
    for op in ops:
        line = format_command(op)
        assert parse_command(line, table) == [op], line


def test_add_lines_are_ipvsadm_saves_own() -> None:
    table = parse_save(DUMP)
    lines = {format_command(op) for op in plan(Table(), table)}
    assert set(dump_save(table).splitlines()) - lines == {
        # ipvsadm-save writes no thresholds; the command keeps them
        "-a -t 192.0.2.10:80 -r 198.51.100.1:80 -m -w 3"}


def test_sysctls_have_no_ipvsadm_command() -> None:
    with pytest.raises(InvalidField, match="has no ipvsadm command"):
        format_command(SetSysctls(Sysctls()))
