"""The pytest plugin: test your deployment on the simulator before you apply it.

Installed with lbcore (entry point ``pytest11``: ``lbcore``), so its fixtures are there in every
test run, and do nothing until a test asks for one:

- ``lb_deployment``: the :class:`~lbcore.Deployment` the test names with
  ``@pytest.mark.lbcore_deployment("deploy.yaml")`` (a path relative to the test file, or a
  ``Deployment``), or the ini option ``lbcore_deployment`` names (relative to the ini file);
- ``lb_load_deployment``: a factory, ``lb_load_deployment("other.yaml") -> Deployment``;
- ``lb_clock``: the :class:`~lbcore.VirtualClock` the simulator and the health checks share;
- ``lb_deployed``: the deployment applied to a new simulator, its health checks running
  (:class:`~lbcore.sim.deployment.SimDeployment`): ``clients(n, network)``,
  ``connect(client, vip, port, ...)``, ``fail(address, at=...)``, ``recover``, ``advance``,
  ``run_until``, ``which``;
- ``lb_balancer``: its :class:`~lbcore.Balancer`, on the simulator.

The assertions are :func:`lbcore.testing.assertions.assert_balanced` and
:func:`~lbcore.testing.assertions.assert_sticky`. The ini option ``lbcore_kernel`` names the
kernel release the simulator reproduces (6.1 by default).

Loading the plugin imports the ``lbcore`` package; the simulator and the file formats are imported
only when a fixture runs, so a test run that uses none pays nothing for them. A checkout of lbcore
itself, where lbcore is also installed from elsewhere, blocks the plugin (``-p no:lbcore``) so that
its own code, not the installed one, is what its tests import.

.. versionadded:: 0.4
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from collections.abc import Callable

    from lbcore import Balancer, Deployment, VirtualClock
    from lbcore.sim import SimBackend
    from lbcore.sim.deployment import SimDeployment

MARKER = "lbcore_deployment"
INI_DEPLOYMENT = "lbcore_deployment"
INI_KERNEL = "lbcore_kernel"


def pytest_addoption(parser: pytest.Parser) -> None:
    """The ini options ``lbcore_deployment`` and ``lbcore_kernel``."""
    parser.addini(INI_DEPLOYMENT, "the deployment file lb_deployment loads when a test names none "
                  "(relative to the ini file)", default="")
    parser.addini(INI_KERNEL, "the kernel release lbcore's simulator reproduces in lb_deployed", default="6.1")


def pytest_configure(config: pytest.Config) -> None:
    """The marker ``lbcore_deployment``."""
    config.addinivalue_line(
        "markers", f"{MARKER}(path_or_deployment): the deployment lbcore's lb_deployment fixture gives this test "
                   "(a YAML deployment file or an ipvsadm-save dump, relative to the test file; or a Deployment)")


def load_deployment(path: str | Path) -> Deployment:
    """The deployment in a file: a YAML deployment file, or an ipvsadm-save dump (told by content).

    Raises:
        OSError: the file cannot be read.
        LBError: it does not parse (``ConfigError`` lists every problem of a YAML file).
    """
    from lbcore import Deployment
    from lbcore.formats import ipvsadm
    from lbcore.formats import yaml as deployment_file

    text = Path(path).read_text(encoding="utf-8")
    for raw in text.splitlines():
        words = raw.split("#", 1)[0].split()
        if words:
            if words[0] in ("-A", "-a", "--add-service", "--add-server"):
                return Deployment.from_table(ipvsadm.parse_save(text))
            break
    return deployment_file.load(text, str(path))


def _fail(message: str) -> Any:
    __tracebackhide__ = True
    pytest.fail(f"lbcore: {message}", pytrace=False)


@pytest.fixture
def lb_load_deployment(request: pytest.FixtureRequest) -> Callable[[str | Path], Deployment]:
    """``lb_load_deployment(path) -> Deployment``; a relative path is the test file's neighbour."""
    from lbcore import LBError

    def load(path: str | Path) -> Deployment:
        __tracebackhide__ = True
        where = Path(path)
        if not where.is_absolute():
            where = request.path.parent / where
        try:
            return load_deployment(where)
        except (LBError, OSError) as exc:
            problem = f"cannot load the deployment {where}: {type(exc).__name__}: {exc}"
        return _fail(problem)  # type: ignore[no-any-return]  # outside the except: no chained traceback

    return load


@pytest.fixture
def lb_deployment(request: pytest.FixtureRequest, lb_load_deployment: Callable[[str | Path], Deployment]) -> Deployment:
    """The deployment the test's ``lbcore_deployment`` marker names, or the ini option."""
    __tracebackhide__ = True
    from lbcore import Deployment

    marker = request.node.get_closest_marker(MARKER)
    if marker is not None:
        if len(marker.args) != 1 or marker.kwargs:
            _fail(f"@pytest.mark.{MARKER} takes one argument, a path or a Deployment")
        given = marker.args[0]
        if isinstance(given, Deployment):
            return given
        if not isinstance(given, (str, Path)):
            _fail(f"@pytest.mark.{MARKER}({given!r}): is not a path or a Deployment")
        return lb_load_deployment(given)
    configured = str(request.config.getini(INI_DEPLOYMENT) or "")
    if configured:
        base = request.config.inipath.parent if request.config.inipath else request.config.rootpath
        return lb_load_deployment(base / configured)
    return _fail(f"no deployment for {request.node.nodeid}: mark the test with "  # type: ignore[no-any-return]
                 f"@pytest.mark.{MARKER}('deploy.yaml') or set the ini option {INI_DEPLOYMENT}")


@pytest.fixture
def lb_clock() -> VirtualClock:
    """The virtual clock of the simulator and the health checks (time moves only when told)."""
    from lbcore import VirtualClock

    return VirtualClock()


@pytest.fixture
def lb_deployed(request: pytest.FixtureRequest, lb_deployment: Deployment, lb_clock: VirtualClock) -> SimDeployment:
    """The deployment applied to a new simulator on ``lb_clock``, its health checks running."""
    __tracebackhide__ = True
    from lbcore import LBError
    from lbcore.sim import SimBackend
    from lbcore.sim.deployment import SimDeployment

    kernel = str(request.config.getini(INI_KERNEL) or "6.1")
    try:
        return SimDeployment(lb_deployment, SimBackend(clock=lb_clock, kernel=kernel))
    except LBError as exc:
        problem = f"the deployment does not apply to the simulator: {type(exc).__name__}: {exc}"
    return _fail(problem)  # type: ignore[no-any-return]


@pytest.fixture
def lb_balancer(lb_deployed: SimDeployment) -> Balancer[SimBackend]:
    """The :class:`~lbcore.Balancer` of ``lb_deployed``: the simulator, with the deployment applied."""
    return lb_deployed.balancer
