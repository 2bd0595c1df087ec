"""Foreign formats: each is text in, lbcore's model (or a neutral snapshot) out, or the reverse.

* :mod:`lbcore.formats.ipvsadm`: ipvsadm command lines and ``ipvsadm-save -n``, both ways.
* :mod:`lbcore.formats.listing`: ipvsadm's listings ("Layer 4 Status" ``-Ln`` and its variants,
  "Layer 4 Current Connections" ``-Lnc``, ``--timeout``, ``/proc/net/ip_vs_conn``), rendered
  from a :class:`~lbcore.formats.listing.Snapshot` that any backend with a data plane produces.
* :mod:`lbcore.formats.trace`: traces, the contract between the simulator and a kernel.
* :mod:`lbcore.formats.yaml`: the deployment file, a whole :class:`~lbcore.Deployment` as YAML.

.. versionadded:: 0.3
"""
