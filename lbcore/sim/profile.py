"""Kernel profiles: the build options and release whose behaviour the simulator reproduces."""

from __future__ import annotations

import attrs

from lbcore._fields import Validator, int_in, value_object
from lbcore.enums import Scheduler
from lbcore.errors import InvalidField

# ip_vs_mh.c primes[], indexed by CONFIG_IP_VS_MH_TAB_INDEX - 8.
MH_PRIMES = (251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131071)


def _bits(lo: int, hi: int) -> Validator:
    return int_in(lo, hi, "in its Kconfig range")


@value_object
@attrs.frozen
class KernelProfile:
    """The kernel the simulator mirrors: its release and the IPVS build options that change decisions.

    The defaults are Debian's Linux 6.1 (the kernel of the test harness): HZ=250 and the Kconfig
    defaults for every IPVS table. A kernel built with other table sizes hashes clients to other
    buckets (sh, dh, mh) and caches differently (lblc, lblcr); give its options here.

    .. versionadded:: 0.1
    """

    release: str = attrs.field(default="6.1")
    hz: int = attrs.field(default=250, validator=_bits(100, 1000))
    conn_tab_bits: int = attrs.field(default=12, validator=_bits(8, 20))  # CONFIG_IP_VS_TAB_BITS
    sh_tab_bits: int = attrs.field(default=8, validator=_bits(4, 20))  # CONFIG_IP_VS_SH_TAB_BITS
    dh_tab_bits: int = attrs.field(default=8, validator=_bits(4, 20))  # CONFIG_IP_VS_DH_TAB_BITS
    mh_tab_index: int = attrs.field(default=12, validator=_bits(8, 17))  # CONFIG_IP_VS_MH_TAB_INDEX
    lblc_tab_bits: int = attrs.field(default=10, validator=_bits(1, 20))  # fixed in the source
    lblcr_tab_bits: int = attrs.field(default=10, validator=_bits(1, 20))

    @property
    def schedulers(self) -> frozenset[Scheduler]:
        """Which schedulers this release has (twos came in Linux 6.2)."""
        if self.release == "6.1":
            return frozenset(Scheduler) - {Scheduler.TWOS}
        return frozenset(Scheduler)

    def lacks(self, scheduler: Scheduler) -> str | None:
        """Why this release has no ``scheduler``, naming a release that has it; None if it has it."""
        if scheduler in self.schedulers:
            return None
        have = sorted(r for r in RELEASES if scheduler in KernelProfile(release=r).schedulers)
        return (f"Linux {self.release} has no {scheduler} scheduler (it came in Linux {have[0]}: "
                f'SimBackend(kernel="{have[0]}") has it)')

    def __attrs_post_init__(self) -> None:
        if self.release not in RELEASES:
            raise InvalidField(
                "KernelProfile", "release", self.release,
                f"is not a release the simulator reproduces ({', '.join(sorted(RELEASES))})",
            )

    @property
    def conn_tab_size(self) -> int:
        """Buckets of the connection table (``size=`` in ipvsadm -L)."""
        return 1 << self.conn_tab_bits

    @property
    def mh_tab_size(self) -> int:
        """Slots of the Maglev lookup table (a prime)."""
        return MH_PRIMES[self.mh_tab_index - 8]


# Releases whose IPVS the simulator reproduces. 6.1 is checked against a real kernel (recorded
# traces, differential replay); 6.2 adds twos (ip_vs_twos.c), its only change that decides
# connections (the new estimator changes when rates update, not what they are).
RELEASES = frozenset({"6.1", "6.2"})

LINUX_6_1 = KernelProfile()
