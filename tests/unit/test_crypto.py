"""Unit tests of keys, the key ring and the sealed-token envelope, and of session ids."""

from __future__ import annotations

import base64
import math
import os
import re
import string
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiohttp_sessionkit import ConfigurationError, JSONSerializer, Session, generate_key
from aiohttp_sessionkit.crypto import KeyRing, b64url_decode_canonical, b64url_encode, parse_key
from aiohttp_sessionkit.ids import is_valid_session_id, key_for_token, new_session_id, record_key
from aiohttp_sessionkit.session import encode_payload
from aiohttp_sessionkit.stores.cookie import EncryptedCookieStore

KEYGEN_HINT = "python -m aiohttp_sessionkit keygen"
URLSAFE_NO_PAD = re.compile(r"[A-Za-z0-9_-]*")
URLSAFE_ALPHABET = string.ascii_letters + string.digits + "-_"
CONTEXT = b"AIOHTTP_SESSION"
PROPERTY = settings(max_examples=200, deadline=None)


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def unb64url(token: str) -> bytes:
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))


# Fixed keys so the properties below do not pay for key parsing per example.
KEY_A = os.urandom(32)
KEY_B = os.urandom(32)
RING_A = KeyRing([KEY_A])


# -- keys --------------------------------------------------------------------------------------


def test_generated_key_is_32_bytes_of_url_safe_base64() -> None:
    key = generate_key()
    assert isinstance(key, str)
    assert re.fullmatch(r"[A-Za-z0-9_-]+=*", key)
    assert len(base64.urlsafe_b64decode(key)) == 32
    assert parse_key(key) == base64.urlsafe_b64decode(key)


def test_generated_keys_differ() -> None:
    keys = {generate_key() for _ in range(20)}
    assert len(keys) == 20


def test_parse_key_accepts_32_raw_bytes() -> None:
    raw = os.urandom(32)
    assert parse_key(raw) == raw


def test_parse_key_accepts_bytearray() -> None:
    raw = os.urandom(32)
    assert parse_key(bytearray(raw)) == raw


# Bytes that encode to '+' and '/' in standard base64 ('-' and '_' in the URL-safe alphabet).
_AWKWARD = bytes([0xFB, 0xEF, 0xBE, 0xFF, 0xFF, 0xFF]) + bytes(range(1, 27))


@pytest.mark.parametrize(
    "encode",
    [
        pytest.param(lambda raw: base64.urlsafe_b64encode(raw).decode(), id="urlsafe-padded"),
        pytest.param(lambda raw: b64url(raw), id="urlsafe-unpadded"),
        pytest.param(lambda raw: base64.b64encode(raw).decode(), id="standard-padded"),
        pytest.param(
            lambda raw: base64.b64encode(raw).decode().rstrip("="), id="standard-unpadded"
        ),
        pytest.param(lambda raw: base64.urlsafe_b64encode(raw), id="fernet-style-bytes"),
        pytest.param(lambda raw: base64.b64encode(raw), id="standard-bytes"),
        pytest.param(
            lambda raw: f"  {base64.urlsafe_b64encode(raw).decode()}\n", id="with-whitespace"
        ),
    ],
)
def test_parse_key_accepts_base64_text(encode: Callable[[bytes], str | bytes]) -> None:
    standard = base64.b64encode(_AWKWARD).decode()
    assert "+" in standard and "/" in standard  # the sample exercises both alphabets
    assert parse_key(encode(_AWKWARD)) == _AWKWARD
    random_raw = os.urandom(32)
    assert parse_key(encode(random_raw)) == random_raw


def test_fernet_generate_key_output_is_accepted() -> None:
    fernet_key = base64.urlsafe_b64encode(os.urandom(32))  # what Fernet.generate_key() returns
    assert len(fernet_key) == 44
    assert parse_key(fernet_key) == base64.urlsafe_b64decode(fernet_key)


@pytest.mark.parametrize(
    "key",
    [
        pytest.param(os.urandom(31), id="31-bytes"),
        pytest.param(os.urandom(33), id="33-bytes"),
        pytest.param(b"", id="empty-bytes"),
        pytest.param("", id="empty-str"),
        pytest.param("abc", id="short-str"),
        pytest.param(b64url(os.urandom(31)), id="base64-of-31-bytes"),
        pytest.param(b64url(os.urandom(33)), id="base64-of-33-bytes"),
        pytest.param("secret", id="password"),
        pytest.param("ünïcödé" * 7, id="non-ascii"),
        pytest.param(12345, id="int"),
        pytest.param(None, id="none"),
        pytest.param(["a" * 43], id="list-in-parse-key"),
        pytest.param(b"0" * 32, id="placeholder-raw"),
        pytest.param(bytes(32), id="zero-bytes"),
        pytest.param("a" * 43, id="placeholder-base64"),
        pytest.param("A" * 43, id="all-zero-base64"),
        pytest.param(b64url(b"ab" * 16), id="two-symbol-key"),
        pytest.param(b"correct horse battery staple 123", id="passphrase-raw"),
        pytest.param(bytearray(b"correct horse battery staple 123"), id="passphrase-bytearray"),
        pytest.param(string.printable[:32].encode(), id="printable-ascii-raw"),
        pytest.param(b"Tr0ub4dor&3-Tr0ub4dor&3-Tr0ub4d!", id="password-raw"),
    ],
)
def test_parse_key_rejects_bad_keys_with_a_hint_to_keygen(key: object) -> None:
    with pytest.raises(ConfigurationError) as info:
        parse_key(key)  # type: ignore[arg-type]
    assert KEYGEN_HINT in str(info.value)


def test_bad_key_is_also_a_value_error() -> None:
    with pytest.raises(ValueError, match="keygen"):
        KeyRing("too short")


# -- the key ring ------------------------------------------------------------------------------


def test_seal_then_open_round_trips() -> None:
    token = RING_A.seal(b"payload", CONTEXT)
    assert RING_A.open(token, CONTEXT) == (b"payload", False)


def test_sealing_twice_gives_different_tokens() -> None:
    # A fresh nonce per seal: equal sessions do not produce linkable cookies.
    assert RING_A.seal(b"same", CONTEXT) != RING_A.seal(b"same", CONTEXT)


def test_token_is_url_safe_without_padding() -> None:
    for size in range(0, 8):  # every length mod 3 of the raw token
        token = RING_A.seal(b"x" * size, CONTEXT)
        assert URLSAFE_NO_PAD.fullmatch(token)
        assert "=" not in token


def test_token_hides_the_plaintext() -> None:
    secret = b"user=alice;role=admin"
    raw = unb64url(RING_A.seal(secret, CONTEXT))
    assert secret not in raw
    assert b"alice" not in raw


def test_token_is_bound_to_its_context() -> None:
    token = RING_A.seal(b"payload", b"SESSION_A")
    assert RING_A.open(token, b"SESSION_B") is None
    assert RING_A.open(token, b"SESSION_A") == (b"payload", False)
    assert RING_A.open(token, b"") is None


def test_token_opens_only_under_the_same_key() -> None:
    token = RING_A.seal(b"payload", CONTEXT)
    assert KeyRing([KEY_B]).open(token, CONTEXT) is None


def test_every_single_bit_flip_makes_the_token_unopenable() -> None:
    raw = unb64url(RING_A.seal(b"hi", CONTEXT))
    for bit in range(len(raw) * 8):
        flipped = bytearray(raw)
        flipped[bit // 8] ^= 1 << (bit % 8)
        assert RING_A.open(b64url(bytes(flipped)), CONTEXT) is None, f"bit {bit} went unnoticed"


def test_every_truncation_makes_the_token_unopenable() -> None:
    token = RING_A.seal(b"hi", CONTEXT)
    raw = unb64url(token)
    for length in range(len(raw)):
        assert RING_A.open(b64url(raw[:length]), CONTEXT) is None, f"raw[:{length}] opened"
    for length in range(len(token)):
        assert RING_A.open(token[:length], CONTEXT) is None, f"token[:{length}] opened"


def test_appended_bytes_make_the_token_unopenable() -> None:
    raw = unb64url(RING_A.seal(b"hi", CONTEXT))
    assert RING_A.open(b64url(raw + b"\x00"), CONTEXT) is None


def test_token_from_a_retired_key_opens_and_is_reported_as_such() -> None:
    token = RING_A.seal(b"payload", CONTEXT)
    assert KeyRing([KEY_B, KEY_A]).open(token, CONTEXT) == (b"payload", True)
    assert KeyRing([KEY_A, KEY_B]).open(token, CONTEXT) == (b"payload", False)
    assert KeyRing([KEY_B]).open(token, CONTEXT) is None


def test_ring_seals_with_its_first_key() -> None:
    token = KeyRing([KEY_B, KEY_A]).seal(b"payload", CONTEXT)
    assert KeyRing([KEY_B]).open(token, CONTEXT) == (b"payload", False)
    assert RING_A.open(token, CONTEXT) is None


def test_keys_in_any_encoding_name_the_same_key() -> None:
    token = KeyRing([b64url(KEY_A)]).seal(b"payload", CONTEXT)
    assert KeyRing(bytearray(KEY_A)).open(token, CONTEXT) == (b"payload", False)


def test_duplicate_keys_are_rejected_even_in_different_encodings() -> None:
    with pytest.raises(ConfigurationError, match="twice"):
        KeyRing([KEY_A, KEY_A])
    with pytest.raises(ConfigurationError, match="twice"):
        KeyRing([KEY_A, KEY_B, base64.b64encode(KEY_A).decode()])


def test_empty_key_list_is_rejected() -> None:
    with pytest.raises(ConfigurationError) as info:
        KeyRing([])
    assert KEYGEN_HINT in str(info.value)


def test_one_bad_key_in_the_list_is_rejected() -> None:
    with pytest.raises(ConfigurationError, match="keygen"):
        KeyRing([KEY_A, b"0" * 32])


# -- size ----------------------------------------------------------------------------------------


async def test_a_100_byte_session_seals_into_at_most_200_characters() -> None:
    serializer = JSONSerializer()
    data = {"user_id": 12345, "name": "Alice Example", "roles": ["admin", "editor"], "csrf": ""}
    data["csrf"] = "x" * (100 - len(serializer.dumps(data)))
    assert len(serializer.dumps(data)) == 100

    payload = encode_payload(Session(data=data), serializer, 1_800_000_000)
    store = EncryptedCookieStore(KEY_A)  # the cookie store's path, not just the ring
    sealed = await store.save(None, payload, ttl=60, namespace="AIOHTTP_SESSION")
    assert sealed is not None
    # header 13 + body ([data]: 102) + version/key id 4 + nonce 12 + tag 16, in base64.
    expected = math.ceil((13 + 102 + 4 + 12 + 16) * 4 / 3)
    assert len(payload) == 13 + 102
    assert len(sealed) == expected
    assert len(sealed) <= 200
    assert len(RING_A.seal(payload, CONTEXT)) == expected


# -- properties ----------------------------------------------------------------------------------


@PROPERTY
@given(plaintext=st.binary(max_size=2048), context=st.binary(max_size=64))
def test_open_inverts_seal(plaintext: bytes, context: bytes) -> None:
    assert RING_A.open(RING_A.seal(plaintext, context), context) == (plaintext, False)


@PROPERTY
@given(
    token=st.one_of(
        st.text(max_size=200),
        st.text(alphabet=URLSAFE_ALPHABET + "=+/ ", max_size=200),
        st.binary(min_size=0, max_size=120).map(lambda raw: b64url(b"\x01" + raw)),
    )
)
def test_open_never_raises_on_arbitrary_text(token: str) -> None:
    assert RING_A.open(token, CONTEXT) is None


@PROPERTY
@given(
    value=st.one_of(
        st.text(max_size=60),
        st.text(alphabet=URLSAFE_ALPHABET, min_size=42, max_size=44),
        st.text(alphabet=URLSAFE_ALPHABET + "=+/.\n\x00é", min_size=43, max_size=43),
    )
)
def test_session_id_shape_check_accepts_exactly_43_url_safe_characters(value: str) -> None:
    expected = (
        len(value) == 43
        and all(c in URLSAFE_ALPHABET for c in value)
        and b64url(unb64url(value)) == value  # the canonical spelling only
    )
    assert is_valid_session_id(value) is expected


def test_session_id_shape_check_rejects_a_trailing_newline() -> None:
    # '$' in a regex would match before a final newline; the check must not.
    assert not is_valid_session_id("A" * 42 + "\n")
    assert not is_valid_session_id("A" * 43 + "\n")


def test_new_session_ids_are_valid_and_unique() -> None:
    ids = {new_session_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(is_valid_session_id(i) for i in ids)
    assert all(len(unb64url(i)) == 32 for i in ids)


def test_record_key_hides_the_id_and_depends_on_the_namespace() -> None:
    sid = new_session_id()
    key = record_key("A", sid)
    assert re.fullmatch(r"[0-9a-f]{64}", key)
    assert sid not in key
    assert key == record_key("A", sid)
    assert key != record_key("B", sid)
    # The separator keeps ("ab", "c...") and ("a", "bc...") apart.
    rest = sid[2:]
    assert record_key("ab", "c" + rest) != record_key("a", "bc" + rest)


def test_key_text_with_characters_outside_base64_is_rejected() -> None:
    good = generate_key()
    with pytest.raises(ConfigurationError, match="keygen"):
        parse_key(good[:20] + "!*" + good[22:])


def test_json_serializer_refuses_nan_on_load_as_on_dump() -> None:
    serializer = JSONSerializer()
    for constant in (b"NaN", b"[Infinity]", b'{"a": -Infinity}'):
        with pytest.raises(ValueError):
            serializer.loads(constant)
    with pytest.raises(ValueError):
        serializer.dumps(float("nan"))


def test_key_for_token_is_record_key_however_calls_repeat_and_interleave() -> None:
    # key_for_token remembers recent answers (a write asks twice for one token): repeated,
    # interleaved and cross-namespace calls must still each get their own record key.
    first, second = new_session_id(), new_session_id()
    names = ["A", "B", "".join(["A"])]  # the last: equal to "A", another object
    for name in names:
        for token in (first, second, first, first, second, "".join([second])):
            assert key_for_token(name, token) == record_key(name, token)
    assert key_for_token("A", first) != key_for_token("B", first)
    assert key_for_token("A", first) is not None
    assert key_for_token("A", first[:-1] + "!") is None


def test_key_for_token_memo_stays_bounded_and_correct() -> None:
    import aiohttp_sessionkit.ids as ids

    tokens = [new_session_id() for _ in range(ids._KEYS.limit + 10)]
    for token in tokens:
        assert key_for_token("A", token) == record_key("A", token)
        assert len(ids._KEYS) <= ids._KEYS.limit
    for token in tokens[:5] + tokens[-5:]:  # after a clear and still remembered ones
        assert key_for_token("A", token) == record_key("A", token)
    assert key_for_token("A", "x" * 42) is None
    assert ("A", "x" * 42) not in ids._KEYS  # malformed ids are never remembered


@pytest.mark.parametrize(
    "key",
    [b"correct horse battery staple 123", b"0123456789abcdefghijklmnopqrstuv"],
    ids=["passphrase", "alphanumeric"],
)
def test_a_raw_key_of_printable_text_is_refused_asking_for_base64_or_generate_key(
    key: bytes,
) -> None:
    with pytest.raises(ConfigurationError) as info:
        KeyRing(key)
    message = str(info.value)
    assert "printable" in message and "base64" in message and "generate_key()" in message
    assert key.decode() not in message  # never echo the secret


def test_a_raw_key_with_one_byte_outside_printable_ascii_is_accepted() -> None:
    key = b"correct horse battery staple 12\xff"
    assert parse_key(key) == key


# -- one spelling per token (RFC 4648 section 3.5) ----------------------------------------------


def other_spellings(token: str) -> list[str]:
    """Every other last character that a lenient decoder reads as the same bytes."""
    same = unb64url(token)
    return [
        token[:-1] + char
        for char in URLSAFE_ALPHABET
        if char != token[-1] and unb64url(token[:-1] + char) == same
    ]


@pytest.mark.parametrize(("length", "others"), [(46, 15), (47, 3)])
def test_other_spellings_of_a_sealed_cookie_do_not_open(length: int, others: int) -> None:
    # 32 bytes of envelope (version, key id, nonce, tag) + the plaintext; 46 characters
    # carry 34 bytes and 4 unused bits, 47 carry 35 bytes and 2.
    plaintext = b"x" * (length * 6 // 8 - 32)
    token = RING_A.seal(plaintext, CONTEXT)
    assert len(token) == length
    assert RING_A.open(token, CONTEXT) == (plaintext, False)
    spellings = other_spellings(token)
    assert len(spellings) == others
    store = EncryptedCookieStore(KEY_A)
    for spelling in spellings:
        assert RING_A.open(spelling, CONTEXT) is None
        assert store.load_nowait(spelling, CONTEXT.decode()) is None


def test_other_spellings_of_a_session_id_are_not_ids() -> None:
    session_id = new_session_id()
    spellings = other_spellings(session_id)
    assert len(spellings) == 3
    for spelling in spellings:
        assert not is_valid_session_id(spelling)
        assert key_for_token("NS", spelling) is None
    assert key_for_token("NS", session_id) == record_key("NS", session_id)


@pytest.mark.parametrize("length", range(13))
def test_canonical_decode_is_decode_re_encode_compare(length: int) -> None:
    """The last-character table agrees with the definition, for every last character."""
    base = b64url(os.urandom(9))[: max(length - 1, 0)]
    for char in URLSAFE_ALPHABET + "=+/.":
        text = (base + char)[:length]
        try:
            lenient: bytes | None = unb64url(text)
        except ValueError:
            lenient = None
        expected = lenient if lenient is not None and b64url_encode(lenient) == text else None
        assert b64url_decode_canonical(text) == expected, text
