"""flow.wire.hpack, differentially against the `hpack` package (the oracle; a dev dependency only).

The decoder reads what grpc's C-core server sends: Huffman strings, the dynamic table across
header blocks, table size updates. A header block it cannot read must raise HpackError (the fast
path then falls back to grpcio), never anything else."""

from __future__ import annotations

import hpack
import pytest
from hpack.table import HeaderTable
from hypothesis import given, settings
from hypothesis import strategies as st

from flow.wire.hpack import (
    STATIC_TABLE,
    Decoder,
    HpackError,
    encode_integer,
    encode_literals,
    huffman_decode,
    huffman_encode,
)

# Names as HTTP/2 sends them (lower case tokens), values any bytes but CR/LF/NUL.
names = st.one_of(
    st.sampled_from([n.decode() for n, _ in STATIC_TABLE] + ["grpc-status", "grpc-message", "content-type"]),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=30),
)
values = st.text(st.characters(blacklist_characters="\r\n\x00", blacklist_categories=("Cs",)), max_size=200)
header_lists = st.lists(st.tuples(names, values), max_size=12)
# What an encoder may do between blocks: change its table size (emitting an update), or not.
table_sizes = st.one_of(st.none(), st.integers(min_value=0, max_value=4096))


def as_bytes(headers: list[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(n.encode(), v.encode()) for n, v in headers]


def test_the_static_table_is_rfc_7541_appendix_a() -> None:
    assert tuple((n, v) for n, v in HeaderTable.STATIC_TABLE) == STATIC_TABLE


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(header_lists, st.booleans(), table_sizes), min_size=1, max_size=8))
def test_decodes_what_the_hpack_encoder_writes_across_blocks(
    blocks: list[tuple[list[tuple[str, str]], bool, int | None]],
) -> None:
    """One connection: the encoder indexes fields (sensitive ones never), uses Huffman or not,
    and changes its table size; our decoder must agree with the oracle decoder on every block
    and end with the same dynamic table size."""
    encoder = hpack.Encoder()
    oracle = hpack.Decoder()
    ours = Decoder()
    for headers, huffman, size in blocks:
        if size is not None:
            encoder.header_table_size = size
        block = encoder.encode(headers, huffman=huffman)
        expected = [(bytes(n), bytes(v)) for n, v in oracle.decode(block, raw=True)]
        assert ours.decode(block) == expected == as_bytes(headers)
        assert ours.table_size == oracle.header_table._current_size


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_huffman_round_trips_and_matches_the_oracle(data: bytes) -> None:
    from hpack.huffman import HuffmanEncoder
    from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH

    encoded = huffman_encode(data)
    assert encoded == HuffmanEncoder(REQUEST_CODES, REQUEST_CODES_LENGTH).encode(data)
    assert huffman_decode(encoded) == data


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=60))
def test_huffman_garbage_decodes_like_the_oracle_or_is_refused(data: bytes) -> None:
    from hpack.exceptions import HPACKDecodingError
    from hpack.huffman_table import decode_huffman

    try:
        expected: bytes | None = decode_huffman(data)
    except HPACKDecodingError:
        expected = None
    try:
        got: bytes | None = huffman_decode(data)
    except HpackError:
        got = None
    assert got == expected


def test_huffman_refuses_bad_padding_and_eos() -> None:
    valid = huffman_encode(b"a")  # 5 bits of 'a', then 3 bits of ones
    assert huffman_decode(valid) == b"a"
    with pytest.raises(HpackError, match="padding"):
        huffman_decode(bytes([valid[0] & 0xFE]))  # a zero in the padding
    with pytest.raises(HpackError, match="padding"):
        huffman_decode(valid + b"\xff")  # 11 bits of padding
    with pytest.raises(HpackError, match="EOS"):
        huffman_decode(b"\xff\xff\xff\xfc")  # the 30-bit EOS code itself


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=120))
def test_garbage_never_escapes_as_anything_but_hpack_error(block: bytes) -> None:
    """Whatever the bytes, the decoder returns headers or raises HpackError; when the oracle
    accepts the block, ours returns the same headers."""
    from hpack.exceptions import HPACKError

    try:
        expected: list[tuple[bytes, bytes]] | None = [
            (bytes(n), bytes(v)) for n, v in hpack.Decoder().decode(block, raw=True)
        ]
    except (HPACKError, ValueError):
        expected = None
    try:
        got: list[tuple[bytes, bytes]] | None = Decoder().decode(block)
    except HpackError:
        got = None
    if expected is not None and got is not None:
        assert got == expected
    # Where they disagree on acceptance, ours must be the stricter (the oracle tolerates a table
    # size update after a field, which RFC 7541 4.2 forbids).
    if got is not None:
        assert expected is not None


@given(st.integers(min_value=0, max_value=2**28), st.integers(min_value=1, max_value=8))
def test_integers_round_trip_through_the_decoder(value: int, prefix: int) -> None:
    from flow.wire.hpack import _integer

    encoded = encode_integer(value, prefix)
    assert _integer(encoded, 0, prefix) == (value, len(encoded))


@given(header_lists)
def test_the_request_encoding_reads_back_and_leaves_the_table_alone(headers: list[tuple[str, str]]) -> None:
    block = encode_literals(as_bytes(headers))
    oracle = hpack.Decoder()
    assert [(bytes(n), bytes(v)) for n, v in oracle.decode(block, raw=True)] == as_bytes(headers)
    assert oracle.header_table._current_size == 0


def test_table_size_update_must_stay_within_what_we_advertised() -> None:
    with pytest.raises(HpackError, match="above the advertised"):
        Decoder(max_table_size=4096).decode(encode_integer(4097, 5, 0x20))
    decoder = Decoder()
    encoder = hpack.Encoder()
    decoder.decode(encoder.encode([("x-a", "1" * 100)]))
    assert decoder.table_size == 3 + 100 + 32
    assert decoder.decode(encode_integer(0, 5, 0x20)) == []  # shrinking to 0 empties the table
    assert decoder.table_size == 0
    with pytest.raises(HpackError, match="beyond the dynamic table"):
        decoder.decode(encode_integer(62, 7, 0x80))
