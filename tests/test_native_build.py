"""The compiled pieces (maml/native_build.py): the MuJoCo stepping loop and the fused MLP kernels build into
the cache on first use, rebuild a damaged cache entry, and fall back with one warning where no compiler
works; MAML_BENCH_NATIVE=0 turns them off."""

import ctypes
import re
import shutil
from pathlib import Path

import pytest

from maml import native_build
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


HAS_COMPILER = shutil.which("cc") is not None or shutil.which("gcc") is not None
ANSWER = "int maml_bench_answer(void) { return 42; }\n"
"""A C source that compiles in a blink, for the build machinery alone."""


def _script(path: Path, body: str) -> Path:
    """An executable shell script at ``path`` (a stand-in compiler)."""
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return path


def _load_answer(target: Path, source: Path) -> ctypes.CDLL | None:
    return native_build.load_or_warn(
        "the answer is unknown", lambda: native_build.build_and_load(target, source, [])
    )


def test_a_failing_compilers_output_is_in_the_warning(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A compiler that fails tells why on its standard error: the fallback's warning quotes the command and
    that text verbatim (every line of it), and leaves nothing behind."""
    failing = _script(
        tmp_path / "failing-cc", "echo 'error: first line' >&2\necho 'error: second line' >&2\nexit 1"
    )
    monkeypatch.setenv("CC", str(failing))
    source = tmp_path / "answer.c"
    source.write_text(ANSWER)
    target = tmp_path / "native" / "answer.so"
    with pytest.warns(RuntimeWarning, match="the answer is unknown") as warned:
        assert _load_answer(target, source) is None
    message = str(warned[0].message)
    assert f"{failing} -shared -fPIC {source} -o " in message
    assert message.endswith(" failed:\nerror: first line\nerror: second line")
    assert list(target.parent.iterdir()) == []


@pytest.mark.skipif(not HAS_COMPILER, reason="no C compiler")
def test_a_cached_library_is_loaded_without_compiling(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Once built, the library is loaded from the cache as it is: a later process needs no compiler (here one
    that fails on every call) and the file is not rewritten."""
    source = tmp_path / "answer.c"
    source.write_text(ANSWER)
    target = tmp_path / "native" / "answer.so"
    library = _load_answer(target, source)
    assert library is not None and library.maml_bench_answer() == 42
    built = target.stat()
    monkeypatch.setenv("CC", str(_script(tmp_path / "failing-cc", "exit 1")))
    again = native_build.build_and_load(target, source, [])
    assert again.maml_bench_answer() == 42
    assert (target.stat().st_ino, target.stat().st_mtime_ns) == (built.st_ino, built.st_mtime_ns)


def test_the_compiler_is_cc_else_gcc(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Without ``$CC`` the compiler is ``cc`` on the path, else ``gcc`` (a system with only one of them still
    builds); ``$CC`` wins over both; none at all is an ``OSError`` (the fallback's cue)."""
    monkeypatch.delenv("CC", raising=False)
    for names, expected in ((("cc",), "cc"), (("gcc",), "gcc"), (("cc", "gcc"), "cc")):
        folder = tmp_path / "-".join(names)
        folder.mkdir()
        for name in names:
            _script(folder / name, "exit 0")
        monkeypatch.setenv("PATH", str(folder))
        assert native_build.compiler() == str(folder / expected)
    monkeypatch.setenv("CC", "/opt/my-cc")
    assert native_build.compiler() == "/opt/my-cc"
    monkeypatch.delenv("CC")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(OSError, match="no C compiler"):
        native_build.compiler()


@pytest.mark.parametrize(
    "files",
    [
        pytest.param(["include/mujoco/mujoco.h"], id="no-library"),
        pytest.param(["libmujoco.so.3.3.0"], id="no-headers"),
    ],
)
def test_a_mujoco_without_its_library_or_headers_falls_back(
    files: list[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A ``mujoco`` package that ships no ``libmujoco`` or no headers cannot build the stepping loop: the
    batch steps in Python after one warning that says why, nothing raises."""
    package = tmp_path / "mujoco"
    for name in files:
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        (package / name).write_text("")
    monkeypatch.setattr(native_step.mujoco, "__file__", str(package / "__init__.py"))
    monkeypatch.setenv("MAML_BENCH_CACHE", str(tmp_path / "cache"))
    native_step.load.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match=re.escape(f"mujoco package at {package} ships no libmujoco")):
            assert native_step.load() is None
    finally:
        native_step.load.cache_clear()
