# For Debian's pybuild (distutils plugin); all metadata is in setup.cfg.
from setuptools import setup

setup()
