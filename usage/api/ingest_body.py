"""Reads an ingest body: NDJSON or JSON, optionally gzip, within the size limits.

A line that is not JSON becomes a per-record rejection (the rest of the batch is kept); a
body in which nothing is JSON is a 400.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

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
    raw = _decoded(request, _body(request))
    if media_type in JSON_TYPES:
        records, body_host = _json_records(raw)
    else:
        records, body_host = _ndjson_records(raw), ""
    if len(records) > settings.USAGE_MAX_RECORDS:
        raise PayloadTooLarge(
            f"{len(records)} records in one request; the limit is {settings.USAGE_MAX_RECORDS}"
        )
    return IngestBody(records=records, host=machine_name(request, body_host))


def _body(request: Request) -> bytes:
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


def _decoded(request: Request, body: bytes) -> bytes:
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding != "gzip":
        raise UnsupportedMediaType(encoding, detail=f"Unsupported Content-Encoding {encoding!r}")
    limit = settings.USAGE_MAX_BODY_BYTES
    # Bounded output: a small gzip bomb must not expand into the server's memory.
    # A gzip body may hold several members back to back (RFC 1952; `cat a.gz b.gz`): one
    # decompressor stops at the end of the first and leaves the rest in ``unused_data``, so
    # each member gets its own, or every record after the first member would be dropped.
    parts: list[bytes] = []
    size = 0
    remaining = body
    while True:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            data = inflater.decompress(remaining, limit + 1 - size)  # max_length is >= 1
        except zlib.error:
            raise BadBody("Body is not valid gzip") from None
        size += len(data)
        if size > limit or inflater.unconsumed_tail:
            raise PayloadTooLarge(f"Decompressed body over the limit of {limit} bytes")
        if not inflater.eof:
            # zlib raises nothing for a stream cut short (or an empty body): without this
            # check a truncated upload would be taken for a shorter batch.
            raise BadBody("Body is not valid gzip: it ends before the gzip stream does")
        parts.append(data)
        remaining = inflater.unused_data
        if not remaining:
            return b"".join(parts)


def _json_records(raw: bytes) -> tuple[list[object], str]:
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise BadBody(f"Body is not valid JSON: {error}") from None
    if isinstance(document, list):
        return document, ""
    if not isinstance(document, dict) or not isinstance(document.get("records"), list):
        raise BadBody('A JSON body must be {"records": [...]} (or a list of records)')
    host = document.get("host", "")
    if not isinstance(host, str):
        raise BadBody('"host" must be a string')
    return document["records"], host


def _ndjson_records(raw: bytes) -> list[object]:
    records = [wire.read_line(line) for line in raw.splitlines() if line.strip()]
    if records and all(type(record) is MalformedLine for record in records):
        raise BadBody("Body is not NDJSON: no line is valid JSON")
    return records
