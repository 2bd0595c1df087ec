"""The user-mode Linux kernel that kernel tests run in has IPVS and every scheduler lbcore knows."""

from __future__ import annotations

import os
import subprocess

import pytest

from lbcore.enums import Scheduler

pytestmark = pytest.mark.kernel


def test_ipvs_is_loaded_and_keeps_a_service(ipvsadm):
    assert os.environ.get("LBCORE_IN_UML") == "1"
    with open("/proc/net/ip_vs", encoding="ascii") as table:
        assert table.readline().startswith("IP Virtual Server version")

    ipvsadm("-A", "-t", "192.0.2.1:80", "-s", "rr")

    assert "-A -t 192.0.2.1:80 -s rr" in ipvsadm("-Sn").splitlines()


def _kernel_has_module(name: str) -> bool:
    modules = f"/usr/lib/uml/modules/{os.uname().release}/modules.dep"
    with open(modules, encoding="utf-8") as dep:
        return any(line.split(":")[0].endswith(f"/{name}.ko") for line in dep)


@pytest.mark.parametrize("scheduler", list(Scheduler), ids=str)
def test_every_scheduler_the_kernel_has_is_loaded_and_takes_a_service(ipvsadm, scheduler):
    module = f"ip_vs_{scheduler.value}"
    if not _kernel_has_module(module):
        # Linux 6.1 (Debian's user-mode-linux) has no ip_vs_twos (added in 6.2): the kernel
        # refuses the service, which the ipvs backend must report, not hide.
        assert scheduler is Scheduler.TWOS, f"{module} is missing from this kernel"
        refused = subprocess.run(
            ["ipvsadm", "-A", "-t", "192.0.2.1:80", "-s", scheduler.value], capture_output=True, text=True, check=False
        )
        assert (refused.returncode, refused.stderr.strip()) == (255, "Scheduler or persistence engine not found")
        assert "192.0.2.1:80" not in ipvsadm("-Sn")
        return
    assert os.path.isdir(f"/sys/module/{module}"), f"{module} was not loaded at boot"

    ipvsadm("-A", "-t", "192.0.2.1:80", "-s", scheduler.value)

    assert f"-A -t 192.0.2.1:80 -s {scheduler.value}" in ipvsadm("-Sn").splitlines()
