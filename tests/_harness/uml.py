"""Boot a real Linux kernel with IPVS (user-mode Linux) and run one command inside it.

This machine's kernel has no IPVS, so tests that need the real thing boot Debian's user-mode Linux
(package ``user-mode-linux``): a Linux kernel that runs as an ordinary program, ``linux.uml``,
with its modules under ``/usr/lib/uml/modules/<version>/``. Its root file system is the host's
own (``hostfs``), so the project's virtualenv, pytest and source tree are at the same paths inside.

One call of :func:`run_in_uml` is one boot::

    linux.uml mem=512M rootfstype=hostfs rw init=<work>/init con=null con0=fd:0,fd:1 \\
        umid=... uml_dir=<work>/uml quiet

``init`` runs as PID 1: a short shell script that starts this interpreter on :func:`_init` (its
source, copied into the work directory), and halts should that fail. ``_init`` mounts ``proc``,
``sysfs``, ``devpts`` and ``tmpfs`` on ``/run`` and ``/dev/shm`` (so ``ip netns`` and friends
write nothing to the host), makes ``TMPDIR`` on a tmpfs, loads the modules in the order
``modules.dep`` gives (module autoloading cannot find them: they are not under ``/lib/modules``),
brings ``lo`` up, runs the command in ``cwd`` with stdin from ``/dev/null`` and stdout and stderr
into one file, writes its exit status, and powers the kernel off. Files are how results come
back: the work directory is on the host file system, at the same path inside.

Facts of this workplace that shape it:

- **Floating-point state.** The packaged kernel (6.1) moves a process's extended FPU state
  (XSAVE) through ptrace in a buffer sized for x87, SSE and AVX (832 bytes); on hosts with AVX-512
  or AMX the host kernel wants the whole state and refuses it (EFAULT), and the boot panics with
  ``ptrace set fp regs failed, errno = 14``.
  ``linux.uml`` therefore runs under a seccomp filter that fails its ``PTRACE_GETREGSET`` probe
  for ``NT_X86_XSTATE``, and the kernel falls back to the legacy FXSAVE area (x87 and SSE). That
  area has no AVX registers, which then do not survive the kernel's page faults and system calls:
  programs inside are told not to use AVX (``GLIBC_TUNABLES`` for glibc's string functions,
  ``OPENSSL_ia32cap`` for OpenSSL). Without that, ``ls`` crashes and Python fails to start. Code
  run inside must not choose AVX by itself (numpy would).
- **Speed.** Each ``exec`` inside costs about 50 ms; 40 ``insmod`` runs took 2 s. The init loads
  modules with ``finit_module(2)``, the call ``insmod`` makes, from its one process (60 ms).
- **What the host sees.** Commands run with ``TMPDIR`` on a tmpfs and
  ``PYTHONDONTWRITEBYTECODE=1``; ``/tmp`` itself stays the host's, because the checkout or the
  virtualenv may live there. Anything else a command writes goes to the host, as root.

Every command inside gets ``LBCORE_IN_UML=1``. Boot, mounts and the default modules take about
1.5 s here (:attr:`UMLResult.boot_seconds`).

"""

from __future__ import annotations

import contextlib
import inspect
import json
import math
import os
import re
import shlex
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO

import attrs

from lbcore.enums import Scheduler
from lbcore.errors import BackendError, BackendUnavailable

__all__ = [
    "DEFAULT_MODULES",
    "IN_UML_ENV",
    "IPVS_MODULES",
    "NETFILTER_MODULES",
    "UMLKernel",
    "UMLResult",
    "find_uml",
    "load_order",
    "run_in_uml",
]

#: The environment variable set to ``"1"`` for every command run inside the kernel.
IN_UML_ENV = "LBCORE_IN_UML"

#: ip_vs and one module per scheduler, in :class:`~lbcore.enums.Scheduler` order. A kernel may
#: lack some (Linux 6.1 has no ``ip_vs_twos``, which came in 6.2); those are skipped and listed in
#: :attr:`UMLResult.modules_missing`.
IPVS_MODULES: tuple[str, ...] = ("ip_vs", *(f"ip_vs_{s.value}" for s in Scheduler))

#: What iptables needs for filter, nat (REDIRECT, DNAT, MASQUERADE) and mangle (MARK, for fwmark
#: services) inside network namespaces. Debian's UML 6.1 has no ``nft_chain_nat``: nf_tables has
#: no nat chains there, so nat inside UML takes ``iptables-legacy``.
NETFILTER_MODULES: tuple[str, ...] = (
    "ip_tables",
    "iptable_filter",
    "iptable_nat",
    "iptable_mangle",
    "xt_tcpudp",
    "xt_conntrack",
    "xt_mark",
    "xt_comment",
    "xt_multiport",
    "xt_nat",
    "xt_REDIRECT",
    "xt_MASQUERADE",
    "nf_tables",
    "nft_compat",
    "nft_ct",
)

#: What :func:`run_in_uml` loads unless told otherwise: IPVS, ``veth`` and ``dummy`` links, and
#: netfilter.
DEFAULT_MODULES: tuple[str, ...] = (*IPVS_MODULES, "veth", "dummy", *NETFILTER_MODULES)

_UML_PACKAGE = "user-mode-linux"
_UML_BINARY = "/usr/bin/linux.uml"
_MODULES_ROOT = "/usr/lib/uml/modules"
_SBIN = ("/usr/local/sbin", "/usr/sbin", "/sbin")
#: glibc's string functions and OpenSSL choose AVX code by CPUID; these turn that off (see the
#: module docstring). hwcaps names are glibc's (sysdeps/x86/cpu-tunables.c).
_NO_AVX_ENV = {
    "GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX,-AVX2,-AVX512F,-AVX512VL,-AVX512BW,-AVX512DQ,"
    "-AVX512CD,-AVX_Fast_Unaligned_Load",
    # First word: CPUID.1 without bit 60 (ECX.28, AVX); second word: no CPUID.7 feature at all
    # (AVX2, AVX-512, VAES...).
    "OPENSSL_ia32cap": "~0x1000000000000000:0",
}
_INNER_TMPDIR = "/run/lbcore-tmp"
#: Module parameters: tests make their own dummy links, so none is made at load time.
_MODULE_PARAMETERS = {"dummy": "numdummies=0"}
_KO_SUFFIX = re.compile(r"\.ko(\.(gz|xz|zst))?$")


@attrs.frozen
class UMLKernel:
    """A user-mode Linux kernel and its modules, as :func:`find_uml` found them.

    Attributes:
        binary: the kernel program, e.g. ``/usr/bin/linux.uml``.
        version: its release, e.g. ``"6.1.176"``.
        module_dir: ``/usr/lib/uml/modules/<version>``, which holds ``modules.dep``.
    """

    binary: str
    version: str
    module_dir: str


@attrs.frozen
class UMLResult:
    """What one boot of :func:`run_in_uml` gave back.

    Attributes:
        returncode: the command's exit status; negative for a signal, as in :mod:`subprocess`;
            127 if it could not be started.
        output: its stdout and stderr, interleaved as written.
        kernel_seconds: kernel uptime when init started: the kernel's own boot.
        boot_seconds: kernel uptime when the command started: boot, mounts and modules.
        elapsed_seconds: host wall-clock time of the whole run, start to power-off.
        modules_missing: requested modules this kernel does not have (not in ``modules.dep``).
        console: the kernel console (its warnings, a panic's trace); for diagnosis only.
    """

    returncode: int
    output: str
    kernel_seconds: float
    boot_seconds: float
    elapsed_seconds: float
    modules_missing: tuple[str, ...]
    console: str


def find_uml(binary: str = _UML_BINARY) -> UMLKernel:
    """Find the user-mode Linux kernel and its module directory.

    Args:
        binary: path of the kernel program.

    Returns:
        The kernel, its version and its module directory.

    Raises:
        BackendUnavailable: the kernel or its modules are missing; the message names the Debian
            package to install. Callers treat this as a failure, not a reason to skip.
    """
    if not os.access(binary, os.X_OK):
        raise BackendUnavailable("uml", f"{binary} not found: install Debian's {_UML_PACKAGE!r} package")
    try:
        version = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=30, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        raise BackendUnavailable("uml", f"{binary} --version failed: {exc}") from exc
    module_dir = os.path.join(_MODULES_ROOT, version)
    if not os.path.isfile(os.path.join(module_dir, "modules.dep")):
        raise BackendUnavailable(
            "uml",
            f"{module_dir}/modules.dep not found for {binary} {version}: install Debian's {_UML_PACKAGE!r} package",
        )
    return UMLKernel(binary=binary, version=version, module_dir=module_dir)


def load_order(module_dir: str, names: Iterable[str]) -> tuple[list[str], list[str]]:
    """Order modules and their dependencies for loading, as ``modules.dep`` says.

    Args:
        module_dir: the directory holding ``modules.dep``.
        names: module names; ``-`` and ``_`` are the same, as for modprobe.

    Returns:
        The module files to load, every dependency before its users, each once; and the names
        that ``modules.dep`` does not know.
    """
    deps: dict[str, list[str]] = {}
    paths: dict[str, str] = {}
    with open(os.path.join(module_dir, "modules.dep"), encoding="utf-8") as dep_file:
        for line in dep_file:
            target, sep, rest = line.partition(":")
            if sep:
                name = _module_name(target)
                paths[name] = os.path.join(module_dir, target)
                deps[name] = [_module_name(dep) for dep in rest.split()]
    order: list[str] = []
    missing: list[str] = []
    for name in names:
        key = name.replace("-", "_")
        if key not in deps:
            missing.append(name)
            continue
        # A line lists every dependency, users before what they use; modprobe loads it from the
        # end. The order matters beyond symbols: nf_defrag_ipv6 lists no dependency, yet the
        # kernel refuses it (EINVAL) until ipv6 is loaded, which ip_vs's line puts first.
        for module in [*reversed(deps[key]), key]:
            if paths[module] not in order:
                order.append(paths[module])
    return order, missing


def run_in_uml(
    argv: Sequence[str],
    *,
    cwd: str,
    env: Mapping[str, str] | None = None,
    timeout: float = 600.0,
    mem: str = "512M",
    modules: Sequence[str] = DEFAULT_MODULES,
    workdir: str | None = None,
    kernel: UMLKernel | None = None,
    cancel: threading.Event | None = None,
) -> UMLResult:
    """Boot user-mode Linux, run ``argv`` inside it as root, and power it off.

    Args:
        argv: the command; the first item is looked up on the inner ``PATH``.
        cwd: the directory to run it in (a host path; the same inside).
        env: its environment; by default this process's. ``LBCORE_IN_UML=1``, ``TMPDIR``,
            ``PYTHONDONTWRITEBYTECODE=1`` and the no-AVX settings are always set, and the sbin
            directories are appended to ``PATH``.
        timeout: seconds for the whole run, boot included; then the kernel is killed.
        mem: the kernel's memory (``mem=``).
        modules: modules to load before the command; those the kernel lacks are skipped and
            reported in :attr:`UMLResult.modules_missing`.
        workdir: a host directory for this run's files (init, output, console), visible inside
            at the same path, so the command can leave files there for the caller. By default a
            temporary directory, removed afterwards.
        kernel: the kernel to boot; by default :func:`find_uml`'s.
        cancel: when set (from another thread), the kernel is killed as on a timeout.

    Returns:
        The command's exit status and output, and timings.

    Raises:
        BackendUnavailable: user-mode Linux is not installed.
        BackendError: the kernel did not run the command to the end: it timed out, panicked, or
            a module failed to load. The message holds the tail of the init log, and names the
            console log (``<workdir>/console.log``), or holds its tail if the directory is a
            temporary one.
    """
    kernel = kernel or find_uml()
    to_load, missing = load_order(kernel.module_dir, modules)
    work = Path(tempfile.mkdtemp(prefix="lbcore-uml-") if workdir is None else workdir).resolve()
    try:
        for stale in ("status", "output", "init.log", "boot.json", "console.log"):
            (work / stale).unlink(missing_ok=True)
        config = {
            "work": str(work),
            "argv": list(argv),
            "cwd": cwd,
            "env": _inner_env(env),
            "modules": [[path, _MODULE_PARAMETERS.get(_module_name(path), "")] for path in to_load],
            "tmpdir": _INNER_TMPDIR,
        }
        (work / "config.json").write_text(json.dumps(config, indent=1))
        (work / "init.py").write_text(
            "from __future__ import annotations\nimport sys\n\n\n"
            + inspect.getsource(_init)
            + "\n\n_init(sys.argv[1])\n"
        )
        script = work / "init"
        script.write_text(_init_script(work))
        script.chmod(0o755)
        (work / "uml").mkdir(exist_ok=True)
        command = [
            kernel.binary,
            f"mem={mem}",
            "rootfstype=hostfs",
            "rw",
            f"init={script}",
            "con=null",
            "con0=fd:0,fd:1",
            f"umid=lbcore-{os.getpid()}-{time.monotonic_ns()}",
            f"uml_dir={work / 'uml'}",
            "quiet",
        ]
        started = time.monotonic()
        with open(work / "console.log", "wb") as console:
            _boot(command, console, timeout, cancel)
        return _result(work, missing, time.monotonic() - started, keep=workdir is not None)
    finally:
        if workdir is None:
            shutil.rmtree(work, ignore_errors=True)


def _module_name(path: str) -> str:
    return _KO_SUFFIX.sub("", os.path.basename(path)).replace("-", "_")


def _inner_env(env: Mapping[str, str] | None) -> dict[str, str]:
    inner = dict(os.environ if env is None else env)
    inner.pop("PYTEST_CURRENT_TEST", None)
    path = [p for p in inner.get("PATH", "/usr/local/bin:/usr/bin:/bin").split(":") if p]
    inner["PATH"] = ":".join(path + [p for p in _SBIN if p not in path])
    inner.update(_NO_AVX_ENV)
    inner.update({IN_UML_ENV: "1", "TMPDIR": _INNER_TMPDIR, "PYTHONDONTWRITEBYTECODE": "1"})
    return inner


def _init_script(work: Path) -> str:
    q = shlex.quote
    no_avx = " ".join(q(f"{key}={value}") for key, value in _NO_AVX_ENV.items())
    # -I -S: the init needs the standard library only, and starts faster without site.
    return f"""#!/bin/sh
# Written by tests/_harness/uml.py: PID 1 of a user-mode Linux boot. init.py does the work.
export {no_avx}
W={q(str(work))}
exec >"$W/init.log" 2>&1 </dev/null
{q(sys.executable)} -I -S "$W/init.py" "$W/config.json"
# Reached only if init.py could not power off: keep its status, or say why there is none.
[ -s "$W/status" ] || echo "setup failed: init.py exited with status $?" >"$W/status"
sync
halt -f
poweroff -f
"""


def _init(config_path: str) -> None:  # pragma: no cover - runs as PID 1 inside user-mode Linux
    """Set the machine up, run the command, write its status and power off.

    run_in_uml copies this function's source into the boot's ``init.py``, so it imports what it
    uses and calls nothing else from this module.
    """
    import ctypes
    import errno
    import fcntl
    import json
    import os
    import socket
    import struct
    import subprocess
    import traceback

    with open(config_path, encoding="utf-8") as file:
        config = json.load(file)
    work = config["work"]
    libc = ctypes.CDLL(None, use_errno=True)

    def call(result: int, what: str) -> None:
        if result != 0:
            code = ctypes.get_errno()
            raise OSError(code, f"{what}: {os.strerror(code)}")

    def mount(fstype: str, target: str, options: str = "") -> None:
        os.makedirs(target, exist_ok=True)
        call(libc.mount(fstype.encode(), target.encode(), fstype.encode(), 0, options.encode()), f"mount {target}")

    def uptime() -> float:
        with open("/proc/uptime", encoding="ascii") as file:
            return float(file.read().split()[0])

    def write(name: str, text: str) -> None:
        with open(os.path.join(work, name), "w", encoding="utf-8") as file:
            file.write(text)

    try:
        started = 0.0
        mount("proc", "/proc")
        started = uptime()
        mount("sysfs", "/sys")
        with open("/proc/mounts", encoding="ascii") as file:
            if " /dev devtmpfs " not in file.read():
                mount("devtmpfs", "/dev")  # before anything is made under /dev: else the host's
        mount("tmpfs", "/dev/shm", "mode=1777")
        mount("devpts", "/dev/pts", "newinstance,ptmxmode=0666")
        mount("tmpfs", "/run", "mode=0755")
        os.mkdir(config["tmpdir"])
        os.chmod(config["tmpdir"], 0o1777)
        with open("/proc/sys/kernel/hostname", "w", encoding="ascii") as file:
            file.write("lbcore-uml")
        for path, parameters in config["modules"]:
            # finit_module(2), syscall 313 on x86_64; compressed modules need the kernel's help.
            flags = 0 if path.endswith(".ko") else 4  # MODULE_INIT_COMPRESSED_FILE
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                if libc.syscall(313, fd, parameters.encode(), flags) != 0 and ctypes.get_errno() != errno.EEXIST:
                    call(-1, f"finit_module {path}")
            finally:
                os.close(fd)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:  # ip link set lo up
            ifreq = struct.pack("16sH22x", b"lo", 0)
            lo_flags = struct.unpack("16sH22x", fcntl.ioctl(sock, 0x8913, ifreq))[1]  # SIOCGIFFLAGS
            fcntl.ioctl(sock, 0x8914, struct.pack("16sH22x", b"lo", lo_flags | 0x1))  # SIOCSIFFLAGS, IFF_UP
        write("boot.json", json.dumps({"kernel": started, "command": uptime()}))
    except Exception:  # every setup failure is reported the same way
        write("status", "setup failed: " + traceback.format_exc())
    else:
        with open(os.path.join(work, "output"), "wb") as output:
            try:
                status = subprocess.run(
                    config["argv"],
                    cwd=config["cwd"],
                    env=config["env"],
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    check=False,
                ).returncode
            except OSError as exc:
                output.write(f"lbcore-uml: cannot run {config['argv']!r} in {config['cwd']}: {exc}\n".encode())
                status = 127
        write("status", str(status))
    os.sync()
    libc.reboot(0x4321FEDC)  # LINUX_REBOOT_CMD_POWER_OFF


def _seccomp_no_xstate() -> bytes:
    """A seccomp program that fails ptrace(PTRACE_GETREGSET/SETREGSET, NT_X86_XSTATE) with EIO."""

    def ins(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
        return struct.pack("=HBBI", code, jt, jf, k)

    ld, jeq, ret = 0x20, 0x15, 0x06  # BPF_LD|BPF_W|BPF_ABS, BPF_JMP|BPF_JEQ|BPF_K, BPF_RET|BPF_K
    audit_arch_x86_64, nr_ptrace = 0xC000003E, 101
    getregset, setregset, nt_x86_xstate = 0x4204, 0x4205, 0x202
    allow, eio = 0x7FFF0000, 0x00050000 | 5
    # struct seccomp_data: nr at 0, arch at 4, args[i] at 16 + 8 * i (low half first).
    return b"".join(
        [
            ins(ld, 4),
            ins(jeq, audit_arch_x86_64, 0, 7),  # another architecture: allow
            ins(ld, 0),
            ins(jeq, nr_ptrace, 0, 5),  # not ptrace: allow
            ins(ld, 16),
            ins(jeq, getregset, 1, 0),
            ins(jeq, setregset, 0, 2),  # neither GETREGSET nor SETREGSET: allow
            ins(ld, 32),
            ins(jeq, nt_x86_xstate, 1, 0),  # NT_X86_XSTATE: EIO
            ins(ret, allow),
            ins(ret, eio),
        ]
    )


#: Run by this interpreter as ``python -c LAUNCHER <program hex> <kernel> <args...>``: no core
#: dumps, killed with its parent, install the seccomp program, then become the kernel. A process of its own rather than
#: ``preexec_fn``, which is unsafe when the caller has threads.
_LAUNCHER = """
import ctypes, os, resource, sys
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
program = bytes.fromhex(sys.argv[1])
buffer = ctypes.create_string_buffer(program, len(program))
class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
fprog = SockFprog(len(program) // 8, ctypes.addressof(buffer))
libc = ctypes.CDLL(None, use_errno=True)
libc.prctl(1, 9, 0, 0, 0)  # PR_SET_PDEATHSIG, SIGKILL: the kernel goes if the thread that started it dies
if libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
    sys.exit(f"prctl(PR_SET_NO_NEW_PRIVS): {os.strerror(ctypes.get_errno())}")
if libc.prctl(22, 2, ctypes.byref(fprog), 0, 0) != 0:  # PR_SET_SECCOMP, SECCOMP_MODE_FILTER
    sys.exit(f"prctl(PR_SET_SECCOMP): {os.strerror(ctypes.get_errno())}")
os.execv(sys.argv[2], sys.argv[2:])
"""


def _boot(command: Sequence[str], console: IO[bytes], timeout: float, cancel: threading.Event | None) -> None:
    launch = [sys.executable, "-I", "-S", "-c", _LAUNCHER, _seccomp_no_xstate().hex(), *command]
    # A session of its own, so that the kernel's helper processes can be ended with it.
    process = subprocess.Popen(
        launch, stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT, start_new_session=True
    )
    deadline = time.monotonic() + timeout
    try:
        while not (cancel is not None and cancel.is_set()):
            try:
                process.wait(timeout=max(0.0, min(0.5, deadline - time.monotonic())))
                break
            except subprocess.TimeoutExpired:
                if time.monotonic() >= deadline:
                    break
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _result(work: Path, missing: Sequence[str], elapsed: float, *, keep: bool) -> UMLResult:
    def read(name: str) -> str:
        try:
            return (work / name).read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    status, console = read("status").strip(), read("console.log")
    if not re.fullmatch(r"-?\d+", status):
        reason = status or f"no exit status after {elapsed:.1f} s: the kernel timed out or died"
        # The console is the kernel's own chatter (IPVS warns on every drop): a file to read, not
        # a message to print, unless nobody will find the file afterwards.
        where = (f"kernel console: {work / 'console.log'}" if keep
                 else f"--- kernel console ---\n{console[-4000:]}")
        init_log = "\n".join(read("init.log").splitlines()[-20:])
        raise BackendError("uml", f"{reason}\n--- init log ---\n{init_log}\n{where}")
    boot = json.loads(read("boot.json") or "{}")
    return UMLResult(
        returncode=int(status),
        output=read("output"),
        kernel_seconds=boot.get("kernel", math.nan),
        boot_seconds=boot.get("command", math.nan),
        elapsed_seconds=elapsed,
        modules_missing=tuple(missing),
        console=console,
    )
