"""Counts a request's log records before any is built, so that too many are refused cheaply.

A decoded message costs far more memory than its bytes: 10 MB of empty log records (two
bytes each) decode to five million messages, 700 MB in upb (JSON, through orjson: 320 MB).
So the envelope around the records (resources, scopes, records) is walked first, stopping
at one past the limit, and nothing inside a record is read. This only counts: the official
classes decode the request afterwards (``otlp_feed.protocol``), and a body this walk cannot
follow is one they would refuse too.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TypeVar

import msgspec

from usage.api.ingest_body import longer_than

# The fields that nest: ExportLogsServiceRequest.resource_logs = 1, ResourceLogs.scope_logs
# = 2, ScopeLogs.log_records = 2 (opentelemetry/proto/logs/v1/logs.proto).
RESOURCE_LOGS = 1
SCOPE_LOGS = 2
LOG_RECORDS = 2
# Protobuf's wire types (https://protobuf.dev/programming-guides/encoding/).
VARINT, FIXED64, LENGTH_DELIMITED, FIXED32 = 0, 1, 2, 5


class Unfollowable(ValueError):
    """The body's framing is broken where the records are: it cannot be decoded either."""


class TooMany(ValueError):
    def __init__(self, what: str, limit: int) -> None:
        super().__init__(f"More than {limit} {what} in one request; the limit is {limit}")


def count_protobuf(body: bytes, limit: int) -> int:
    """The log records of a binary ``ExportLogsServiceRequest``; ``TooMany`` past ``limit``
    (resources and scopes too: each costs at least what a record does)."""
    records = scopes = 0
    resources = _fields(memoryview(body), RESOURCE_LOGS, _Budget("resources", limit))
    scope_budget = _Budget("scopes", limit)
    record_budget = _Budget("log records", limit)
    for resource in resources:
        for scope in _fields(resource, SCOPE_LOGS, scope_budget):
            scopes += 1
            for _ in _fields(scope, LOG_RECORDS, record_budget):
                records += 1
    return records


class _Budget:
    """How many of one kind a request may hold, across every message that holds them."""

    def __init__(self, what: str, limit: int) -> None:
        self.what, self.limit, self.taken = what, limit, 0

    def take(self, count: int = 1) -> None:
        self.taken += count
        if self.taken > self.limit:
            raise TooMany(self.what, self.limit)


def _fields(message: memoryview, number: int, budget: _Budget) -> Iterator[memoryview]:
    """The length-delimited fields ``number`` of ``message``, each its bytes, each taken
    from ``budget``; any other field is skipped."""
    offset = 0
    while offset < len(message):
        tag, offset = _varint(message, offset)
        wire_type, field = tag & 7, tag >> 3
        if wire_type != LENGTH_DELIMITED:
            offset = _skipped(message, offset, wire_type)
            continue
        size, offset = _varint(message, offset)
        end = offset + size
        if end > len(message):
            raise Unfollowable("a field runs past the end of its message")
        if field == number:
            budget.take()
            yield message[offset:end]
        offset = end


def _skipped(message: memoryview, offset: int, wire_type: int) -> int:
    if wire_type == VARINT:
        return _varint(message, offset)[1]
    width = {FIXED64: 8, FIXED32: 4}.get(wire_type)
    if width is None or offset + width > len(message):
        raise Unfollowable(f"wire type {wire_type} where the records are")  # groups, or junk
    return offset + width


def _varint(message: memoryview, offset: int) -> tuple[int, int]:
    value = shift = 0
    while offset < len(message) and shift < 64:
        byte = message[offset]
        offset += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, offset
        shift += 7
    raise Unfollowable("a varint is cut short or longer than ten bytes")


RawOrUnset = msgspec.Raw | msgspec.UnsetType


# OTLP/JSON's keys are lowerCamelCase; protobuf's JSON parser also takes the proto names.
class _Request(msgspec.Struct):
    resourceLogs: RawOrUnset = msgspec.UNSET
    resource_logs: RawOrUnset = msgspec.UNSET


class _Resource(msgspec.Struct):
    scopeLogs: RawOrUnset = msgspec.UNSET
    scope_logs: RawOrUnset = msgspec.UNSET


class _Scope(msgspec.Struct):
    logRecords: RawOrUnset = msgspec.UNSET
    log_records: RawOrUnset = msgspec.UNSET


def count_json(body: bytes, limit: int) -> int:
    """The log records of an OTLP/JSON ``ExportLogsServiceRequest``, counted as
    ``count_protobuf`` counts them. Each level is read as unparsed text (msgspec skips what
    it does not name at C speed), and an array is measured before its elements are taken."""
    resources, scopes = _Budget("resources", limit), _Budget("scopes", limit)
    records = _Budget("log records", limit)
    request = _decoded(body, _Request)
    for resource in _elements(_either(request.resourceLogs, request.resource_logs), resources):
        parts = _decoded(resource, _Resource)
        for scope in _elements(_either(parts.scopeLogs, parts.scope_logs), scopes):
            fields = _decoded(scope, _Scope)
            _elements(_either(fields.logRecords, fields.log_records), records)
    return records.taken


def _either(camel: RawOrUnset, snake: RawOrUnset) -> RawOrUnset:
    return snake if camel is msgspec.UNSET else camel


def _elements(text: RawOrUnset, budget: _Budget) -> list[msgspec.Raw]:
    """The elements of a JSON array, unparsed, taken from ``budget``; null is none. An array
    longer than the whole limit is refused before any element is taken (the measure is made
    once per limit: ``longer_than``)."""
    if text is msgspec.UNSET or bytes(text) == b"null":
        return []
    if longer_than(bytes(text), budget.limit):
        budget.take(budget.limit + 1)  # raises TooMany
    elements = _decoded(text, list[msgspec.Raw])
    budget.take(len(elements))
    return elements


Decoded = TypeVar("Decoded")


def _decoded(text: bytes | msgspec.Raw, kind: type[Decoded]) -> Decoded:
    try:
        return msgspec.json.decode(text, type=kind)
    except (msgspec.DecodeError, msgspec.ValidationError) as error:
        raise Unfollowable(f"not OTLP/JSON: {error}") from None
