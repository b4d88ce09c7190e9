"""Maps the four top-level folders into the ``simbridge`` namespace.

``training/`` -> ``simbridge.training`` and so on (setuptools ``package-dir``). The package
list is computed here because pyproject.toml cannot discover sub-packages under a remapped
directory; everything else lives in pyproject.toml.
"""

from setuptools import find_packages, setup

LAYERS = ("training", "deploy", "calibration", "data")

package_dir = {f"simbridge.{layer}": layer for layer in LAYERS}
packages = []
for layer in LAYERS:
    packages.append(f"simbridge.{layer}")
    packages += [f"simbridge.{layer}.{sub}" for sub in find_packages(layer)]

setup(package_dir=package_dir, packages=packages)
