"""The package list, derived: every package under ``compress/`` plus ``export/`` and ``kernels/``
(kept at the top of the tree, installed as ``compress.export`` and ``compress.kernels``). The
metadata lives in pyproject.toml."""

from setuptools import find_packages, setup

MAPPED = {"compress.export": "export", "compress.kernels": "kernels"}


def packages() -> list[str]:
    own = find_packages(include=["compress", "compress.*"], exclude=[f"{n}*" for n in MAPPED])
    mapped = [f"{name}.{sub}" for name, folder in MAPPED.items() for sub in find_packages(folder)]
    return sorted({*own, *MAPPED, *mapped})


setup(packages=packages(), package_dir={"compress": "compress", **MAPPED})
