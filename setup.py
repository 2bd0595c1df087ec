"""lbcore: Linux layer-4 load balancing (IPVS, iptables) as Python objects, with a simulator."""

from setuptools import find_packages, setup

setup(
    name="lbcore",
    version="0.3.0",
    description="Linux layer-4 load balancing (IPVS, iptables) modelled in Python, with a kernel-exact simulator",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["lbcore", "lbcore.*"]) + ["lbcore_ipvs", "lbcore_iptables"],
    package_dir={"lbcore_ipvs": "backends/lbcore_ipvs", "lbcore_iptables": "backends/lbcore_iptables"},
    package_data={"lbcore": ["py.typed"]},
    # click: the `lbcore` console script is part of every install, so what it needs is too. rich only
    # draws tables on a terminal (plain text without it): the "cli" extra.
    install_requires=["attrs>=22.2", "cattrs>=23.1", "ruamel.yaml>=0.17.21", "click>=8.1", "google-re2>=1.1"],
    extras_require={
        "ipvs": ["pyroute2>=0.7"],
        "iptables": ["python-iptables>=1.0", "pyroute2>=0.7"],
        "cli": ["click>=8.1", "rich>=12"],
        "all": ["pyroute2>=0.7", "python-iptables>=1.0", "rich>=12", "matplotlib>=3.5"],
        "plot": ["matplotlib>=3.5"],
        "testing": ["pytest>=7", "hypothesis>=6", "simpy>=4", "mypy>=1.8", "jsonschema>=4"],
    },
    entry_points={
        "console_scripts": ["lbcore = lbcore.cli:main"],
        "pytest11": ["lbcore = lbcore.testing.pytest_plugin"],
        "lbcore.backends": [
            "sim = lbcore.sim:SimBackend",
            "ipvs = lbcore_ipvs:IPVSBackend",
            "iptables = lbcore_iptables:IPTablesBackend",
        ],
    },
)
