"""Package discovery for the remapped folders (see [tool.setuptools] in pyproject.toml)."""
from setuptools import find_namespace_packages, setup

ROOTS = {"mlplat": "mlplat", "mlplat_providers": "providers", "mlplat_policies": "policies"}


def _packages() -> list[str]:
    found = []
    for name, folder in ROOTS.items():
        found.append(name)
        # namespace discovery also ships data folders such as mlplat/migrations
        found += [f"{name}.{sub}" for sub in find_namespace_packages(folder, exclude=["*__pycache__*"])]
    return found


setup(packages=_packages())
