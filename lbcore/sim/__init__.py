"""The simulator backend: the kernel's IPVS, modelled in memory on a virtual clock."""

from lbcore.sim.backend import Connection, SimBackend

__all__ = ["Connection", "SimBackend"]
