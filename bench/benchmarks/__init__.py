"""pytest-benchmark suites (``nox -s bench``): the meta-gradient kernel and the sampler."""
