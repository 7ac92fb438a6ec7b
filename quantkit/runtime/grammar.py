"""JSON schema → GBNF, with the converter llama-cpp-python ships (`llama_cpp.llama_grammar`, a translation of
llama.cpp's json-schema-to-grammar), for llama.cpp's grammar sampler.

That converter skips what it does not know without a word (a `minimum` becomes any number), so a schema is first
checked against the keywords it honours: anything else is refused, naming the keyword, instead of being
silently dropped. Annotations that do not constrain (`title`, `description` …) are accepted.
"""
from __future__ import annotations

import json
from collections.abc import Iterator

from ..errors import InvalidArgumentError
from .sampler import Grammar

# keywords the converter turns into grammar rules
HONOURED = frozenset({
    "type", "properties", "required", "additionalProperties", "items", "prefixItems", "minItems", "maxItems",
    "enum", "const", "oneOf", "anyOf", "allOf", "$ref", "$defs", "definitions", "pattern", "format",
    "minLength", "maxLength",
})
ANNOTATIONS = frozenset({"title", "description", "$schema", "$id", "$comment", "default", "examples",
                         "deprecated", "readOnly", "writeOnly"})
FORMATS = ("date", "time", "date-time", "uuid", "uuid1", "uuid2", "uuid3", "uuid4", "uuid5")
TYPES = ("object", "array", "string", "number", "integer", "boolean", "null")
LEAD = '[ \\t\\n]{0,8}'  # the blank lines R1 writes between `</think>` and its answer
ANSWER_RULE = "answer"


def json_grammar(schema: dict | None, after: str | None = None) -> Grammar:
    """The grammar of a JSON value following `schema` (None: any JSON object), optionally after a few blank
    characters. `after`: the text that ends a thought (`</think>`): the grammar waits for it (a lazy grammar) and
    constrains what follows. InvalidArgumentError (param response_format) for a keyword it cannot honour."""
    rules = json_rules({ANSWER_RULE: {"type": "object"} if schema is None else schema})
    start = f"{literal(after)} " if after else ""
    return Grammar(f"root ::= {start}{LEAD} {ANSWER_RULE}\n{rules}", trigger=after)


def json_rules(schemas: dict[str, dict], param: str = "response_format") -> str:
    """GBNF rules, one named by each key of `schemas` for a JSON value following its schema (and the rules they
    use), to be referenced from a root rule of the caller's."""
    from llama_cpp.llama_grammar import SchemaConverter

    converter = SchemaConverter(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)
    for name, schema in schemas.items():
        check_schema(schema, param=param)
        try:
            resolved = converter.resolve_refs(json.loads(json.dumps(schema)), "input")
            converter.visit(resolved, name)
        except (AssertionError, ValueError, KeyError, TypeError) as e:
            raise InvalidArgumentError(f"the JSON schema cannot be turned into a grammar: {e}", param=param) from None
    return converter.format_grammar() + "\n"


def literal(text: str) -> str:
    """`text` as a GBNF string literal."""
    return json.dumps(text, ensure_ascii=False)


def check_schema(schema, where: str = "#", param: str = "response_format") -> None:
    """Refuse a schema keyword the grammar cannot honour (naming it and where it is)."""
    try:
        _check(schema, where)
    except InvalidArgumentError as e:
        raise InvalidArgumentError(str(e), param=param) from None


def _check(schema, where: str) -> None:
    for path, key, value in _keywords(schema, where):
        if key in ANNOTATIONS:
            continue
        if key not in HONOURED:
            raise InvalidArgumentError(f"the JSON schema keyword {key!r} (at {path}) is not supported by the "
                                       f"grammar; supported: {', '.join(sorted(HONOURED))}",
                                       param="response_format")
        if key == "format" and value not in FORMATS:
            raise InvalidArgumentError(f"the JSON schema format {value!r} (at {path}) is not supported; "
                                       f"supported: {', '.join(FORMATS)}", param="response_format")
        if key == "type" and not all(t in TYPES for t in (value if isinstance(value, list) else [value])):
            raise InvalidArgumentError(f"the JSON schema type {value!r} (at {path}) is not one of "
                                       f"{', '.join(TYPES)}", param="response_format")
        if key == "$ref" and not (isinstance(value, str) and value.startswith("#/")):
            raise InvalidArgumentError(f"only local references (#/...) are supported, not {value!r} (at {path})",
                                       param="response_format")


def _keywords(schema, path: str) -> Iterator[tuple[str, str, object]]:
    """(where, keyword, value) for every keyword of `schema` and its subschemas."""
    if isinstance(schema, bool):
        return
    if not isinstance(schema, dict):
        raise InvalidArgumentError(f"a JSON schema is an object, not {json.dumps(schema)[:40]} (at {path})",
                                   param="response_format")
    for key, value in schema.items():
        yield path, key, value
        here = f"{path}/{key}"
        if key in ("properties", "$defs", "definitions", "patternProperties") and isinstance(value, dict):
            for name, sub in value.items():
                yield from _keywords(sub, f"{here}/{name}")
        elif key in ("items", "additionalProperties", "not", "contains", "if", "then", "else") and \
                isinstance(value, (dict, bool)):
            yield from _keywords(value, here)
        elif key in ("items", "prefixItems", "oneOf", "anyOf", "allOf") and isinstance(value, list):
            for i, sub in enumerate(value):
                yield from _keywords(sub, f"{here}/{i}")
