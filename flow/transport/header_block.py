"""HPACK header blocks (RFC 7541) for the HTTP/2 channel: what a gRPC call's headers need.

Written here, not taken whole from the `hpack` package, because importing that package costs a
`flow` command more than all the rest of HPACK is worth (it imports `logging`). Requests are
encoded as literals without indexing and without Huffman coding (a few short headers, one
request per connection: nothing to gain from either). Replies are decoded in full: indexed
fields against the static table and a dynamic table with its size updates and evictions,
literals with or without indexing. A Huffman-coded string, which grpc's C-core does not send
for the headers flowd answers with, is decoded by the `hpack` package, imported only then.
"""

from __future__ import annotations

from collections import deque
from typing import Final

Field = tuple[bytes, bytes]

# RFC 7541 Appendix A: index 1 is the first entry.
STATIC_TABLE: Final[tuple[Field, ...]] = tuple(
    (name.encode(), value.encode())
    for name, value in (
        (":authority", ""),
        (":method", "GET"),
        (":method", "POST"),
        (":path", "/"),
        (":path", "/index.html"),
        (":scheme", "http"),
        (":scheme", "https"),
        (":status", "200"),
        (":status", "204"),
        (":status", "206"),
        (":status", "304"),
        (":status", "400"),
        (":status", "404"),
        (":status", "500"),
        ("accept-charset", ""),
        ("accept-encoding", "gzip, deflate"),
        ("accept-language", ""),
        ("accept-ranges", ""),
        ("accept", ""),
        ("access-control-allow-origin", ""),
        ("age", ""),
        ("allow", ""),
        ("authorization", ""),
        ("cache-control", ""),
        ("content-disposition", ""),
        ("content-encoding", ""),
        ("content-language", ""),
        ("content-length", ""),
        ("content-location", ""),
        ("content-range", ""),
        ("content-type", ""),
        ("cookie", ""),
        ("date", ""),
        ("etag", ""),
        ("expect", ""),
        ("expires", ""),
        ("from", ""),
        ("host", ""),
        ("if-match", ""),
        ("if-modified-since", ""),
        ("if-none-match", ""),
        ("if-range", ""),
        ("if-unmodified-since", ""),
        ("last-modified", ""),
        ("link", ""),
        ("location", ""),
        ("max-forwards", ""),
        ("proxy-authenticate", ""),
        ("proxy-authorization", ""),
        ("range", ""),
        ("referer", ""),
        ("refresh", ""),
        ("retry-after", ""),
        ("server", ""),
        ("set-cookie", ""),
        ("strict-transport-security", ""),
        ("transfer-encoding", ""),
        ("user-agent", ""),
        ("vary", ""),
        ("via", ""),
        ("www-authenticate", ""),
    )
)
DEFAULT_TABLE_SIZE: Final = 4096  # SETTINGS_HEADER_TABLE_SIZE, which we never change
ENTRY_OVERHEAD: Final = 32  # RFC 7541 4.1: an entry's size is name + value + 32
MAX_DECODED: Final = 1 << 20  # the most a header list may decode to (an HPACK bomb stops here)
MAX_INTEGER: Final = 1 << 28


class HeaderBlockError(Exception):
    """The block is not valid HPACK, or larger than we accept."""


def _integer(value: int, prefix_bits: int, first: int) -> bytes:
    """`value` in an N-bit prefix integer (RFC 7541 5.1), `first` holding the byte's other bits."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = bytearray([first | limit])
    value -= limit
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _string(raw: bytes) -> bytes:
    return _integer(len(raw), 7, 0x00) + raw  # H = 0: not Huffman coded


def encode_headers(fields: list[Field]) -> bytes:
    """Each field as a literal without indexing, with a literal name (RFC 7541 6.2.2)."""
    return b"".join(b"\x00" + _string(name) + _string(value) for name, value in fields)


class HeaderBlockDecoder:
    """Decodes the header blocks of one connection, in order (they share the dynamic table)."""

    def __init__(self) -> None:
        self._dynamic: deque[Field] = deque()  # the newest first: index 62 is _dynamic[0]
        self._size = 0
        self._max_size = DEFAULT_TABLE_SIZE

    def decode(self, block: bytes) -> list[Field]:
        fields: list[Field] = []
        decoded = 0
        at = 0
        while at < len(block):
            byte = block[at]
            if byte & 0x80:  # indexed field
                index, at = self._read_integer(block, at, 7)
                field = self._entry(index)
            elif byte & 0xC0 == 0x40:  # literal with incremental indexing
                field, at = self._literal(block, at, 6)
                self._add(field)
            elif byte & 0xE0 == 0x20:  # dynamic table size update
                if fields:
                    raise HeaderBlockError("table size update after a field")
                size, at = self._read_integer(block, at, 5)
                if size > DEFAULT_TABLE_SIZE:
                    raise HeaderBlockError(f"table size {size} above the {DEFAULT_TABLE_SIZE} we allow")
                self._max_size = size
                self._evict()
                continue
            else:  # literal without indexing (0000) or never indexed (0001)
                field, at = self._literal(block, at, 4)
            decoded += len(field[0]) + len(field[1]) + ENTRY_OVERHEAD
            if decoded > MAX_DECODED:
                raise HeaderBlockError("header list too large")
            fields.append(field)
        return fields

    def _read_integer(self, block: bytes, at: int, prefix_bits: int) -> tuple[int, int]:
        limit = (1 << prefix_bits) - 1
        value = block[at] & limit
        at += 1
        if value < limit:
            return value, at
        shift = 0
        while True:
            if at >= len(block):
                raise HeaderBlockError("integer cut short")
            byte = block[at]
            at += 1
            value += (byte & 0x7F) << shift
            shift += 7
            if value >= MAX_INTEGER:
                raise HeaderBlockError("integer too large")
            if not byte & 0x80:
                return value, at

    def _read_string(self, block: bytes, at: int) -> tuple[bytes, int]:
        if at >= len(block):
            raise HeaderBlockError("string cut short")
        huffman = bool(block[at] & 0x80)
        length, at = self._read_integer(block, at, 7)
        if at + length > len(block):
            raise HeaderBlockError("string cut short")
        raw = block[at : at + length]
        return (_huffman_decoded(raw) if huffman else raw), at + length

    def _literal(self, block: bytes, at: int, prefix_bits: int) -> tuple[Field, int]:
        index, at = self._read_integer(block, at, prefix_bits)
        if index:
            name = self._entry(index)[0]
        else:
            name, at = self._read_string(block, at)
        value, at = self._read_string(block, at)
        return (name, value), at

    def _entry(self, index: int) -> Field:
        if 1 <= index <= len(STATIC_TABLE):
            return STATIC_TABLE[index - 1]
        dynamic = index - len(STATIC_TABLE) - 1
        if 0 <= dynamic < len(self._dynamic):
            return self._dynamic[dynamic]
        raise HeaderBlockError(f"no table entry {index}")

    def _add(self, field: Field) -> None:
        size = len(field[0]) + len(field[1]) + ENTRY_OVERHEAD
        if size > self._max_size:  # RFC 7541 4.4: an entry larger than the table empties it
            self._dynamic.clear()
            self._size = 0
            return
        self._dynamic.appendleft(field)
        self._size += size
        self._evict()

    def _evict(self) -> None:
        while self._size > self._max_size:
            name, value = self._dynamic.pop()
            self._size -= len(name) + len(value) + ENTRY_OVERHEAD


def _huffman_decoded(raw: bytes) -> bytes:
    try:
        from hpack.exceptions import HPACKError
        from hpack.huffman_table import decode_huffman
    except ImportError as exc:  # pragma: no cover - hpack is a dependency
        raise HeaderBlockError(f"a Huffman-coded string, and no decoder: {exc}") from None
    try:
        return bytes(decode_huffman(raw))
    except HPACKError as exc:
        raise HeaderBlockError(f"bad Huffman coding: {exc}") from None


__all__ = ["HeaderBlockDecoder", "HeaderBlockError", "encode_headers"]
