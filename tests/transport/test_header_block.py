"""flow.transport.header_block against an independent HPACK implementation (the `hpack` package):
whatever hpack's encoder sends (indexed fields, literals with and without indexing, never-indexed
ones, Huffman or not, dynamic table size changes and evictions over many blocks), we decode as
hpack's own decoder does; what we encode, hpack decodes; malformed blocks are refused, not crashed on."""

from __future__ import annotations

import hpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flow.transport.header_block import STATIC_TABLE, HeaderBlockDecoder, HeaderBlockError, encode_headers

names = st.one_of(
    st.sampled_from([b"grpc-status", b"grpc-message", b"content-type", b":status", b"grpc-status-details-bin"]),
    st.binary(min_size=1, max_size=30).map(lambda b: b.lower()),
)
values = st.one_of(st.sampled_from([b"0", b"200", b"application/grpc"]), st.binary(max_size=300))
fields = st.lists(st.tuples(names, values), max_size=12)


def test_the_static_table_is_rfc_7541s() -> None:
    assert [(bytes(n), bytes(v)) for n, v in hpack.table.HeaderTable.STATIC_TABLE] == list(STATIC_TABLE)


@settings(max_examples=200, deadline=None)
@given(
    blocks=st.lists(st.tuples(fields, st.booleans(), st.booleans()), min_size=1, max_size=8),
    table_sizes=st.lists(st.integers(min_value=0, max_value=4096), max_size=8),
)
def test_decodes_what_hpack_encodes_block_after_block(
    blocks: list[tuple[list[tuple[bytes, bytes]], bool, bool]], table_sizes: list[int]
) -> None:
    """One connection's blocks in order: the dynamic table carries from block to block, shrinks
    and grows (size updates), and evicts."""
    encoder = hpack.Encoder()
    theirs = hpack.Decoder()
    ours = HeaderBlockDecoder()
    for i, (block_fields, huffman, sensitive) in enumerate(blocks):
        if i < len(table_sizes):
            encoder.header_table_size = table_sizes[i]
        headers = [hpack.NeverIndexedHeaderTuple(n, v) if sensitive else (n, v) for n, v in block_fields]
        block = encoder.encode(headers, huffman=huffman)
        expected = [(bytes(n), bytes(v)) for n, v in theirs.decode(block, raw=True)]
        assert ours.decode(block) == expected == [(n, v) for n, v in block_fields]


@given(fields)
def test_hpack_decodes_what_we_encode(block_fields: list[tuple[bytes, bytes]]) -> None:
    assert [(bytes(n), bytes(v)) for n, v in hpack.Decoder().decode(encode_headers(block_fields), raw=True)] == (
        block_fields
    )


def test_long_integers_round_trip() -> None:
    value = b"x" * 100_000  # a length far beyond the 7-bit prefix
    assert HeaderBlockDecoder().decode(encode_headers([(b"n", value)])) == [(b"n", value)]


@pytest.mark.parametrize(
    "block",
    [
        b"\x80",  # index 0
        b"\xff\xff\xff\xff\xff\xff\x7f",  # an integer beyond any table
        b"\xbf\x20",  # index 62+32: the dynamic table is empty
        b"\x00\x05ab",  # a name cut short
        b"\x00\x7f",  # a length cut short
        b"\x3f\xe2\x1f",  # a table size above 4096
        b"\x82\x20",  # a size update after a field
        b"\x00\x81\xff\x01a",  # a Huffman string that is not
    ],
)
def test_malformed_blocks_are_refused(block: bytes) -> None:
    with pytest.raises(HeaderBlockError):
        HeaderBlockDecoder().decode(block)


def test_a_header_list_bomb_stops() -> None:
    """One 4 KB entry referenced 300 times: 1.2 MB from a 4 KB block."""
    big = b"\x40" + encode_headers([(b"n", b"v" * 4000)])[1:]  # literal with incremental indexing
    with pytest.raises(HeaderBlockError, match="too large"):
        HeaderBlockDecoder().decode(big + b"\xbe" * 300)
