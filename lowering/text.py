"""The textual form of the IR: a deterministic printer and a parser that reads it back.

    graph @main(%x: f32[1,4,5,5]) {
      %w: f32[4,2,3,3] = initializer elided<5c0b8e1f>
      %y: f32[1,2,11,11] = ConvTranspose(%x, %w) {pads=[1,1,1,1], strides=[2,2]} @up1
      return %y
    }

Print -> parse -> print is the identity. Constants with more than `elide_above` elements print as
`elided<digest>`: the text then keeps their type and identity but not their data, like MLIR's
elided resources, and evaluating such a parsed graph is refused. `print_graph(g, elide_above=None)`
prints every element, and parsing that gives back the exact data, bit for bit (a NaN other than
the default one prints as its raw bits in hex, `0x7FC00001`, as MLIR writes them).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from . import dtypes
from .errors import ParseError, VerificationError
from .ir import Graph, Shape, Value
from .verify import ELIDED_META

_BARE = re.compile(r"[A-Za-z0-9_.]+")
_DIM = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")  # a bare symbolic dim must not read back as a number


def _name(name: str) -> str:
    return name if _BARE.fullmatch(name) else json.dumps(name)


def _dim(dim: int | str) -> str:
    # exporters write dim_params such as "batch size" or "2*N"; quote those so they parse back
    return str(dim) if isinstance(dim, int) or _DIM.fullmatch(dim) else json.dumps(dim)


def format_type(shape: Shape | None, dtype: str | None) -> str:
    head = "?" if dtype is None else dtypes.short_name(dtype)
    if shape is None:
        return f"{head}[*]"
    return f"{head}[{','.join(_dim(d) for d in shape)}]"


def _nan_bits(value: Any, dtype: np.dtype) -> int | None:
    """The bit pattern of a NaN other than the dtype's default one (sign or payload set), else None."""
    if not np.isnan(value):
        return None
    bits = int(np.array(value, dtype).view(f"u{dtype.itemsize}"))
    return None if bits == int(np.array(np.nan, dtype).view(f"u{dtype.itemsize}")) else bits


def _scalar(value: Any, dtype: np.dtype) -> str:
    if dtype.kind == "f":
        bits = _nan_bits(value, dtype)
        if bits is not None:  # as MLIR writes them: the raw bits in hex, so the payload survives
            return f"0x{bits:0{2 * dtype.itemsize}X}"
        text = str(dtype.type(value))
        return text if any(c in text for c in ".eEn") else text + ".0"  # 'inf'/'nan' contain 'n'
    if dtype.kind == "b":
        return "1" if value else "0"
    return str(int(value))


def _dense(array: np.ndarray) -> str:
    flat = np.asarray(array).reshape(-1)
    return "dense<[" + ", ".join(_scalar(v, flat.dtype) for v in flat) + "]>"


def digest(array: np.ndarray) -> str:
    data = np.ascontiguousarray(array)
    return hashlib.sha256(data.dtype.str.encode() + str(data.shape).encode() + data.tobytes()).hexdigest()[:8]


def _attr(value: Any) -> str:
    if type(value).__name__ == "AttributeProto":  # an opaque node's raw ONNX attribute: print its value
        from .frontends.onnx import attribute_value

        return _attr(attribute_value(value))
    if isinstance(value, np.ndarray):
        return f"{format_type(value.shape, value.dtype.name)} {_dense(value)}"
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_attr(v) for v in value) + "]"
    raise TypeError(f"cannot print attribute value {value!r}")


def print_graph(graph: Graph, *, elide_above: int | None = 16) -> str:
    """Deterministic text of `graph`; constants larger than `elide_above` elements are elided."""
    elided: dict[str, str] = graph.meta.get(ELIDED_META, {})
    params = ", ".join(f"%{_name(v.name)}: {v.type_str()}" for v in graph.inputs)
    lines = [f"graph @{_name(graph.name)}({params}) {{"]
    for name, value in graph.initializers.items():
        data = value.const
        assert data is not None
        if name in elided:
            body = f"elided<{elided[name]}>"
        elif elide_above is not None and data.size > elide_above:
            body = f"elided<{digest(data)}>"
        else:
            body = _dense(data)
        lines.append(f"  %{_name(name)}: {value.type_str()} = initializer {body}")
    for node in graph.nodes:
        outs = ", ".join(f"%{_name(v.name)}: {v.type_str()}" for v in node.outputs)
        args = ", ".join("none" if v is None else f"%{_name(v.name)}" for v in node.inputs)
        op = node.op if node.opdef is not None or not node.domain else f"{_name(node.domain)}::{node.op}"
        attrs = ", ".join(f"{k}={_attr(v)}" for k, v in sorted(node.attrs.items()))
        line = f"  {outs} = {op}({args})"
        if attrs:
            line += f" {{{attrs}}}"
        if node.name:
            line += f" @{_name(node.name)}"
        lines.append(line)
    lines.append("  return " + ", ".join(f"%{_name(v.name)}" for v in graph.outputs))
    lines.append("}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- parser

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+|//[^\n]*)
  | (?P<elided>elided<[0-9A-Za-z]*>)
  | (?P<value>%(?:"(?:[^"\\]|\\.)*"|[A-Za-z0-9_.]+))
  | (?P<at>@(?:"(?:[^"\\]|\\.)*"|[A-Za-z0-9_.]+))
  | (?P<string>"(?:[^"\\]|\\.)*")
  | (?P<hex>0x[0-9A-Fa-f]+\b)
  | (?P<number>-?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?|-inf\b|-nan\b)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_.]*)
  | (?P<punct>->|::|[()\[\]{},=:<>*?])
    """,
    re.VERBOSE,
)


class _Tokens:
    def __init__(self, text: str) -> None:
        self.items: list[tuple[str, str, int]] = []
        pos, line = 0, 1  # the line is counted as we go: recounting from the start is quadratic in the text
        while pos < len(text):
            match = _TOKEN.match(text, pos)
            if match is None:
                raise ParseError(f"line {line}: unexpected character {text[pos]!r}")
            kind = match.lastgroup or ""
            if kind != "ws":
                self.items.append((kind, match.group(), line))
            line += match.group().count("\n")
            pos = match.end()
        self.index = 0

    def peek(self, offset: int = 0) -> tuple[str, str, int]:
        index = self.index + offset
        return self.items[index] if index < len(self.items) else ("eof", "", self.items[-1][2] if self.items else 1)

    def next(self) -> tuple[str, str, int]:
        token = self.peek()
        self.index += 1
        return token

    def error(self, message: str) -> ParseError:
        _, text, line = self.peek()
        return ParseError(f"line {line}: {message}, found {text or 'end of text'!r}")

    def error_before(self, message: str) -> ParseError:
        """An error about what was just read (a whole tensor), at the line where it ended."""
        return ParseError(f"line {self.peek(-1)[2]}: {message}")

    def expect(self, text: str) -> None:
        if self.peek()[1] != text:
            raise self.error(f"expected {text!r}")
        self.index += 1

    def accept(self, text: str) -> bool:
        if self.peek()[1] == text:
            self.index += 1
            return True
        return False

    def take(self, kind: str) -> str:
        if self.peek()[0] != kind:
            raise self.error(f"expected {kind}")
        return self.next()[1]


def _unquote(text: str) -> str:
    return json.loads(text) if text.startswith('"') else text


def _parse_type(tokens: _Tokens) -> tuple[Shape | None, str | None]:
    _, head, _ = tokens.next()
    if head == "?":
        dtype = None
    else:
        try:
            dtype = dtypes.from_short(head)
        except KeyError:
            tokens.index -= 1
            raise tokens.error("expected an element type (f32, f64, i64, ...)") from None
    tokens.expect("[")
    if tokens.accept("*"):
        tokens.expect("]")
        return None, dtype
    dims: list[int | str] = []
    while not tokens.accept("]"):
        kind, text, _ = tokens.next()
        if kind == "number" and re.fullmatch(r"\d+", text):
            dims.append(int(text))
        elif kind == "ident":
            dims.append(text)
        elif kind == "string":
            dims.append(json.loads(text))
        else:
            tokens.index -= 1
            raise tokens.error("expected a dimension")
        if tokens.peek()[1] != "]":
            tokens.expect(",")
    return tuple(dims), dtype


def _parse_elements(tokens: _Tokens) -> list[str]:
    tokens.expect("dense")
    tokens.expect("<")
    tokens.expect("[")
    items: list[str] = []
    while not tokens.accept("]"):
        kind, text, _ = tokens.next()
        if kind not in ("number", "ident", "hex"):
            tokens.index -= 1
            raise tokens.error("expected a number")
        items.append(text)
        if tokens.peek()[1] != "]":
            tokens.expect(",")
    tokens.expect(">")
    return items


def _to_array(items: list[str], shape: Shape, dtype: str, tokens: _Tokens) -> np.ndarray:
    patterns = {i: int(t, 16) for i, t in enumerate(items) if t.startswith("0x")}  # floats' raw bits
    if patterns and not dtypes.is_float(dtype):
        raise tokens.error_before(f"a hex bit pattern ({items[next(iter(patterns))]}) is only for float tensors")
    items = ["0" if i in patterns else t for i, t in enumerate(items)]
    try:
        flat = np.array(items, dtype=np.float64 if dtypes.is_float(dtype) else np.int64)
    except (ValueError, OverflowError) as error:
        raise tokens.error_before(f"bad tensor element ({error})") from None
    if not dtypes.is_float(dtype) and flat.size:
        lo, hi = (0, 1) if dtype == "bool" else (np.iinfo(dtype).min, np.iinfo(dtype).max)
        if flat.min() < lo or flat.max() > hi:  # astype would wrap around silently
            raise tokens.error_before(f"tensor element out of range for {dtype}: {flat.min()}..{flat.max()}")
    size = int(np.prod(shape))
    if flat.size != size:
        raise tokens.error_before(f"tensor of shape {list(shape)} needs {size} elements, got {flat.size}")
    if dtypes.is_float(dtype):
        flat = np.array(items, dtype=dtype)  # parse at the target precision: exact round trip
        width = flat.dtype.itemsize
        bits = flat.view(f"u{width}")
        for index, pattern in patterns.items():
            if pattern >= 1 << (8 * width):
                raise tokens.error_before(f"bit pattern {hex(pattern)} is wider than {dtype} ({8 * width} bits)")
            bits[index] = pattern
    return flat.astype(dtype).reshape(shape)


def _parse_attr(tokens: _Tokens) -> Any:
    kind, text, _ = tokens.peek()
    if kind == "number":
        tokens.next()
        return float(text) if any(c in text for c in ".eEn") else int(text)
    if kind == "string":
        tokens.next()
        return json.loads(text)
    if kind == "ident" and text in ("inf", "nan"):
        tokens.next()
        return float(text)
    if text == "[":
        tokens.next()
        items = []
        while not tokens.accept("]"):
            items.append(_parse_attr(tokens))
            if tokens.peek()[1] != "]":
                tokens.expect(",")
        return items
    if kind == "ident" or text == "?":
        shape, dtype = _parse_type(tokens)
        if shape is None or dtype is None:
            raise tokens.error("a tensor attribute needs a full type")
        return _to_array(_parse_elements(tokens), shape, dtype, tokens)
    raise tokens.error("expected an attribute value")


def parse_ir(text: str) -> Graph:
    """Parse the text form back into a Graph (see the module docstring for the syntax)."""
    from .ops import lookup

    if not isinstance(text, str):
        raise ParseError(f"parse_ir takes the text form as a str, got {type(text).__name__}")
    tokens = _Tokens(text)
    tokens.expect("graph")
    graph = Graph(_unquote(tokens.take("at")[1:]))
    tokens.expect("(")
    while not tokens.accept(")"):
        name = _unquote(tokens.take("value")[1:])
        tokens.expect(":")
        shape, dtype = _parse_type(tokens)
        with _at_line(tokens):
            graph.add_input(name, shape, dtype or "float32")
        if tokens.peek()[1] != ")":
            tokens.expect(",")
    tokens.expect("{")
    elided: dict[str, str] = {}
    while not tokens.accept("return"):
        line = tokens.peek()[2]
        outs: list[tuple[str, Shape | None, str | None]] = []
        while True:
            name = _unquote(tokens.take("value")[1:])
            tokens.expect(":")
            outs.append((name, *_parse_type(tokens)))
            if not tokens.accept(","):
                break
        tokens.expect("=")
        if tokens.accept("initializer"):
            if len(outs) != 1:
                raise tokens.error("an initializer defines one value")
            name, shape, dtype = outs[0]
            if shape is None or dtype is None:
                raise tokens.error("an initializer needs a full type")
            if tokens.peek()[0] == "elided":
                # one token: a digest such as 7426ec77 would otherwise lex as a number and a name
                elided[name] = tokens.next()[1][len("elided<") : -1]
                data = np.broadcast_to(np.full((), np.nan if dtypes.is_float(dtype) else 0, dtype=dtype), shape)
            else:
                data = _to_array(_parse_elements(tokens), shape, dtype, tokens)
            with _at_line(tokens):
                graph.add_initializer(name, data)
            continue
        domain = ""
        op = tokens.next()[1]
        if tokens.accept("::"):
            domain, op = _unquote(op), tokens.take("ident")
        tokens.expect("(")
        args: list[Value | None] = []
        while not tokens.accept(")"):
            if tokens.accept("none"):
                args.append(None)
            else:
                ref = _unquote(tokens.take("value")[1:])
                if not graph.has_value(ref):
                    tokens.index -= 1
                    raise tokens.error(f"value '%{ref}' is used before it is defined")
                args.append(graph.value(ref))
            if tokens.peek()[1] != ")":
                tokens.expect(",")
        attrs: dict[str, Any] = {}
        if tokens.accept("{"):
            while not tokens.accept("}"):
                key = tokens.take("ident")
                if key in attrs:
                    tokens.index -= 1
                    raise tokens.error(f"attribute '{key}' is given twice")
                tokens.expect("=")
                attrs[key] = _parse_attr(tokens)
                if tokens.peek()[1] != "}":
                    tokens.expect(",")
        node_name = _unquote(tokens.take("at")[1:]) if tokens.peek()[0] == "at" else ""
        known = lookup(op) is not None
        types = None if known else [(s, d) for _, s, d in outs]
        with _at_line(tokens):
            node = graph.add_node(
                op,
                args,
                attrs,
                outputs=[n for n, _, _ in outs],
                name=node_name,
                domain=domain or None,
                output_types=types,
            )
        for value, (_, shape, dtype) in zip(node.outputs, outs, strict=True):
            if (value.shape, value.dtype) != (shape, dtype):
                raise ParseError(
                    f"line {line}: {node.label}: output '%{value.name}' is declared {format_type(shape, dtype)} "
                    f"but the op infers {value.type_str()}"
                )
    while True:
        line = tokens.peek()[2]
        ref = _unquote(tokens.take("value")[1:])
        if not graph.has_value(ref):
            raise ParseError(f"line {line}: return: value '%{ref}' is not defined")
        graph.outputs.append(graph.value(ref))
        if not tokens.accept(","):
            break
    tokens.expect("}")
    if tokens.peek()[0] != "eof":
        raise tokens.error("expected end of text")
    if elided:
        graph.meta[ELIDED_META] = elided
    return graph


@contextmanager
def _at_line(tokens: _Tokens) -> Iterator[None]:
    """Report a verification failure while building as a parse error at the current line."""
    line = tokens.peek(-1)[2]
    try:
        yield
    except VerificationError as error:
        raise ParseError(f"line {line}: {error}") from None


def iter_elided(graph: Graph) -> Iterator[str]:
    yield from graph.meta.get(ELIDED_META, {})
