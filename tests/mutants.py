"""Mutation testing: does the default suite notice small breakages of the algorithm core?

    python tests/mutants.py map               # the default suite under coverage: which test runs which line
    python tests/mutants.py run [--only PATH] # every mutant against the passing tests that cover its line
    python tests/mutants.py report            # counts; every survivor with its explanation or "unexplained"

``python tests/mutants.py all`` (what ``nox -s mutants`` runs) maps when the map is missing or stale, then
runs and reports; it is not part of CI (a full pass takes hours on 2 cores). Everything lands in
``.mutants/`` (git-ignored); ``run`` appends one line per mutant to ``.mutants/results.jsonl`` and skips
mutants already judged against the same file contents, so it resumes where it stopped. ``run --shard I/N``
lets N processes share the pending mutants; ``run --match TEXT`` judges only mutants whose key contains
TEXT (after a test was added for them: ``map --merge tests/<its file>.py`` first).

The targets are ``maml/`` (less the test oracle, the synthetic data generator and CUDA-only code) and the
sampling and meta-test functions of ``bench/run/trainer.py``. The operators are the classic small ones: swap
an arithmetic operator (+ −, × ÷, ** → ×), an augmented assignment, a comparison (< ≤, > ≥, == ≠, is, in),
``and``/``or``; drop a unary minus or a ``not``; a number n → n + 1; True ↔ False; ``sum``/``mean``,
``max``/``min``. Strings, annotations, ``raise`` statements and lines marked ``# pragma: no mutate`` are left
alone.

How a mutant is judged: a parent process imports the heavy third-party libraries once and forks one child
per mutant; the child installs an import hook that serves the mutated source for the one module, runs pytest
on the tests that covered the mutated line (fastest first, ``-x``) and exits with pytest's code. ``killed``:
a test failed (or collection broke, or it ran past its timeout); ``survived``: every covering test passed;
``uncovered``: no passing default-suite test runs the line. Tests that run code in subprocesses (the local
and Ray executors) record no coverage there, so a mutant only they would catch is counted as a survivor: the
tool errs towards reporting too many survivors, never too few.

Survivors are explained in ``tests/mutants_explained.toml`` (an equivalent mutant, or why it does not
matter); ``report`` lists the rest as unexplained.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import importlib.abc
import importlib.util
import json
import os
import signal
import sys
import time
import tomllib
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / ".mutants"
EXPLAINED = ROOT / "tests" / "mutants_explained.toml"

# files under maml/ that are not mutated, and why
EXCLUDED = {
    "maml/oracle.py": "the per-task loop oracle the tests compare against",
    "maml/synthetic.py": "the synthetic meta-batch generator of the tests",
    "maml/cuda_graphs.py": "CUDA only: no default-suite test can run it on a CPU machine",
}
# functions of target files that are not mutated, and why
SKIPPED_SCOPES = {
    # the timing script (`python -m maml.envs.metaworld_fast`)
    "maml/envs/metaworld_fast.py": ("_benchmark_envs", "benchmark", "benchmark_resets", "main"),
    # measured per-class step costs: they only balance the workers' load, and the episodes are the same bits
    # for any layout (test_same_seed_same_episodes_whatever_the_workers); how long to wait for a worker to
    # start or exit (no test can tell 300 s from 301 s without waiting that long)
    "maml/envs/metaworld_pool.py": ("STEP_COST_MS", "START_TIMEOUT_S", "CLOSE_TIMEOUT_S"),
}
"""Per file: functions, classes and module-level constants (by name) that are not mutated."""
# the sampling and meta-test code of the trainer (functions by qualified name)
TRAINER_SCOPES = (
    "_generator",
    "evaluates",
    "meta_test_env_steps",
    "_success",
    "_episode_rows",
    "Trainer._advantages",
    "Trainer._sample",
    "Trainer._epoch",
    "Trainer._adapt_steps",
    "Trainer._meta_test",
    "Trainer._meta_test_blank",
)


def targets() -> dict[str, tuple[str, ...] | None]:
    """Path (relative to the repository) → the scopes to mutate (None: the whole file)."""
    found: dict[str, tuple[str, ...] | None] = {
        p.relative_to(ROOT).as_posix(): None
        for p in sorted((ROOT / "maml").rglob("*.py"))
        if p.relative_to(ROOT).as_posix() not in EXCLUDED
    }
    found["bench/run/trainer.py"] = TRAINER_SCOPES
    return found


# ---------------------------------------------------------------------------------------------------------
# mutants


@dataclass(frozen=True)
class Mutant:
    path: str
    line: int
    start: int  # byte offsets into the file
    end: int
    original: str
    replacement: str
    scope: str
    text: str  # the mutated line, stripped
    key: str = ""  # unique: path, scope, line text, edit (and an occurrence number when these repeat)
    cover_from: int = 0  # the lines whose covering tests judge the mutant (module or class level: the file;
    cover_to: int = 0  # a default argument: its function's body; anything else: its own line)

    def apply(self, source: bytes) -> bytes:
        return source[: self.start] + self.replacement.encode() + source[self.end :]

    @property
    def label(self) -> str:
        edit = f"`{self.original}` → `{self.replacement}`" if self.replacement else f"drop `{self.original}`"
        return f"{self.path}:{self.line} ({self.scope}) {edit}"


BINARY = {
    ast.Add: ("+", "-"),
    ast.Sub: ("-", "+"),
    ast.Mult: ("*", "/"),
    ast.Div: ("/", "*"),
    ast.Pow: ("**", "*"),
    ast.FloorDiv: ("//", "/"),
    ast.Mod: ("%", "*"),
}
COMPARE = {
    ast.Lt: ("<", "<="),
    ast.LtE: ("<=", "<"),
    ast.Gt: (">", ">="),
    ast.GtE: (">=", ">"),
    ast.Eq: ("==", "!="),
    ast.NotEq: ("!=", "=="),
    ast.Is: ("is", "is not"),
    ast.IsNot: ("is not", "is"),
    ast.In: ("in", "not in"),
    ast.NotIn: ("not in", "in"),
}
BOOL = {ast.And: ("and", "or"), ast.Or: ("or", "and")}
NAMES = {"sum": "mean", "mean": "sum", "max": "min", "min": "max", "amax": "amin", "amin": "amax"}
_SKIP = set(" \t\r\n\\()")


class _Finder(ast.NodeVisitor):
    """Walks one module and collects the edits (start, end, original, replacement) with their scope."""

    def __init__(self, source: bytes, scopes: tuple[str, ...] | None, skipped: tuple[str, ...] = ()) -> None:
        self.source = source
        self.skipped = skipped
        self.lines = source.split(b"\n")
        self.line_starts = [0]
        for line in self.lines:
            self.line_starts.append(self.line_starts[-1] + len(line) + 1)
        self.scopes = scopes
        self.stack: list[str] = []
        self.in_function = 0
        self.cover: tuple[int, int] | None = None  # while visiting a function's default arguments
        self.found: list[tuple[int, int, int, str, str, str, int, int]] = []

    # positions ------------------------------------------------------------------------------------------
    def _offset(self, line: int, col: int) -> int:
        return self.line_starts[line - 1] + col

    def _start(self, node: ast.AST) -> int:
        return self._offset(node.lineno, node.col_offset)

    def _end(self, node: ast.AST) -> int:
        return self._offset(node.end_lineno, node.end_col_offset)

    def _token_between(self, start: int, end: int, expected: str) -> tuple[int, int] | None:
        """The byte range of the operator ``expected`` between two operands (parentheses, whitespace and
        line continuations around it are skipped)."""
        segment = self.source[start:end].decode()
        chars = [i for i, c in enumerate(segment) if c not in _SKIP]
        if not chars:
            return None
        first, last = chars[0], chars[-1]
        if " ".join(segment[first : last + 1].split()) != expected:
            return None
        return start + len(segment[:first].encode()), start + len(segment[: last + 1].encode())

    # bookkeeping ----------------------------------------------------------------------------------------
    def _active(self) -> bool:
        scope = ".".join(self.stack)
        if any(scope == s or scope.startswith(s + ".") for s in self.skipped):
            return False
        if self.scopes is None:
            return True
        return any(scope == s or scope.startswith(s + ".") for s in self.scopes)

    def _add(
        self,
        line: int,
        span: tuple[int, int] | None,
        replacement: str,
        last_line: int | None = None,
        first_line: int | None = None,
    ) -> None:
        if span is None or not self._active():
            return
        if b"pragma: no mutate" in self.lines[line - 1]:
            return
        original = self.source[span[0] : span[1]].decode()
        # code that runs at import time (module and class level) is covered by no test's context: the tests
        # that run any line of the file judge it; a default argument, those that run its function's body
        # (``last_line``: an operator whose operand spans lines, e.g. ``if not (`` over a multi-line condition
        # that the tracer reports on the operand's lines only); ``first_line``: an ``and``/``or`` in a chain
        # that starts on an earlier line (a test whose chain stops at an earlier operand never runs the
        # operator's line, yet ``a and b or c`` gives it another value)
        within = (first_line or line, last_line or line)
        cover = self.cover or (within if self.in_function else (1, len(self.lines)))
        scope = ".".join(self.stack) or "<module>"
        self.found.append((line, span[0], span[1], original, replacement, scope, *cover))

    # scopes and skipped subtrees -------------------------------------------------------------------------
    def _scoped(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> None:
        for decorator in node.decorator_list:
            self.visit(decorator)
        self.stack.append(node.name)
        if isinstance(node, ast.ClassDef):
            for base in node.bases:
                self.visit(base)
        else:
            self.cover = (node.body[0].lineno, node.end_lineno)
            for default in node.args.defaults + [d for d in node.args.kw_defaults if d is not None]:
                self.visit(default)
            self.cover = None
        function = not isinstance(node, ast.ClassDef)
        self.in_function += function
        for statement in node.body:
            self.visit(statement)
        self.in_function -= function
        self.stack.pop()

    visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = _scoped

    def _skipped_constant(self, targets: list[ast.expr]) -> bool:
        return not self.stack and any(isinstance(t, ast.Name) and t.id in self.skipped for t in targets)

    def visit_Assign(self, node: ast.Assign) -> None:
        if not self._skipped_constant(node.targets):
            self.generic_visit(node)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if node.value is not None and not self._skipped_constant([node.target]):
            self.visit(node.value)

    def visit_Raise(self, node: ast.Raise) -> None:
        return

    def visit_JoinedStr(self, node: ast.JoinedStr) -> None:
        return

    # the operators ---------------------------------------------------------------------------------------
    def visit_BinOp(self, node: ast.BinOp) -> None:
        if type(node.op) in BINARY:
            original, replacement = BINARY[type(node.op)]
            span = self._token_between(self._end(node.left), self._start(node.right), original)
            self._add(node.right.lineno if span is None else self._line_of(span[0]), span, replacement)
        self.generic_visit(node)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        if type(node.op) in BINARY:
            original, replacement = BINARY[type(node.op)]
            span = self._token_between(self._end(node.target), self._start(node.value), original + "=")
            self._add(node.lineno, span, replacement + "=")
        self.generic_visit(node)

    def visit_Compare(self, node: ast.Compare) -> None:
        left = node.left
        for op, right in zip(node.ops, node.comparators, strict=True):
            original, replacement = COMPARE[type(op)]
            span = self._token_between(self._end(left), self._start(right), original)
            if span is not None:
                self._add(self._line_of(span[0]), span, replacement)
            left = right
        self.generic_visit(node)

    def visit_BoolOp(self, node: ast.BoolOp) -> None:
        original, replacement = BOOL[type(node.op)]
        for left, right in zip(node.values, node.values[1:], strict=False):
            span = self._token_between(self._end(left), self._start(right), original)
            if span is not None:
                self._add(self._line_of(span[0]), span, replacement, first_line=node.lineno)
        self.generic_visit(node)

    def visit_UnaryOp(self, node: ast.UnaryOp) -> None:
        token = {ast.USub: "-", ast.Not: "not"}.get(type(node.op))
        if token is not None:
            start = self._start(node)
            span = (start, start + len(token))
            if self.source[span[0] : span[1]].decode() == token:
                self._add(node.lineno, span, "", node.end_lineno)
        self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        value = node.value
        if isinstance(value, bool):
            replacement = str(not value)
        elif isinstance(value, int | float) and not isinstance(value, complex):
            replacement = repr(value + 1)
        else:
            return
        self._add(node.lineno, (self._start(node), self._end(node)), replacement)

    def visit_Call(self, node: ast.Call) -> None:
        # zip(..., strict=True) is a guard: flipping it changes nothing on inputs of equal length
        node.keywords = [k for k in node.keywords if k.arg != "strict"]
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr in NAMES:
            end = self._end(func)
            self._add(func.end_lineno, (end - len(func.attr), end), NAMES[func.attr])
        elif isinstance(func, ast.Name) and func.id in NAMES:
            self._add(func.lineno, (self._start(func), self._end(func)), NAMES[func.id])
        self.generic_visit(node)

    def _line_of(self, offset: int) -> int:
        return next(i for i, s in enumerate(self.line_starts) if s > offset)


def mutants_of(path: str, scopes: tuple[str, ...] | None, source: bytes | None = None) -> list[Mutant]:
    """The mutants of the file at ``path`` (or of ``source``, named ``path``) within ``scopes``."""
    source = (ROOT / path).read_bytes() if source is None else source
    tree = ast.parse(source)
    finder = _Finder(source, scopes, SKIPPED_SCOPES.get(path, ()))
    for statement in tree.body:
        # a module docstring or `__all__` has nothing to mutate; everything else is visited
        finder.visit(statement)
    seen: Counter[str] = Counter()
    found = []
    for line, start, end, original, replacement, scope, *cover in sorted(set(finder.found)):
        text = finder.lines[line - 1].decode().strip()
        base = f"{path}::{scope}::{text}::{original} -> {replacement}"
        seen[base] += 1
        key = base if seen[base] == 1 else f"{base}::#{seen[base]}"
        found.append(Mutant(path, line, start, end, original, replacement, scope, text, key, *cover))
    return found


def all_mutants(only: list[str] | None = None) -> list[Mutant]:
    found = targets()
    chosen = [(path, found[path]) for path in only] if only else list(found.items())
    return [m for path, scopes in chosen for m in mutants_of(path, scopes)]


def _digest(path: str) -> str:
    return hashlib.sha256((ROOT / path).read_bytes()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------------------
# map: which passing test runs which line


def map_tests(pytest_args: list[str], merge: bool = False) -> int:
    import coverage
    import pytest

    files = [str(ROOT / p) for p in targets()]
    cov = coverage.Coverage(data_file=str(OUT / ".coverage"), include=files)
    tests: dict[str, dict[str, object]] = {}

    class Recorder:
        @pytest.hookimpl(hookwrapper=True)
        def pytest_runtest_protocol(self, item, nextitem):
            cov.switch_context(item.nodeid)
            yield
            cov.switch_context("")

        def pytest_runtest_logreport(self, report):
            entry = tests.setdefault(report.nodeid, {"duration": 0.0, "passed": True})
            entry["duration"] += report.duration
            if report.failed or (report.when == "call" and not report.passed) or report.skipped:
                entry["passed"] = False

    OUT.mkdir(exist_ok=True)
    digests = {p: _digest(p) for p in targets()}  # before: a file edited during the map reads as stale
    cov.start()
    try:
        code = pytest.main(["-p", "no:cacheprovider", "-q", *pytest_args], plugins=[Recorder()])
    finally:
        cov.stop()
        cov.save()
    data = cov.get_data()
    lines: dict[str, dict[int, list[str]]] = {}
    for path in digests:  # the targets when the map began (a file added meanwhile is mapped next time)
        by_line = data.contexts_by_lineno(str(ROOT / path))
        lines[path] = {n: sorted(c for c in contexts if c) for n, contexts in by_line.items()}
    record = {"tests": tests, "lines": lines, "digests": digests}
    if merge and (OUT / "map.json").exists():
        record = _merged(json.loads((OUT / "map.json").read_text()), record)
    _write_json(OUT / "map.json", record)
    passed = sum(1 for t in tests.values() if t["passed"])
    print(f"mapped {len(tests)} tests ({passed} passing) over {len(lines)} files → {OUT / 'map.json'}")
    return int(code)


def _merged(old: dict, new: dict) -> dict:
    """A partial map (some test files) over a whole one: files whose source changed take the new lines
    alone (the old line numbers are void); the others keep the old tests of each line and gain the new."""
    lines = {}
    for path, by_line in new["lines"].items():
        if old["digests"].get(path) != new["digests"][path]:
            lines[path] = by_line
            continue
        merged = {str(n): set(t) for n, t in old["lines"].get(path, {}).items()}
        for n, names in by_line.items():
            merged.setdefault(str(n), set()).update(names)
        lines[path] = {n: sorted(t) for n, t in merged.items()}
    return {"tests": {**old["tests"], **new["tests"]}, "lines": lines, "digests": new["digests"]}


def _write_json(path: Path, data: object) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------------------
# run: judge each mutant in a forked child


class _Overlay(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves ``source`` as the module ``name`` (file ``path``); every other import goes its usual way."""

    def __init__(self, name: str, path: Path, source: bytes) -> None:
        self.name, self.path, self.source = name, path, source

    def find_spec(self, fullname, path=None, target=None):
        if fullname != self.name:
            return None
        package = [str(self.path.parent)] if self.path.name == "__init__.py" else None
        return importlib.util.spec_from_file_location(
            fullname, self.path, loader=self, submodule_search_locations=package
        )

    def create_module(self, spec):
        return None

    def exec_module(self, module) -> None:
        exec(compile(self.source, str(self.path), "exec"), module.__dict__)


def _module_name(path: str) -> str:
    parts = list(Path(path).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _preload() -> None:
    """Import what every child needs, once, in the parent (none of it starts threads on import)."""
    import matplotlib

    matplotlib.use("Agg")
    for name in ("numpy", "scipy", "torch", "mujoco", "gymnasium", "metaworld", "pandas", "seaborn"):
        __import__(name)
    __import__("pytest")


def _child(mutant: Mutant | None, tests: list[str]) -> None:
    """Runs in the forked child (``mutant=None``: the sources as they are); never returns."""
    code = 3
    try:
        os.setpgid(0, 0)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        import pytest
        import torch

        torch.set_num_threads(1)
        if mutant is not None:
            source = mutant.apply((ROOT / mutant.path).read_bytes())
            sys.meta_path.insert(0, _Overlay(_module_name(mutant.path), ROOT / mutant.path, source))
        os.chdir(ROOT)
        code = int(pytest.main(["-x", "-q", "-p", "no:cacheprovider", "-p", "no:randomly", *tests]))
    finally:
        os._exit(code)


def _pytest_in_child(mutant: Mutant | None, tests: list[str], timeout: float) -> int | None:
    """pytest's exit code, or None past the timeout (the child's process group is killed)."""
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:
        _child(mutant, tests)
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() - started > timeout:
            os.killpg(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return None
        time.sleep(0.05)


def judge(mutant: Mutant, tests: list[str], timeout: float) -> tuple[str, float]:
    """The mutant's outcome and the seconds it took. pytest exits 2 when collection breaks and 4 when a
    conftest cannot be imported (a mutant that raises at import): killed, if the sources as they are pass
    the same tests (checked for exit 4, which also means a usage error)."""
    started = time.monotonic()
    code = _pytest_in_child(mutant, tests, timeout)
    if code == 4 and _pytest_in_child(None, tests, timeout) == 0:
        code = 2
    elapsed = time.monotonic() - started
    outcomes = {None: "killed (timeout)", 0: "survived", 1: "killed", 2: "killed (collection error)"}
    return outcomes.get(code, _other_outcome(code)), elapsed


def _other_outcome(code: int | None) -> str:
    """A child that died of a signal (e.g. SIGABRT from an assertion in a native kernel) crashed on the
    mutant: killed. Any other exit code is the tool's or pytest's error, not a verdict."""
    if code is not None and code < 0:
        return f"killed (crash: signal {-code})"
    return f"error (pytest exit {code})"


def _outcome(row: dict) -> str:
    """The row's outcome class, re-reading errors recorded before crashes were counted as killed."""
    outcome = row["outcome"]
    if outcome.startswith("error (pytest exit -"):
        outcome = _other_outcome(int(outcome.removeprefix("error (pytest exit ").rstrip(")")))
    return outcome.split(" ")[0]


WIDE_BUDGET_S = 300.0
"""A mutant judged by a whole file's or function's tests runs the fastest of them up to this many seconds
(their durations in the map): module-level constants are covered by hundreds of tests."""


def covering_tests(mutant: Mutant, record: dict, budget: float | None = None) -> list[str]:
    tests = record["tests"]
    by_line = record["lines"].get(mutant.path, {})
    names = set()
    for line in range(mutant.cover_from or mutant.line, (mutant.cover_to or mutant.line) + 1):
        names.update(by_line.get(str(line), ()))
    eligible = sorted(
        (n for n in names if n in tests and tests[n]["passed"]), key=lambda n: (tests[n]["duration"], n)
    )
    if budget is None:
        if mutant.cover_from == mutant.cover_to:
            return eligible
        budget = WIDE_BUDGET_S
    chosen, spent = [], 0.0
    for name in eligible:
        if chosen and spent + tests[name]["duration"] > budget:
            break
        chosen.append(name)
        spent += tests[name]["duration"]
    return chosen


def _stale_files(digests: dict[str, str], only: list[str] | None) -> list[str]:
    """The chosen targets whose source differs from the one the map was made from."""
    return [p for p in (only or targets()) if digests.get(p) != _digest(p)]


def _map_is_stale(only: list[str] | None) -> bool:
    map_file = OUT / "map.json"
    return not map_file.exists() or bool(_stale_files(json.loads(map_file.read_text())["digests"], only))


def run_mutants(
    only: list[str] | None,
    limit: int | None,
    survivors: bool = False,
    budget: float | None = None,
    shard: tuple[int, int] = (0, 1),
    match: tuple[str, ...] = (),
) -> int:
    """Judge what is new (or, with ``survivors``, what survived before). ``budget``: a quick pass that runs
    only the fastest covering tests up to that many seconds each; its survivors are judged again in full by
    a pass with ``survivors`` and no budget."""
    from tqdm import tqdm

    map_file = OUT / "map.json"
    if not map_file.exists():
        sys.exit(f"{map_file} is missing: run `python tests/mutants.py map` first")
    record, map_time = json.loads(map_file.read_text()), map_file.stat().st_mtime
    stale = _stale_files(record["digests"], only)
    if stale:
        sys.exit(f"{map_file} was made from other versions of {', '.join(stale)}: rerun the map step")
    results_file = OUT / "results.jsonl"
    done = {r["key"]: r for r in _read_results(results_file)}
    digests = {p: _digest(p) for p in targets()}

    explained = explanations()

    def pending(m: Mutant) -> bool:
        last = done.get(m.key, {})
        if last.get("digest") != digests[m.path]:
            return True
        if not survivors or _outcome(last) not in ("survived", "uncovered", "error"):
            return False
        if last["key"] in explained:  # equivalent, said why: more tests cannot kill it
            return False
        # judged with an older map (tests added since)
        before_the_map = last.get("map_time", last.get("judged_at", 0.0)) < map_time
        last_budget = last.get("budget")
        wider = last_budget is not None and (budget is None or last_budget < budget)
        # judged by the tests of other lines (the tool now picks a wider range for this kind of edit)
        moved = (last.get("cover_from"), last.get("cover_to")) != (m.cover_from, m.cover_to)
        return before_the_map or wider or moved

    todo = [m for m in all_mutants(only) if pending(m) and all(t in m.key for t in match)]
    todo = todo[shard[0] :: shard[1]][: limit or None]
    print(f"{len(todo)} mutants to judge ({len(done)} judged before)")
    _preload()
    counts: Counter[str] = Counter()
    with results_file.open("a") as out, tqdm(todo, unit="mutant", dynamic_ncols=True) as bar:
        for mutant in bar:
            tests = covering_tests(mutant, record, budget)
            if tests:
                seconds = sum(record["tests"][t]["duration"] for t in tests)
                outcome, elapsed = judge(mutant, tests, timeout=60 + 3 * seconds)
            else:
                outcome, elapsed = "uncovered", 0.0
            counts[outcome.split(" ")[0]] += 1
            row = {**asdict(mutant), "digest": digests[mutant.path], "outcome": outcome, "tests": len(tests)}
            row["budget"], row["judged_at"], row["map_time"] = budget, time.time(), map_time
            row["seconds"] = round(elapsed, 2)
            out.write(json.dumps(row) + "\n")
            out.flush()
            bar.set_postfix(counts)
    return 0


def _read_results(path: Path) -> Iterator[dict]:
    if not path.exists():
        return
    for number, line in enumerate(path.read_text().splitlines(), 1):
        try:
            yield json.loads(line)
        except json.JSONDecodeError:
            print(f"{path}:{number}: a torn line (the run was stopped while writing it) is ignored")


# ---------------------------------------------------------------------------------------------------------
# report


def explanations() -> dict[str, str]:
    if not EXPLAINED.exists():
        return {}
    data = tomllib.loads(EXPLAINED.read_text())
    return {entry["mutant"]: entry["why"] for entry in data.get("survivor", [])}


def report() -> int:
    current = {m.key: m for m in all_mutants()}
    digests = {p: _digest(p) for p in targets()}
    results = {
        r["key"]: r
        for r in _read_results(OUT / "results.jsonl")
        if r["key"] in current and r["digest"] == digests[r["path"]]
    }
    why = explanations()
    counts = Counter(_outcome(r) for r in results.values())
    survivors = [r for r in results.values() if r["outcome"] in ("survived", "uncovered")]
    unexplained = [r for r in survivors if r["key"] not in why]
    lines = [
        "# Mutation testing",
        "",
        f"{len(current)} mutants over {len(digests)} files; {len(results)} judged against the current "
        "sources: "
        f"{counts['killed']} killed, {counts['survived']} survived, {counts['uncovered']} uncovered, "
        f"{counts['error']} errors. Survivors explained: {len(survivors) - len(unexplained)}; "
        f"unexplained: {len(unexplained)}.",
        "",
        "| mutant | outcome | why it survives |",
        "|---|---|---|",
    ]
    for r in sorted(survivors, key=lambda r: (r["path"], r["line"], r["key"])):
        mutant = current[r["key"]]
        lines.append(f"| {mutant.label} | {r['outcome']} | {why.get(r['key'], '**unexplained**')} |")
    stale = sorted(set(why) - set(current))
    if stale:
        lines += ["", "Explanations of mutants that no longer exist (remove them):", ""]
        lines += [f"- `{k}`" for k in stale]
    text = "\n".join(lines) + "\n"
    (OUT / "report.md").write_text(text)
    print(text)
    return 0


def _shard(text: str) -> tuple[int, int]:
    index, _, count = text.partition("/")
    if not (index.isdigit() and count.isdigit() and int(index) < int(count)):
        raise argparse.ArgumentTypeError(f"{text!r} is not I/N with 0 <= I < N")
    return int(index), int(count)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    map_parser = sub.add_parser("map", help="run the default suite under coverage with per-test contexts")
    map_parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments (e.g. a test file)")
    map_parser.add_argument(
        "--merge", action="store_true", help="merge into the existing map (after editing a few files)"
    )
    run_parser = sub.add_parser("run", help="judge every mutant not judged against the current sources")
    run_parser.add_argument("--only", nargs="+", metavar="PATH", help="only these target files")
    run_parser.add_argument("--limit", type=int, help="at most this many mutants")
    run_parser.add_argument(
        "--survivors", action="store_true", help="judge the survivors again (after adding and mapping tests)"
    )
    run_parser.add_argument(
        "--budget", type=float, metavar="S", help="quick pass: the fastest covering tests, S seconds each"
    )
    run_parser.add_argument(
        "--shard",
        type=_shard,
        default=(0, 1),
        metavar="I/N",
        help="judge every N-th pending mutant from the I-th (0-based): N processes share a file",
    )
    run_parser.add_argument(
        "--match", nargs="+", default=(), metavar="TEXT", help="only mutants whose key contains every TEXT"
    )
    all_parser = sub.add_parser("all", help="map (if missing or stale), run, report: nox -s mutants")
    all_parser.add_argument("--only", nargs="+", metavar="PATH", help="only these target files")
    sub.add_parser("list", help="print every mutant's key")
    sub.add_parser("report", help="counts and survivors → .mutants/report.md")
    args = parser.parse_args(argv)
    os.chdir(ROOT)
    if args.command == "map":
        return map_tests(args.pytest_args, args.merge)
    if args.command in ("run", "all"):
        unknown = sorted(set(args.only or ()) - set(targets()))
        if unknown:
            parser.error(f"not a mutation target: {', '.join(unknown)} (targets: {', '.join(targets())})")
    if args.command == "run":
        return run_mutants(args.only, args.limit, args.survivors, args.budget, args.shard, tuple(args.match))
    if args.command == "all":
        if _map_is_stale(args.only):
            map_tests([])
        run_mutants(args.only, None)
        return report()
    if args.command == "list":
        for mutant in all_mutants():
            print(mutant.key)
        return 0
    return report()


if __name__ == "__main__":
    sys.exit(main())
