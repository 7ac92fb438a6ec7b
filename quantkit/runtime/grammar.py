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
    from llama_cpp.llama_grammar import SchemaConverter

    schema = {"type": "object"} if schema is None else schema
    check_schema(schema)
    converter = SchemaConverter(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)
    try:
        resolved = converter.resolve_refs(json.loads(json.dumps(schema)), "input")
        converter.visit(resolved, ANSWER_RULE)
    except (AssertionError, ValueError, KeyError, TypeError) as e:
        raise InvalidArgumentError(f"the JSON schema cannot be turned into a grammar: {e}",
                                   param="response_format") from None
    start = f'"{after}" ' if after else ""
    root = f"root ::= {start}{LEAD} {ANSWER_RULE}"
    return Grammar(root + "\n" + converter.format_grammar() + "\n", trigger=after)


def check_schema(schema, where: str = "#") -> None:
    """Refuse a schema keyword the grammar cannot honour (naming it and where it is)."""
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
