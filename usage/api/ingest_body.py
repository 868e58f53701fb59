"""Reads an ingest body: NDJSON or JSON, optionally gzip, within the size limits.

A line that is not JSON becomes a per-record rejection (the rest of the batch is kept); a
body in which nothing is JSON is a 400.
"""

from __future__ import annotations

import functools
import itertools
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import msgspec
import orjson
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from rest_framework.exceptions import UnsupportedMediaType
from rest_framework.request import Request

from usage import wire
from usage.api.errors import BadBody, PayloadTooLarge
from usage.api.hosts import machine_name
from usage.events import MalformedLine

NDJSON_TYPES = {
    "application/x-ndjson",
    "application/ndjson",
    "application/jsonl",
    "application/x-jsonlines",
    "application/jsonlines",
}
JSON_TYPES = {"application/json"}
# A gzip member is fed to zlib in pieces from this size, each twice the last (_gunzip).
FIRST_GZIP_PIECE = 64

# A line with something on it, as ``bytes.splitlines`` and ``bytes.strip`` see one: from
# the start or a line break (CR, LF or both) to the next, holding a byte that is not ASCII
# whitespace. Possessive, and each line is matched once: linear in the body.
_NON_BLANK_LINE = re.compile(rb"(?:\A|(?<=[\r\n]))[ \t\x0b\x0c]*+[^ \t\x0b\x0c\r\n][^\r\n]*+")
_JSON_WHITESPACE = re.compile(rb"[ \t\r\n]*+")
JSON_SHAPE = 'A JSON body must be {"records": [...]} (or a list of records)'
RawOrUnset = msgspec.Raw | msgspec.UnsetType


class _JsonEnvelope(msgspec.Struct):
    records: RawOrUnset = msgspec.UNSET
    host: str = ""


_decode_envelope = msgspec.json.Decoder(_JsonEnvelope).decode


@dataclass(frozen=True)
class IngestBody:
    records: list[object]
    host: str


def read_records(request: Request) -> IngestBody:
    media_type = (request.content_type or "").split(";")[0].strip().lower()
    if media_type not in NDJSON_TYPES | JSON_TYPES:
        raise UnsupportedMediaType(
            media_type or "none",
            detail=f"Unsupported content type {media_type or '(none)'!r}: "
            "send application/x-ndjson or application/json",
        )
    raw = decompressed(request, body_within_limit(request))
    limit = settings.USAGE_MAX_RECORDS
    # The record limit is checked before any record is built: a 10 KB gzip of `{}` lines
    # is millions of lines.
    if media_type in JSON_TYPES:
        records, body_host = _json_records(raw, limit)
    else:
        records, body_host = _ndjson_records(raw, limit), ""
    if len(records) > limit:
        raise _too_many_records(limit)
    return IngestBody(records=records, host=machine_name(request, body_host))


def _too_many_records(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"More than {limit} records in one request; the limit is {limit}")


def body_within_limit(request: Request) -> bytes:
    """The body as sent, at most ``USAGE_MAX_BODY_BYTES`` (a 413 past it). Both feeds read
    their bodies here (the OpenTelemetry one too)."""
    limit = settings.USAGE_MAX_BODY_BYTES
    declared = request.META.get("CONTENT_LENGTH") or "0"
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"Body of {declared} bytes; the limit is {limit}")
    try:
        body = _read_at_most(request, limit + 1)
    except RequestDataTooBig:
        raise PayloadTooLarge(f"Body over the limit of {limit} bytes") from None
    if len(body) > limit:
        raise PayloadTooLarge(f"Body over the limit of {limit} bytes")
    return body


def _read_at_most(request: Request, size: int) -> bytes:
    """Up to ``size`` bytes of the body. Not ``request.body``: Django refuses a body over
    DATA_UPLOAD_MAX_MEMORY_SIZE (2.5 MB by default, a limit meant for form posts) with
    RequestDataTooBig, which turned every batch between 2.5 MB and USAGE_MAX_BODY_BYTES into
    a 413. Reading the stream with a bound also caps what a body without a (truthful)
    Content-Length can take, e.g. a chunked upload."""
    http_request = request._request
    if hasattr(http_request, "_body"):  # already read, e.g. by a middleware
        return http_request.body[:size]
    chunks: list[bytes] = []
    remaining = size
    while remaining > 0:
        chunk = http_request.read(min(remaining, 1024 * 1024))
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def decompressed(request: Request, body: bytes) -> bytes:
    """The body before its ``Content-Encoding`` (none or gzip), bounded as ``_gunzip`` says."""
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding != "gzip":
        raise UnsupportedMediaType(encoding, detail=f"Unsupported Content-Encoding {encoding!r}")
    return _gunzip(body, settings.USAGE_MAX_BODY_BYTES, settings.USAGE_MAX_RECORDS)


def _gunzip(body: bytes, limit: int, max_members: int) -> bytes:
    """Every member of a gzip body (RFC 1952 allows several back to back: `cat a.gz b.gz`),
    decompressed to at most ``limit`` bytes, in time linear in the body.

    One decompressor stops at the end of its member and hands back what followed it in
    ``unused_data``, a copy. Handed the rest of the body, each member copied the rest of the
    body: quadratic (160,000 empty members took 12 to 20 s). So each member is fed in pieces
    that start at 64 bytes and double: a member's last piece is at most twice what it took
    before, plus 64 bytes, so what it hands back is about its own size at most.
    Bounded output: each piece may expand to no more than what is left of the limit, so a
    gzip bomb, in one member or spread over many, stops at the limit. And no more members
    than records are allowed (``max_members``): each member costs a few microseconds of
    Python, and 10 MB of empty ones are 500,000."""
    view = memoryview(body)
    parts: list[bytes] = []
    size = offset = members = 0
    while True:
        members += 1
        if members > max_members:
            raise PayloadTooLarge(
                f"More than {max_members} gzip members in one request; the limit is "
                f"{max_members}, as many as records"
            )
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        piece = FIRST_GZIP_PIECE
        while not inflater.eof:
            if offset == len(body):
                # zlib raises nothing for a stream cut short (or an empty body): without
                # this check a truncated upload would be taken for a shorter batch.
                raise BadBody("Body is not valid gzip: it ends before the gzip stream does")
            fed = view[offset : offset + piece]
            try:
                data = inflater.decompress(fed, limit + 1 - size)  # max_length is >= 1
            except zlib.error:
                raise BadBody("Body is not valid gzip") from None
            size += len(data)
            # Within the limit, zlib stopped for want of input, so it took all of ``fed``.
            if size > limit:
                raise PayloadTooLarge(f"Decompressed body over the limit of {limit} bytes")
            parts.append(data)
            offset += len(fed) - len(inflater.unused_data)
            piece *= 2
        if offset == len(body):
            return b"".join(parts)


def _json_records(raw: bytes, limit: int) -> tuple[list[object], str]:
    """The records of a JSON body: a list of records, or ``{"records": [...], "host": ...}``
    of which nothing else is read. The records are counted before they are built."""
    records_text, host = _json_parts(raw)
    if records_text.count(b",") >= limit and longer_than(records_text, limit):
        raise _too_many_records(limit)
    try:
        records = orjson.loads(records_text)
    except orjson.JSONDecodeError as error:
        raise BadBody(f"Body is not valid JSON: {error}") from None
    if not isinstance(records, list):
        raise BadBody(JSON_SHAPE)
    return records, host


def _json_parts(raw: bytes) -> tuple[bytes, str]:
    """The text of the records and the host. An object's other keys are checked as JSON and
    skipped, never built: only its records may be large."""
    leading = _JSON_WHITESPACE.match(raw)
    start = leading.end() if leading else 0
    if raw[start : start + 1] != b"{":
        return raw, ""
    try:
        envelope = _decode_envelope(raw)
    except msgspec.DecodeError as error:
        raise BadBody(f"Body is not valid JSON: {error}") from None
    except msgspec.ValidationError:
        raise BadBody('"host" must be a string') from None  # the one field with a type
    if envelope.records is msgspec.UNSET:
        raise BadBody(JSON_SHAPE)
    return bytes(envelope.records), envelope.host


def longer_than(text: bytes, limit: int) -> bool:
    """Whether ``text`` is a JSON array of more than ``limit`` elements, found without
    building them. Anything else (not an array, not JSON) is for the parser to refuse."""
    try:
        first = _first_elements(limit)(text)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return False
    return getattr(first, f"e{limit}") is not msgspec.UNSET


@functools.lru_cache(maxsize=2)
def _first_elements(limit: int) -> Callable[[bytes], object]:
    """A decoder of a JSON array into its first ``limit + 1`` elements, as unparsed text: an
    array-like struct of that many optional fields, which skips any further element (at C
    speed, building nothing). Made once per limit: about 0.1 s for 10,000."""
    fields = [(f"e{index}", RawOrUnset, msgspec.UNSET) for index in range(limit + 1)]
    first = msgspec.defstruct("FirstElements", fields, array_like=True)
    decode: Callable[[bytes], object] = msgspec.json.Decoder(first).decode
    return decode


def _ndjson_records(raw: bytes, limit: int) -> list[object]:
    if _line_count(raw) <= limit:
        lines = [line for line in raw.splitlines() if line.strip()]
    else:
        # More lines than records allowed: count those with something on them before any
        # is parsed, finding at most one too many.
        found = itertools.islice(_NON_BLANK_LINE.finditer(raw), limit + 1)
        lines = [line.group() for line in found]
        if len(lines) > limit:
            raise _too_many_records(limit)
    records = [wire.read_line(line) for line in lines]
    if records and all(type(record) is MalformedLine for record in records):
        raise BadBody("Body is not NDJSON: no line is valid JSON")
    return records


def _line_count(raw: bytes) -> int:
    """``len(raw.splitlines())``, counted at C speed without splitting (CR, LF or CR LF)."""
    breaks = raw.count(b"\n") + raw.count(b"\r") - raw.count(b"\r\n")
    return breaks + (0 if not raw or raw.endswith((b"\n", b"\r")) else 1)
