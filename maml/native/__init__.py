"""Compiled CPU kernels (C sources built on first use, see :mod:`maml.native_build`)."""
