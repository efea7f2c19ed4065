"""JSON answers: the final text must be JSON valid against the schema; a stream, a JSON prefix.

A finished answer is parsed (bare, or as one ```json fenced block and nothing else) and
validated with the schema's own draft (2020-12 when it names none), formats checked; the
validator is built once per schema. While the answer streams, `PrefixChecker` (a character
state machine over strings, escapes, brackets, numbers and literals) says whether the text
so far can still become JSON, so prose instead of JSON or a mismatched bracket stops the
stream at once. It keeps its state in the request's memo and reads only the new characters
of each chunk. Reasons give the JSON path and what failed, never the answer's values.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import lru_cache

import jsonschema
from jsonschema.exceptions import best_match
from jsonschema.protocols import Validator

from guardrails.scanners.base import Scan, ScanInput
from llmops.guardrails.policy import JsonSchemaRule

_MEMO = "json_schema.prefix"
_FENCE = re.compile(r"\A\s*```(?:json)?[ \t]*\n(.*?)\n?```\s*\Z", re.DOTALL | re.IGNORECASE)
_STRING_RUN = re.compile(r'[^"\\\x00-\x1f]*')
_WHITESPACE = " \t\n\r"
_LITERALS = {"t": "true", "f": "false", "n": "null"}
_DIGITS = frozenset("0123456789")


class JsonSchemaScanner:
    """Score 1.0 when the answer is not (or can no longer become) JSON valid against the schema."""

    name = "json_schema"

    def __init__(self, rule: JsonSchemaRule) -> None:
        self.rule = rule

    def scan(self, item: ScanInput) -> Scan:
        if not item.final:
            return self._prefix(item)
        match = _FENCE.match(item.text)
        try:
            value = json.loads(match.group(1) if match else item.text)
        except json.JSONDecodeError as exc:
            return Scan(1.0, reason=f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}")
        schema = item.json_schema if item.json_schema is not None else self.rule.schema_
        if schema is None:
            return Scan(0.0)
        try:
            validator = _validator(json.dumps(schema, sort_keys=True))
        except jsonschema.SchemaError as exc:  # the request's own schema: nothing to check against
            return Scan(0.0, reason=f"the JSON schema is invalid: {exc.message}")
        error = best_match(validator.iter_errors(value))
        if error is None:
            return Scan(0.0)
        return Scan(1.0, reason=f"{error.json_path}: {_explain(error)}")

    @staticmethod
    def _prefix(item: ScanInput) -> Scan:
        checker = item.memo.get(_MEMO)
        if not isinstance(checker, PrefixChecker) or not checker.extends_to(item.text):
            checker = item.memo[_MEMO] = PrefixChecker()
        problem = checker.feed(item.text)
        return Scan(0.0) if problem is None else Scan(1.0, reason=problem)


@lru_cache(maxsize=256)
def _validator(schema_json: str) -> Validator:
    schema = json.loads(schema_json)
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    cls.check_schema(schema)
    validator: Validator = cls(schema, format_checker=cls.FORMAT_CHECKER)
    return validator


def _explain(error: jsonschema.ValidationError) -> str:
    """What failed, from the schema's side only (jsonschema's messages quote the value)."""
    if error.validator == "required":
        return error.message  # names the missing property, which the schema gave
    expected = json.dumps(error.validator_value)
    if len(expected) > 60 or isinstance(error.validator_value, dict):
        return f"fails '{error.validator}'"
    return f"fails '{error.validator}' ({expected})"


@dataclass(slots=True)
class _Frame:
    """An open object or array, and where in it the checker is (for the JSON path)."""

    kind: str  # "{" or "["
    key: str = ""
    index: int = 0


@dataclass(slots=True)
class PrefixChecker:
    """Whether a text is a prefix of some JSON text (bare, or in a ```json fence).

    `feed` takes the whole text so far and reads only what it has not seen. Each state
    has a method reading one character at an offset and returning the next offset; the
    whitespace between tokens is skipped before the structural states see it.
    """

    seen: str = ""
    state: str = "start"
    stack: list[_Frame] = field(default_factory=list)
    is_key: bool = False
    key: list[str] = field(default_factory=list)
    pending: str = ""  # the fence opener so far, or the rest of a literal
    hex_left: int = 0  # hex digits still due in a \u escape
    number: str = ""  # the part of a number just read: sign, zero, int, dot, frac, e, esign, exp
    fenced: bool = False
    error: str | None = None

    def extends_to(self, text: str) -> bool:
        return text.startswith(self.seen)

    def feed(self, text: str) -> str | None:
        """None while `text` can still become JSON, else what is wrong (sticky)."""
        if self.error is None:
            position = len(self.seen)
            self.seen = text
            while position < len(text) and self.error is None:
                if self.state in _TOKEN_STATES and text[position] in _WHITESPACE:
                    position += 1
                else:
                    position = getattr(self, "_" + self.state)(text, position)
        return self.error

    def _fail(self, what: str) -> int:
        path = "$" + "".join(
            f"[{f.index}]" if f.kind == "[" else (f".{f.key}" if f.key else "") for f in self.stack
        )
        self.error = f"not a JSON prefix at {path}: {what}"
        return len(self.seen)

    def _start(self, text: str, i: int) -> int:
        if text[i] == "`":
            self.state = "fence"
            return i
        self.state = "value"
        return i

    def _fence(self, text: str, i: int) -> int:
        self.pending += text[i]
        if self.pending.endswith("\n"):
            if not _FENCE_OPENER.fullmatch(self.pending):
                return self._fail("text before the JSON")
            self.state, self.fenced = "value", True
        elif not _FENCE_OPENER_PREFIX.fullmatch(self.pending):
            return self._fail("text before the JSON")
        return i + 1

    def _value(self, text: str, i: int) -> int:
        char = text[i]
        if char in "{[":
            self.stack.append(_Frame(char))
            self.state = "first_key" if char == "{" else "first_item"
        elif char == '"':
            self.state, self.is_key = "string", False
        elif char == "-" or char in _DIGITS:
            self.state, self.number = "number", ""
            self._advance_number(char)
        elif char in _LITERALS:
            self.state, self.pending = "literal", _LITERALS[char][1:]
        else:
            return self._fail("expected a JSON value")
        return i + 1

    def _first_item(self, text: str, i: int) -> int:
        return self._close("[", i) if text[i] == "]" else self._value(text, i)

    def _first_key(self, text: str, i: int) -> int:
        return self._close("{", i) if text[i] == "}" else self._key(text, i)

    def _key(self, text: str, i: int) -> int:
        if text[i] != '"':
            return self._fail("expected a property name in double quotes")
        self.state, self.is_key, self.key = "string", True, []
        return i + 1

    def _colon(self, text: str, i: int) -> int:
        if text[i] != ":":
            return self._fail("expected ':'")
        self.state = "value"
        return i + 1

    def _string(self, text: str, i: int) -> int:
        run = _STRING_RUN.match(text, i)
        assert run is not None
        if self.is_key:
            self.key.append(run.group())
        end = run.end()
        if end == len(text):
            return end
        if text[end] == "\\":
            self.state = "escape"
        elif text[end] == '"':
            if self.is_key:
                self.stack[-1].key = "".join(self.key)
            self.state = "colon" if self.is_key else "after"
        else:
            return self._fail("a control character inside a string")
        return end + 1

    def _escape(self, text: str, i: int) -> int:
        if text[i] == "u":
            self.state, self.hex_left = "unicode", 4
        elif text[i] in '"\\/bfnrt':
            self.state = "string"
        else:
            return self._fail("an invalid escape in a string")
        return i + 1

    def _unicode(self, text: str, i: int) -> int:
        if text[i] not in _HEX:
            return self._fail("an invalid \\u escape in a string")
        self.hex_left -= 1
        if self.hex_left == 0:
            self.state = "string"
        return i + 1

    def _literal(self, text: str, i: int) -> int:
        if text[i] != self.pending[0]:
            return self._fail("an invalid literal (true, false or null)")
        self.pending = self.pending[1:]
        if not self.pending:
            self.state = "after"
        return i + 1

    def _number(self, text: str, i: int) -> int:
        if self._advance_number(text[i]):
            return i + 1
        if self.number in ("sign", "dot", "e", "esign"):
            return self._fail("an incomplete number")
        self.state = "after"
        return i  # the character after a number is read in the after-value state

    def _after(self, text: str, i: int) -> int:
        char = text[i]
        if not self.stack:
            if self.fenced and char == "`":
                self.state, self.pending = "closing", "```"
                return i
            return self._fail("text after the JSON value")
        top = self.stack[-1]
        if char == ",":
            if top.kind == "[":
                top.index += 1
            self.state = "value" if top.kind == "[" else "key"
            return i + 1
        if char in "]}":
            return self._close("[" if char == "]" else "{", i)
        return self._fail(f"expected ',' or '{']' if top.kind == '[' else '}'}'")

    def _closing(self, text: str, i: int) -> int:
        if not self.pending or text[i] != self.pending[0]:
            return self._fail("text after the JSON value")
        self.pending = self.pending[1:]
        return i + 1

    def _close(self, kind: str, i: int) -> int:
        if self.stack[-1].kind != kind:
            return self._fail("a mismatched bracket")
        self.stack.pop()
        self.state = "after"
        return i + 1

    def _advance_number(self, char: str) -> bool:
        """Advance the number by `char`; False when `char` cannot continue it."""
        part = self.number
        if char in _DIGITS:
            if part == "zero":
                return False  # JSON has no leading zeros
            self.number = _AFTER_DIGIT.get(part, part)
            if part in ("", "sign") and char == "0":
                self.number = "zero"
            return True
        step = _NUMBER_STEPS.get((part, char.lower() if char in "eE" else char))
        if step is None:
            return False
        self.number = step
        return True


_TOKEN_STATES = frozenset(("value", "first_item", "first_key", "key", "colon", "after", "closing"))
_FENCE_OPENER = re.compile(r"```(?:json)?[ \t]*\n", re.IGNORECASE)
_FENCE_OPENER_PREFIX = re.compile(r"`{1,3}|```(?:j|js|jso|json)?[ \t]*", re.IGNORECASE)
_HEX = frozenset("0123456789abcdefABCDEF")
_AFTER_DIGIT = {"": "int", "sign": "int", "dot": "frac", "e": "exp", "esign": "exp"}
_NUMBER_STEPS = {
    ("", "-"): "sign",
    ("int", "."): "dot",
    ("zero", "."): "dot",
    ("int", "e"): "e",
    ("zero", "e"): "e",
    ("frac", "e"): "e",
    ("e", "+"): "esign",
    ("e", "-"): "esign",
}
