"""The mutation tool itself (tests/mutants.py): which edits it makes, which lines' tests judge each one, and
which tests it picks. A tool that silently skipped an operator or judged a mutant by tests that never run
its line would report a suite stronger than it is."""

from __future__ import annotations

import ast
import textwrap

import mutants

SOURCE = textwrap.dedent(
    '''\
    """Docstring: nothing to mutate."""
    LIMIT = 3


    def f(x: float, scale: float = 2.0) -> float:
        label = "a + b"
        if not (
            x > 0
            and x < LIMIT
        ):
            raise ValueError(f"x {x + 1}")
        y = -x * scale
        y += max(x, 1.0)
        z = x ** 2 if x in (1, 2) else x / 4  # pragma: no mutate
        return y - sum([x, True])


    def skipped(x):
        return x + 1
    '''
).encode()


def _found(scopes=None) -> dict[tuple[int, str, str], mutants.Mutant]:
    return {(m.line, m.original, m.replacement): m for m in mutants.mutants_of("m.py", scopes, SOURCE)}


def test_every_operator_is_mutated_once_and_the_result_parses() -> None:
    found = _found()
    expected = {
        (2, "3", "4"),  # LIMIT
        (5, "2.0", "3.0"),  # the default argument
        (7, "not", ""),
        (8, ">", ">="),
        (8, "0", "1"),
        (9, "and", "or"),
        (9, "<", "<="),
        (12, "-", ""),  # the unary minus
        (12, "*", "/"),
        (13, "+=", "-="),
        (13, "max", "min"),
        (13, "1.0", "2.0"),
        (15, "-", "+"),
        (15, "sum", "mean"),
        (15, "True", "False"),
        (19, "+", "-"),
        (19, "1", "2"),
    }
    assert set(found) == expected
    for mutant in found.values():
        mutated = mutant.apply(SOURCE)
        ast.parse(mutated)
        assert mutated != SOURCE
    # strings, f-strings in a raise, annotations and a line marked `pragma: no mutate` are left alone
    assert not {key for key in found if key[0] in (6, 11, 14)}
    assert len({m.key for m in found.values()}) == len(found)


def test_each_mutant_is_judged_by_the_tests_of_the_lines_it_changes() -> None:
    found = _found()
    # an edit inside a function: its own line ...
    assert (found[(8, ">", ">=")].cover_from, found[(8, ">", ">=")].cover_to) == (8, 8)
    # ... a `not` over a multi-line condition: the condition's lines, which the tracer reports
    assert (found[(7, "not", "")].cover_from, found[(7, "not", "")].cover_to) == (7, 10)
    # ... an `and` in a chain that starts on an earlier line: from the chain's first line (a test whose chain
    # stops at an earlier operand, False, runs only that operand's line, and `or` would go on)
    assert (found[(9, "and", "or")].cover_from, found[(9, "and", "or")].cover_to) == (8, 9)
    # a default argument: its function's body (it runs at definition, covered by no test's context)
    assert (found[(5, "2.0", "3.0")].cover_from, found[(5, "2.0", "3.0")].cover_to) == (6, 15)
    # module level: the whole file
    assert (found[(2, "3", "4")].cover_from, found[(2, "3", "4")].cover_to) == (1, len(SOURCE.split(b"\n")))


def test_scopes_choose_the_functions_mutated() -> None:
    assert {m.scope for m in _found(("skipped",)).values()} == {"skipped"}
    assert {m.scope for m in _found().values()} == {"<module>", "f", "skipped"}


def test_the_fastest_passing_covering_tests_are_chosen_within_the_budget() -> None:
    mutant = _found()[(8, ">", ">=")]
    record = {
        "tests": {
            "slow": {"duration": 50.0, "passed": True},
            "fast": {"duration": 1.0, "passed": True},
            "middle": {"duration": 20.0, "passed": True},
            "failing": {"duration": 0.1, "passed": False},
            "elsewhere": {"duration": 0.1, "passed": True},
        },
        "lines": {"m.py": {"8": ["slow", "fast", "middle", "failing"], "9": ["elsewhere"]}},
    }
    assert mutants.covering_tests(mutant, record) == ["fast", "middle", "slow"]  # one line: all of them
    assert mutants.covering_tests(mutant, record, budget=25.0) == ["fast", "middle"]
    assert mutants.covering_tests(mutant, record, budget=0.5) == ["fast"]  # at least one
    wide = _found()[(7, "not", "")]
    assert mutants.covering_tests(wide, record, budget=25.0) == ["elsewhere", "fast", "middle"]


def test_named_scopes_and_constants_are_skipped() -> None:
    source = b"A = 1\nB: int = 2\nC = A + B\n\n\ndef g(x):\n    return x - 1\n"
    finder = mutants._Finder(source, None, ("A", "B", "g"))
    for statement in ast.parse(source).body:
        finder.visit(statement)
    assert {(line, original) for line, _, _, original, *_ in finder.found} == {(3, "+")}
