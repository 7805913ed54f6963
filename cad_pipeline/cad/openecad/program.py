"""Reading OpenECAD v2 code, which is untrusted model output, without ever executing it.

The code looks like Python, so it is parsed with `ast` and then checked against a tiny language:
every statement assigns one new name either `[]` or a call of an OpenECAD function, whose
arguments are numbers (literals and `+ - * /` of literals and `np.pi`, evaluated here with float
arithmetic), strings, True/False, lists of up to three numbers, or names assigned earlier.
Anything else is refused with a `CodeRejected` that gives the line and says what is allowed.
This module knows nothing of CAD: another module gives the statements their meaning.

Size limits are checked on the text before parsing, so a huge input is refused in milliseconds;
nesting too deep for Python's parser, or for the bounded walk here, is refused as well, never
escaping as RecursionError or MemoryError.
"""

from __future__ import annotations

import ast
import math
import operator
import re
from dataclasses import dataclass
from itertools import islice

OPENECAD_CALLS: frozenset[str] = frozenset(
    {
        "add_sketchplane",
        "add_sketchplane_ref",
        "add_line",
        "add_arc",
        "add_circle",
        "add_loop",
        "add_profile",
        "add_sketch",
        "add_extrude",
    }
)
"""The functions OpenECAD code may call, each only as the whole value of a statement."""

MAX_SOURCE_CHARS = 200_000
"""Longest source accepted: the longest real answer is about 31,000 characters, and parsing the
worst case of this size stays well under a second."""
MAX_STATEMENTS = 5_000
"""Most statements accepted: the largest real answer has about 1,000."""
MAX_LIST_ITEMS = 3
"""Most items in a list literal: OpenECAD lists are 2D points or 3D points and vectors."""
MAX_ABS_NUMBER = 1e12
"""Largest magnitude of any number, literal or intermediate: far beyond any model in millimetres,
and small enough that no product or sum of two accepted numbers can overflow."""
EXCERPT_CHARS = 40
"""Characters of a name or literal that a message quotes."""
MAX_NESTING_DEPTH = 32
"""Deepest number expression accepted (`-np.pi/2` is 3 deep), so walking one never nears Python's recursion limit."""

_NP_PI = "np.pi"
_RESERVED_NAMES = OPENECAD_CALLS | {"np"}
_ALLOWED_CALLS = ", ".join(sorted(OPENECAD_CALLS))
_ARGUMENT_KINDS = (
    "an argument is a number or number expression, a string, True/False, "
    f"a list of 1 to {MAX_LIST_ITEMS} numbers, or the name of an earlier statement"
)
_STATEMENT_START = re.compile(r"^[^\s#)\]}]", re.MULTILINE)
"""A line beginning at column 0 with code: every top-level statement starts on such a line
(OpenECAD indents its continuation lines), so their count is a cheap statement count."""
_NON_ASCII = re.compile(r"[^\x00-\x7f]")

_ARITHMETIC = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}
_OPERATOR_SYMBOLS = {
    "Pow": "**",
    "FloorDiv": "//",
    "Mod": "%",
    "MatMult": "@",
    "LShift": "<<",
    "RShift": ">>",
    "BitOr": "|",
    "BitXor": "^",
    "BitAnd": "&",
    "Not": "not",
    "Invert": "~",
}
_STATEMENT_KINDS = {
    "Import": "import statements",
    "ImportFrom": "import statements",
    "Expr": "expression statements (a value that is not assigned to a name)",
    "AugAssign": "augmented assignments such as 'x += 1'",
    "AnnAssign": "annotated assignments",
    "Delete": "del statements",
    "FunctionDef": "function definitions",
    "AsyncFunctionDef": "function definitions",
    "ClassDef": "class definitions",
    "For": "for loops",
    "AsyncFor": "for loops",
    "While": "while loops",
    "If": "if statements",
    "With": "with statements",
    "AsyncWith": "with statements",
    "Try": "try statements",
    "TryStar": "try statements",
    "Match": "match statements",
    "Global": "global declarations",
    "Nonlocal": "nonlocal declarations",
    "Return": "return statements",
    "Raise": "raise statements",
    "Assert": "assert statements",
    "Pass": "pass statements",
    "Break": "break statements",
    "Continue": "continue statements",
    "TypeAlias": "type alias statements",
}
_EXPRESSION_KINDS = {
    "Lambda": "a lambda",
    "ListComp": "a comprehension",
    "SetComp": "a comprehension",
    "DictComp": "a comprehension",
    "GeneratorExp": "a generator expression",
    "Dict": "a dict literal",
    "Set": "a set literal",
    "Tuple": "a tuple",
    "Subscript": "a subscript",
    "Slice": "a slice",
    "JoinedStr": "an f-string",
    "NamedExpr": "an assignment expression ':='",
    "IfExp": "a conditional expression",
    "Compare": "a comparison",
    "BoolOp": "'and'/'or'",
    "Await": "await",
    "Yield": "yield",
    "YieldFrom": "yield",
    "Starred": "'*' unpacking",
}


class CodeRejected(Exception):
    """OpenECAD code that breaks the language: `line` (1-based, None when unknown) and `why`, for a person to fix. A
    long name or literal of the code is quoted by an excerpt, so a message stays a line however large the input."""

    def __init__(self, line: int | None, why: str):
        why = _LONG_WORD.sub(_excerpt, why)
        super().__init__(why if line is None else f"line {line}: {why}")
        self.line = line
        self.why = why

    def __reduce__(self):
        """Pickle by (line, why), so the error survives being sent between worker processes."""
        return (type(self), (self.line, self.why))


_LONG_WORD = re.compile(r"\S{%d,}" % (2 * EXCERPT_CHARS))


def _excerpt(match: re.Match) -> str:
    word = match.group()
    return f"{word[:EXCERPT_CHARS]}...({len(word) - EXCERPT_CHARS:,} more characters)"


@dataclass(frozen=True)
class Name:
    """A reference to the variable assigned by an earlier statement."""

    id: str


Value = float | int | bool | str | tuple[float, ...] | Name
"""An argument: lists become tuples of floats; number expressions become their value."""


@dataclass(frozen=True)
class Statement:
    """One checked `target = call(*args, **kwargs)`, or `target = []` when `call` is None."""

    line: int
    target: str
    call: str | None
    args: tuple[Value, ...]
    kwargs: dict[str, Value]


def parse_program(source: str) -> list[Statement]:
    """The statements of OpenECAD `source` in source order, or CodeRejected; nothing in it is executed."""
    _check_text(source)
    module = _parse(source)
    if len(module.body) > MAX_STATEMENTS:
        raise _too_many_statements(module.body[MAX_STATEMENTS].lineno)
    defined_on_line: dict[str, int] = {}
    statements = []
    for node in module.body:
        statement = _read_statement(node, defined_on_line)
        defined_on_line[statement.target] = statement.line
        statements.append(statement)
    return statements


def _check_text(source: object) -> None:
    """Refuse, without parsing, what is not text, too long, has NUL or non-ASCII characters, or too many statements.

    Non-ASCII is refused because Python folds look-alike letters into ASCII names (`add_line`
    spelled with a fullwidth 'a', U+FF41, parses as add_line); OpenECAD code is plain ASCII.
    """
    if not isinstance(source, str):
        raise CodeRejected(None, f"OpenECAD code must be a str, not {type(source).__name__}")
    if len(source) > MAX_SOURCE_CHARS:
        raise CodeRejected(None, f"the code is {len(source):,} characters long; the limit is {MAX_SOURCE_CHARS:,}")
    nul = source.find("\0")
    if nul >= 0:
        raise CodeRejected(_line_of(source, nul), "NUL character found; OpenECAD code is plain text")
    if not source.isascii():
        found = _NON_ASCII.search(source)
        character = found.group()
        raise CodeRejected(
            _line_of(source, found.start()),
            f"non-ASCII character {character!r} (U+{ord(character):04X}) found; OpenECAD code is plain ASCII",
        )
    first_extra = next(islice(_STATEMENT_START.finditer(source), MAX_STATEMENTS, None), None)
    if first_extra is not None:
        raise _too_many_statements(_line_of(source, first_extra.start()))


def _parse(source: str) -> ast.Module:
    """Python's parse tree of `source`, with every parser failure turned into CodeRejected."""
    try:
        return ast.parse(source, mode="exec")
    except SyntaxError as error:
        raise CodeRejected(error.lineno, f"syntax error: {error.msg}") from None
    except ValueError as error:
        raise CodeRejected(None, f"unreadable code: {error}") from None
    except (RecursionError, MemoryError, SystemError):
        raise CodeRejected(
            None,
            "the code is nested too deeply for the parser; "
            f"number expressions may be at most {MAX_NESTING_DEPTH} levels deep",
        ) from None


def _too_many_statements(line: int) -> CodeRejected:
    return CodeRejected(line, f"more than {MAX_STATEMENTS:,} statements; statement {MAX_STATEMENTS + 1:,} starts here")


def _line_of(source: str, index: int) -> int:
    return source.count("\n", 0, index) + 1


def _read_statement(node: ast.stmt, defined_on_line: dict[str, int]) -> Statement:
    """Check one top-level statement: a single new plain name assigned `[]` or an OpenECAD call."""
    line = node.lineno
    if not isinstance(node, ast.Assign):
        kind = _STATEMENT_KINDS.get(type(node).__name__, f"{type(node).__name__} statements")
        raise CodeRejected(line, f"{kind} are not allowed; OpenECAD code is only assignments of add_* calls or []")
    if len(node.targets) != 1:
        raise CodeRejected(line, "chained assignment 'a = b = ...' is not allowed; assign one name per statement")
    target = node.targets[0]
    if not isinstance(target, ast.Name):
        raise CodeRejected(
            line, f"assignment to {_describe(target)} is not allowed; the target must be a single plain name"
        )
    if target.id in _RESERVED_NAMES:
        raise CodeRejected(line, f"'{target.id}' cannot be assigned; it is predefined by OpenECAD")
    if target.id in defined_on_line:
        raise CodeRejected(
            line,
            f"name '{target.id}' is already defined on line {defined_on_line[target.id]}; "
            "every statement must assign a new name",
        )
    value = node.value
    if isinstance(value, ast.List):
        if value.elts:
            raise CodeRejected(
                line, f"a statement's list must be empty ('{target.id} = []'), found {len(value.elts)} items"
            )
        return Statement(line=line, target=target.id, call=None, args=(), kwargs={})
    if not isinstance(value, ast.Call):
        raise CodeRejected(line, f"a statement's value must be an add_* call or [], found {_describe(value)}")
    return _read_call(value, target.id, line, defined_on_line)


def _read_call(call: ast.Call, target: str, line: int, defined_on_line: dict[str, int]) -> Statement:
    """Check the called function and every argument of a statement's call."""
    if not (isinstance(call.func, ast.Name) and call.func.id in OPENECAD_CALLS):
        raise CodeRejected(
            call.lineno, f"call of '{_dotted(call.func)}' is not allowed; allowed calls: {_ALLOWED_CALLS}"
        )
    args = []
    for argument in call.args:
        if isinstance(argument, ast.Starred):
            raise CodeRejected(argument.lineno, "'*' unpacking of arguments is not allowed; write each argument")
        args.append(_read_value(argument, defined_on_line))
    kwargs: dict[str, Value] = {}
    for keyword in call.keywords:
        if keyword.arg is None:
            raise CodeRejected(
                keyword.lineno, "'**' unpacking of arguments is not allowed; write each keyword argument"
            )
        if keyword.arg in kwargs:
            raise CodeRejected(keyword.lineno, f"keyword argument '{keyword.arg}' is given twice")
        kwargs[keyword.arg] = _read_value(keyword.value, defined_on_line)
    return Statement(line=line, target=target, call=call.func.id, args=tuple(args), kwargs=kwargs)


def _read_value(node: ast.expr, defined_on_line: dict[str, int]) -> Value:
    """One argument: a bool, string, list of numbers, earlier name, or number expression."""
    if isinstance(node, ast.Constant) and isinstance(node.value, (bool, str)):
        return node.value
    if isinstance(node, ast.Name) and node.id not in _RESERVED_NAMES:
        if node.id not in defined_on_line:
            raise CodeRejected(node.lineno, f"name '{node.id}' is used before it is defined")
        return Name(node.id)
    if isinstance(node, ast.List):
        if not 1 <= len(node.elts) <= MAX_LIST_ITEMS:
            raise CodeRejected(
                node.lineno,
                f"a list of {len(node.elts)} items is not allowed; "
                f"lists are points or vectors of 1 to {MAX_LIST_ITEMS} numbers",
            )
        return tuple(float(_number(item, depth=1)) for item in node.elts)
    if isinstance(node, ast.Call):
        raise CodeRejected(
            node.lineno,
            f"{_describe(node)} is not allowed as an argument; "
            "assign the call to a name in its own statement and pass the name",
        )
    if isinstance(node, (ast.Constant, ast.Name, ast.Attribute, ast.UnaryOp, ast.BinOp)):
        return _number(node, depth=0)
    raise CodeRejected(node.lineno, f"{_describe(node)} is not allowed as an argument; {_ARGUMENT_KINDS}")


def _number(node: ast.expr, depth: int) -> int | float:
    """The value of a number expression, computed with float arithmetic and checked at every step.

    Literal ints (and their signs) stay ints, as OpenECAD uses them for enumerations; any
    arithmetic or np.pi gives a float.
    """
    if depth > MAX_NESTING_DEPTH:
        raise CodeRejected(node.lineno, f"number expression nested more than {MAX_NESTING_DEPTH} levels deep")
    if isinstance(node, ast.Constant):
        if type(node.value) in (int, float):
            return _in_range(node.value, node)
        raise CodeRejected(node.lineno, f"{_describe(node)} is not a number")
    if isinstance(node, ast.Attribute):
        if isinstance(node.value, ast.Name) and node.value.id == "np" and node.attr == "pi":
            return math.pi
        raise CodeRejected(node.lineno, f"attribute access '{_dotted(node)}' is not allowed (only {_NP_PI})")
    if isinstance(node, ast.UnaryOp):
        if isinstance(node.op, ast.USub):
            return _in_range(-_number(node.operand, depth + 1), node)
        if isinstance(node.op, ast.UAdd):
            return _number(node.operand, depth + 1)
    if isinstance(node, ast.BinOp) and type(node.op) in _ARITHMETIC:
        left = float(_number(node.left, depth + 1))
        right = float(_number(node.right, depth + 1))
        if isinstance(node.op, ast.Div) and right == 0.0:
            raise CodeRejected(node.lineno, "division by zero")
        return _in_range(_ARITHMETIC[type(node.op)](left, right), node)
    if isinstance(node, (ast.UnaryOp, ast.BinOp)):
        symbol = _OPERATOR_SYMBOLS.get(type(node.op).__name__, type(node.op).__name__)
        raise CodeRejected(
            node.lineno, f"operator '{symbol}' is not allowed; number expressions use only + - * / and {_NP_PI}"
        )
    raise CodeRejected(
        node.lineno,
        f"{_describe(node)} is not allowed in a number; numbers are literals, {_NP_PI}, and + - * / of them",
    )


def _in_range(number: int | float, node: ast.expr) -> int | float:
    """`number` if finite and within MAX_ABS_NUMBER, compared exactly so huge ints never become floats."""
    if isinstance(number, float) and not math.isfinite(number):
        raise CodeRejected(node.lineno, f"number {number!r} is not finite")
    if abs(number) > MAX_ABS_NUMBER:
        shown = f"{number:.6g}" if isinstance(number, float) else f"with {len(str(abs(number)))} digits"
        raise CodeRejected(node.lineno, f"number {shown} is out of range; |x| must be at most {MAX_ABS_NUMBER:g}")
    return number


def _describe(node: ast.expr) -> str:
    """A short name for what `node` is, for messages; never renders the whole (possibly huge) expression."""
    if isinstance(node, ast.Call):
        return f"a call of '{_dotted(node.func)}'"
    if isinstance(node, ast.Attribute):
        return f"attribute '{_dotted(node)}'"
    if isinstance(node, ast.Name):
        if node.id == "np":
            return f"'np' alone (use {_NP_PI})"
        return f"function '{node.id}'" if node.id in OPENECAD_CALLS else f"name '{node.id}'"
    if isinstance(node, ast.List):
        return "a list"
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool):
            return f"{node.value}"
        if isinstance(node.value, str):
            return f"string {node.value[:20]!r}" + ("..." if len(node.value) > 20 else "")
        if isinstance(node.value, complex):
            return f"complex number {node.value!r}"
        if isinstance(node.value, bytes):
            return "a bytes literal"
        return repr(node.value)
    if isinstance(node, (ast.BinOp, ast.UnaryOp)):
        return "an arithmetic expression"
    return _EXPRESSION_KINDS.get(type(node).__name__, f"a {type(node).__name__} expression")


def _dotted(node: ast.expr) -> str:
    """Text like `os.system` or `__import__(...).system` for a callee or attribute chain, at most 5 steps long."""
    steps = []
    while len(steps) < 5:
        if isinstance(node, ast.Attribute):
            steps.append("." + node.attr)
            node = node.value
        elif isinstance(node, ast.Call):
            steps.append("(...)")
            node = node.func
        elif isinstance(node, ast.Subscript):
            steps.append("[...]")
            node = node.value
        else:
            break
    base = node.id if isinstance(node, ast.Name) else "(...)"
    return base + "".join(reversed(steps))
