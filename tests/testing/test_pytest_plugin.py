"""The pytest plugin (lbcore.testing.pytest_plugin), run as a user runs it: their test file, their deployment.

Each test writes a user's project (a deployment file, a test file, maybe an ini file) and runs
pytest on it with pytester. The plugin is loaded by its module name with the entry point's name
blocked (``-p no:lbcore``), so the run is the same whether or not the installed lbcore declares
the entry point.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

# pytester is pytest's own fixture for running pytest on files a test writes. A conftest outside
# the rootdir's top level may not name plugins (pytest refuses it), so this module does.
pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parent.parent.parent
PLUGIN = ("-p", "no:lbcore", "-p", "lbcore.testing.pytest_plugin", "-p", "no:cacheprovider")


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest(*PLUGIN, *args)


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    """A user's project holding the guide's Option 1A deployment file."""
    (pytester.path / "option-1a.yaml").write_text((ROOT / "examples" / "option-1a.yaml").read_text())
    pytester.syspathinsert(ROOT)
    return pytester


def test_a_users_tests_pass_and_fail_with_clear_messages(project: pytest.Pytester) -> None:
    project.makepyfile(test_deployment='''
        import pytest
        from lbcore.testing.assertions import assert_balanced, assert_sticky

        VIP, PORT = "192.168.2.202", 8080
        GATEWAYS = ["192.168.2.210:8080", "192.168.2.211:8080", "192.168.2.212:8080"]


        @pytest.mark.lbcore_deployment("option-1a.yaml")
        def test_new_clients_spread_over_the_gateways(lb_deployed):
            conns = [lb_deployed.connect(c, VIP, PORT) for c in lb_deployed.clients(300)]
            assert_balanced(conns, among=GATEWAYS, tolerance=0.1)


        @pytest.mark.lbcore_deployment("option-1a.yaml")
        def test_clients_keep_their_gateway(lb_deployed):
            clients = lb_deployed.clients(50)
            first = [lb_deployed.connect(c, VIP, PORT) for c in clients]
            lb_deployed.advance(600)
            again = [lb_deployed.connect(c, VIP, PORT) for c in clients]
            assert_sticky(first + again)


        @pytest.mark.lbcore_deployment("option-1a.yaml")
        def test_one_gateway_takes_everything(lb_deployed):
            conns = [lb_deployed.connect(c, VIP, PORT) for c in lb_deployed.clients(30)]
            assert_balanced(conns, among=GATEWAYS[:1])
    ''')
    result = run(project)
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.re_match_lines([
        re.escape("E       AssertionError: not balanced: real servers outside ['192.168.2.210:8080'] took connections: "
                  "['192.168.2.211:8080', '192.168.2.212:8080']; 192.168.2.210:8080 took ")
        + r"\d+\.\d%, expected 100.0%.*",
        r"E       30 connections:",
        r"E         192\.168\.2\.210:8080: \d+ \(\d+\.\d%, expected 100\.0%\)  <- off",
        r"E         192\.168\.2\.211:8080: \d+ \(\d+\.\d%, expected none\)  <- not among them",
    ])


def test_fail_goes_through_the_deployments_health_checks(project: pytest.Pytester) -> None:
    project.makepyfile(test_failover='''
        import pytest
        from lbcore.testing.assertions import assert_sticky

        VIP, PORT, GW2 = "192.168.2.202", 8080, "192.168.2.211"


        @pytest.mark.lbcore_deployment("option-1a.yaml")
        def test_a_failed_gateway_is_quiesced_after_three_failed_checks(lb_deployed, lb_clock):
            lb_deployed.fail(GW2, at=5)
            lb_deployed.run_until(34)
            assert lb_deployed.weights()[f"{GW2}:8080"] == 1  # checks at 10, 20, 30 fail; the last at 35
            lb_deployed.run_until(36)
            assert lb_deployed.weights()[f"{GW2}:8080"] == 0
            assert [(e.kind.value, e.time) for e in lb_deployed.health_events] == [("down", 35.0)]
            assert lb_clock.now() == 36


        @pytest.mark.lbcore_deployment("option-1a.yaml")
        def test_persistent_clients_of_a_quiesced_gateway_stay_on_it(lb_deployed):
            clients = lb_deployed.clients(60)
            before = [lb_deployed.connect(c, VIP, PORT) for c in clients]
            lb_deployed.fail(GW2)
            lb_deployed.advance(60)
            after = [lb_deployed.connect(c, VIP, PORT) for c in clients]
            assert_sticky(before + after)  # the kernel keeps templates to a weight-0 server
            assert any(c.real_server.exploded == GW2 for c in after)
            newcomers = [lb_deployed.connect(c, VIP, PORT) for c in lb_deployed.clients(200)[60:]]
            assert all(c.real_server.exploded != GW2 for c in newcomers)
    ''')
    run(project).assert_outcomes(passed=2)


def test_the_ini_option_names_the_deployment_and_lb_balancer_holds_it(project: pytest.Pytester) -> None:
    project.makeini("[pytest]\nlbcore_deployment = option-1a.yaml\n")
    project.makepyfile(test_ini='''
        def test_the_balancer_holds_the_service(lb_balancer):
            assert [str(key) for key in lb_balancer.read().services] == ["-t 192.168.2.202:8080"]
    ''')
    run(project).assert_outcomes(passed=1)


def test_a_deployment_object_or_an_ipvsadm_save_dump_works_too(project: pytest.Pytester) -> None:
    (project.path / "director.save").write_text("-A -t 192.0.2.1:80 -s rr\n-a -t 192.0.2.1:80 -r 198.51.100.1:80 -m\n")
    project.makepyfile(test_kinds='''
        import pytest
        from lbcore import Deployment, RealServer, VirtualService

        WEB = VirtualService("tcp", "192.0.2.2", 80, scheduler="rr", real_servers=[RealServer("198.51.100.2", 80)])


        @pytest.mark.lbcore_deployment(Deployment(services=[WEB]))
        def test_object(lb_deployed):
            assert lb_deployed.connect("203.0.113.1", "192.0.2.2", 80).endpoint == "198.51.100.2:80"


        @pytest.mark.lbcore_deployment("director.save")
        def test_dump(lb_deployed):
            assert lb_deployed.which("203.0.113.1", "192.0.2.1", 80) == "198.51.100.1:80"
    ''')
    run(project).assert_outcomes(passed=2)


def test_a_missing_or_broken_deployment_is_a_clear_error(project: pytest.Pytester) -> None:
    (project.path / "broken.yaml").write_text("services:\n  - protocol: tcp\n    address: 192.0.2.1\n    port: 70000\n")
    project.makepyfile(test_errors='''
        import pytest


        def test_unnamed(lb_deployed):
            pass


        @pytest.mark.lbcore_deployment("broken.yaml")
        def test_broken(lb_deployed):
            pass
    ''')
    result = run(project)
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines([
        "*lbcore: no deployment for test_errors.py::test_unnamed: mark the test with "
        "@pytest.mark.lbcore_deployment('deploy.yaml') or set the ini option lbcore_deployment",
        "*lbcore: cannot load the deployment */broken.yaml: ConfigError: */broken.yaml:4:11: services?0?.port: "
        "70000 is not a port (0..65535)",
    ])
    assert "Traceback" not in result.stdout.str() and "During handling" not in result.stdout.str()


def test_the_plugin_is_inert_for_tests_that_do_not_use_it(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_plain='''
        import pytest


        @pytest.fixture
        def clock():
            return "mine"


        def test_own_fixture(clock):
            assert clock == "mine"


        @pytest.mark.parametrize("n", [1, 2])
        def test_param(n):
            assert n
    ''')
    with_plugin = run(pytester, "--strict-markers")
    without = pytester.runpytest("-p", "no:lbcore", "-p", "no:cacheprovider", "--strict-markers")
    with_plugin.assert_outcomes(passed=3)
    without.assert_outcomes(passed=3)
    fixtures = run(pytester, "--fixtures").stdout.str()
    assert {"lb_deployment", "lb_load_deployment", "lb_clock", "lb_deployed", "lb_balancer"} <= {
        line.split()[0] for line in fixtures.splitlines() if line.startswith("lb_")}


def test_setup_py_registers_the_plugin_under_pytest11() -> None:
    tree = ast.parse((ROOT / "setup.py").read_text())
    entry_points = next(k.value for node in ast.walk(tree) if isinstance(node, ast.Call)
                        for k in node.keywords if k.arg == "entry_points")
    assert ast.literal_eval(entry_points)["pytest11"] == ["lbcore = lbcore.testing.pytest_plugin"]
