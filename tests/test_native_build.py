"""The compiled pieces (maml/native_build.py): the MuJoCo stepping loop and the fused MLP kernels build into
the cache on first use, rebuild a damaged cache entry, and fall back with one warning where no compiler
works; MAML_BENCH_NATIVE=0 turns them off."""

import shutil

import pytest

from maml.envs import native_step
from maml.native import mlp_kernels

MODULES = [
    pytest.param(native_step, "step in Python", id="stepping-loop"),
    pytest.param(mlp_kernels, "run in torch", id="mlp-kernels"),
]


@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None, reason="no C compiler")
@pytest.mark.parametrize(("module", "fallback"), MODULES)
def test_builds_from_an_empty_cache_and_rebuilds_a_damaged_one(module, fallback, monkeypatch, tmp_path):
    try:
        monkeypatch.setenv("MAML_BENCH_CACHE", str(tmp_path / "empty"))
        module.load.cache_clear()
        assert module.load() is not None
        assert [p.parent for p in tmp_path.rglob("*.so")] == [tmp_path / "empty" / "native"]
        assert not [p for p in (tmp_path / "empty" / "native").iterdir() if p.name.startswith(".build-")]

        monkeypatch.setenv("MAML_BENCH_CACHE", str(tmp_path / "damaged"))
        damaged = module.library_path()
        damaged.parent.mkdir(parents=True)
        damaged.write_bytes(b"not a shared library")  # e.g. left by a full disk
        module.load.cache_clear()
        assert module.load() is not None  # rebuilt, no fallback
        assert damaged.read_bytes()[:4] == b"\x7fELF"
    finally:
        module.load.cache_clear()


@pytest.mark.parametrize(("module", "fallback"), MODULES)
def test_falls_back_with_a_warning(module, fallback, monkeypatch, tmp_path):
    monkeypatch.setenv("MAML_BENCH_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    module.load.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match=fallback):
            assert module.load() is None
        assert not list(tmp_path.rglob("*.so"))  # nothing half-built left behind
        monkeypatch.setenv(module.SWITCH_ENV_VAR, "0")
        module.load.cache_clear()
        assert module.load() is None
    finally:
        module.load.cache_clear()
