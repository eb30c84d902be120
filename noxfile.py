"""Sessions: tests (default suite), slow (learning checks), bench (pytest-benchmark), reproduce (the main
job), lint (ruff), mutants (mutation testing of the algorithm core; hours, not in CI). Every session
installs the project with the one constraints file."""

import nox

nox.options.sessions = ["tests"]
nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True

CONSTRAINTS = ("-c", "constraints.txt")


def _install(session: nox.Session, extras: str = "test") -> None:
    session.install(*CONSTRAINTS, "-e", f".[{extras}]")


@nox.session
def tests(session: nox.Session) -> None:
    """The default suite (everything not marked slow); GPU tests skip where no CUDA device is present."""
    _install(session)
    session.run("pytest", *session.posargs)


@nox.session
def slow(session: nox.Session) -> None:
    """Learning checks and long end-to-end runs (tests marked `slow`)."""
    _install(session)
    session.run("pytest", "-m", "slow", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """pytest-benchmark suites (bench/benchmarks); the JSON lands in results/bench/cpu.json."""
    _install(session)
    session.run(
        "pytest",
        "bench/benchmarks",
        "-p",
        "no:cacheprovider",
        "--benchmark-only",
        "--benchmark-json=results/bench/cpu.json",
        *session.posargs,
    )


@nox.session
def reproduce(session: nox.Session) -> None:
    """The main job: train the five experiments over seeds, then write the report.

    Arguments after `--` pass through to `python -m bench reproduce` (e.g. `-- --profile full`)."""
    _install(session)
    session.run("python", "-m", "bench", "reproduce", *session.posargs)


@nox.session
def mutants(session: nox.Session) -> None:
    """Mutation testing (tests/mutants.py): map the default suite's coverage per test, judge every mutant of
    maml/ and of the trainer's sampling and meta-test code, write .mutants/report.md. Resumable: a rerun
    judges only what is new. Arguments after `--` go to the run step (e.g. `-- --only maml/cg.py`)."""
    _install(session, "test,mutation")
    session.run("python", "tests/mutants.py", "all", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff: lint and formatting."""
    session.install(*CONSTRAINTS, "ruff")
    targets = ["maml", "bench", "tests", "noxfile.py"]
    session.run("ruff", "check", *targets)
    session.run("ruff", "format", "--check", *targets)
