"""What a learner reads is written for the learner: readable notebook code, no words about how the
course is made, and no assertion on wall-clock time (a loaded machine must not fail a test)."""

import ast
import io
import json
import re
import tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "nbs").glob("*.ipynb"))
MAX_LINE = 110

# Phrases that speak about how the course was made rather than to the learner.
PROJECT_WORDS = re.compile(
    r"\bthe seeds\b|\bseed notes\b|\bspeed issue\b|\bissue \d+\b|\bwork periods?\b"
    r"|\bsession's device time\b|\bagainst the target of\b",
    re.IGNORECASE,
)
CLOCKS = {"perf_counter", "perf_counter_ns", "time", "monotonic", "monotonic_ns", "process_time"}


def cells(path: Path, kind: str) -> list[str]:
    "The sources of a notebook's cells of one kind ('code' or 'markdown')."
    nb = json.loads(path.read_text(encoding="utf-8"))
    return ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == kind]


def python_lines(source: str) -> str:
    "A code cell without its shell (`!`) and magic (`%`) lines, which are not Python."
    return "\n".join("" if line.lstrip().startswith(("!", "%")) else line for line in source.split("\n"))


def joined_statements(source: str) -> list[int]:
    "Line numbers (1-based) where `;` joins two statements (a cell's final `;`, which hides its output, is fine)."
    skip = {tokenize.NEWLINE, tokenize.NL, tokenize.COMMENT, tokenize.ENDMARKER, tokenize.DEDENT}
    toks = list(tokenize.generate_tokens(io.StringIO(python_lines(source) + "\n").readline))
    semis = [i for i, t in enumerate(toks) if t.type == tokenize.OP and t.string == ";"]
    return [toks[i].start[0] for i in semis if any(t.type not in skip for t in toks[i + 1 :])]


def _call_name(call: ast.Call) -> str:
    f = call.func
    return f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")


def _names(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def _scopes(tree: ast.AST) -> list[list[ast.AST]]:
    "The nodes of the module and of each function, each list without the nodes of nested functions."
    funcs = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)
    out = []
    for root in [tree] + [n for n in ast.walk(tree) if isinstance(n, funcs)]:
        nodes, todo = [], list(ast.iter_child_nodes(root))
        while todo:
            n = todo.pop()
            nodes.append(n)
            if not isinstance(n, funcs):
                todo += list(ast.iter_child_nodes(n))
        out.append((root, nodes))
    return out


def clock_assertions(tree: ast.AST) -> list[int]:
    "Lines of asserts (or test_* / assert* calls) that depend on a value read from a clock."
    timers: dict[str, set[int]] = {}  # function -> positions of its returned tuple that are durations

    def is_clock(node: ast.AST, tainted: set[str]) -> bool:
        "A clock reading, a timer function's duration, or arithmetic on those and numbers."
        if isinstance(node, ast.Call):
            f, name = node.func, _call_name(node)
            if name in CLOCKS and (not isinstance(f, ast.Attribute) or ast.unparse(f.value) == "time"):
                return True
            return timers.get(name) == {-1}
        if isinstance(node, ast.BinOp):
            both = is_clock(node.left, tainted) or is_clock(node.right, tainted)
            return both and all(
                is_clock(x, tainted) or isinstance(x, ast.Constant) for x in (node.left, node.right)
            )
        if isinstance(node, ast.UnaryOp):
            return is_clock(node.operand, tainted)
        return isinstance(node, ast.Name) and node.id in tainted

    def taint(nodes: list[ast.AST]) -> set[str]:
        tainted: set[str] = set()
        assigns = [n for n in nodes if isinstance(n, (ast.Assign, ast.AugAssign, ast.AnnAssign))]
        for _ in range(len(assigns) + 1):  # until nothing new is tainted
            before = set(tainted)
            for a in assigns:
                if a.value is None:
                    continue
                for t in a.targets if isinstance(a, ast.Assign) else [a.target]:
                    if is_clock(a.value, tainted) and isinstance(t, ast.Name):
                        tainted.add(t.id)
                    elif isinstance(t, ast.Tuple) and isinstance(a.value, ast.Call):
                        parts = timers.get(_call_name(a.value), set())
                        tainted |= {e.id for i, e in enumerate(t.elts) if i in parts and isinstance(e, ast.Name)}
            if tainted == before:
                return tainted
        return tainted

    scopes = _scopes(tree)
    for _ in range(3):  # timer functions may call timer functions
        for root, nodes in scopes:
            if not isinstance(root, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            tainted = taint(nodes)
            for r in (n for n in nodes if isinstance(n, ast.Return) and n.value is not None):
                if is_clock(r.value, tainted):
                    timers[root.name] = {-1}
                elif isinstance(r.value, ast.Tuple):
                    parts = {i for i, e in enumerate(r.value.elts) if is_clock(e, tainted)}
                    if parts:
                        timers[root.name] = parts
    bad = []
    for root, nodes in scopes:
        tainted = taint(nodes)
        for n in nodes:
            checked = None
            if isinstance(n, ast.Assert):
                checked = [n.test]
            elif isinstance(n, ast.Call) and _call_name(n).startswith(("test_", "assert")):
                checked = n.args
            if checked and any(is_clock(x, tainted) or _names(x) & tainted for x in checked):
                bad.append(n.lineno)
    return sorted(bad)


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_code_is_readable(nb):
    "Code cells: no line over 110 characters, no statements joined with `;`."
    problems = []
    for i, src in enumerate(cells(nb, "code")):
        long = [n for n, line in enumerate(src.split("\n"), 1) if len(line) > MAX_LINE]
        problems += [f"code cell {i} line {n}: over {MAX_LINE} characters" for n in long]
        problems += [f"code cell {i} line {n}: statements joined by ';'" for n in joined_statements(src)]
    assert not problems, f"{nb.name}:\n" + "\n".join(problems[:20])


def test_no_words_about_how_the_course_is_made():
    "Notebooks (prose, code and outputs), slide sources and the README speak to the learner only."
    texts = {p: p.read_text(encoding="utf-8") for p in NOTEBOOKS}
    texts |= {p: p.read_text(encoding="utf-8") for p in (ROOT / "slides" / "src").glob("*.md")}
    texts[ROOT / "README.md"] = (ROOT / "README.md").read_text(encoding="utf-8")
    found = []
    for path, text in texts.items():
        for n, line in enumerate(text.split("\n"), 1):
            if m := PROJECT_WORDS.search(line):
                found.append(f"{path.relative_to(ROOT)}:{n}: {m.group(0)!r}")
    assert not found, "\n".join(found)


def test_no_assertion_on_wall_clock_time():
    "Speed is measured in bench/ as ratios; notebooks and tests never assert on elapsed time."
    sources = {p.name: python_lines("\n".join(cells(p, "code"))) for p in NOTEBOOKS}
    sources |= {p.name: p.read_text(encoding="utf-8") for p in (ROOT / "tests").glob("*.py")}
    found = []
    for name, src in sources.items():
        found += [f"{name}: line {n}" for n in clock_assertions(ast.parse(src))]
    assert not found, "assertions on elapsed time:\n" + "\n".join(found)


def test_the_checks_catch_what_they_look_for():
    "Each check finds a planted example (so a passing run means something)."
    assert joined_statements("a = 1; b = 2\nprint('x;y')\nax.legend();") == [1]
    planted = "import time\nt0 = time.perf_counter()\nwork()\ndt = time.perf_counter() - t0\nassert dt < 1.0\n"
    assert clock_assertions(ast.parse(planted)) == [5]
    assert clock_assertions(ast.parse("t = time.time()\ntest_eq(len(x), 3)\n")) == []
    timed = "def run(n):\n    t0 = time.perf_counter()\n    return time.perf_counter() - t0, n\n"
    assert clock_assertions(ast.parse(timed + "t_a, x = run(1)\nt_b, y = run(2)\nassert t_b < 0.8 * t_a\n")) == [6]
    assert clock_assertions(ast.parse(timed + "t_a, x = run(1)\ntest_eq(x, 1)\n")) == []
    assert clock_assertions(ast.parse("a = time.time()\nb = time.time()\nr = (b - a) / 2\ntest_eq(r > 0, True)\n")) == [4]
    assert PROJECT_WORDS.search("as the seeds suggest") and not PROJECT_WORDS.search("five random seeds")
