"""Unit tests of Session (mapping semantics, change tracking) and the payload format."""

from __future__ import annotations

import enum
import json
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import aiohttp_sessionkit.session as session_module
from aiohttp_sessionkit import JSONSerializer, SerializationError, Session
from aiohttp_sessionkit.serializers import NonStringKeyError, check_keys
from aiohttp_sessionkit.session import decode_payload, encode_payload

NOW = 1_800_000_000
IDLE = 3600
ABSOLUTE = 86_400
SID = "A" * 21 + "secretpart" + "Z" * 12  # 43 characters, the shape of a real id


@pytest.fixture(autouse=True)
def fixed_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(session_module, "now", lambda: NOW)


@pytest.fixture
def serializer() -> JSONSerializer:
    return JSONSerializer()


def loaded(**data: Any) -> Session:
    """A session as the middleware hands it out after a load: clean, not new."""
    return Session(SID, data=dict(data), new=False, created=NOW - 100, accessed=NOW - 10)


def dirty(session: Session) -> bool:
    # A function, not the property: mypy would narrow the property across mutations.
    return session.is_dirty


def is_empty(session: Session) -> bool:
    return session.empty


def raw_payload(
    body: bytes,
    *,
    created: int = NOW - 100,
    accessed: int = NOW - 10,
    max_age: int = -1,
    version: int = 1,
) -> bytes:
    """A payload built from the documented layout: version, created, accessed, max_age, body."""
    return struct.pack(">BIIi", version, created, accessed, max_age) + body


def decode(payload: bytes, **overrides: Any) -> Session | None:
    options: dict[str, Any] = {
        "identity": SID,
        "idle_timeout": IDLE,
        "absolute_timeout": ABSOLUTE,
    }
    options.update(overrides)
    return decode_payload(payload, JSONSerializer(), **options)


# -- mapping semantics and change tracking ---------------------------------------------------


def test_fresh_session_is_new_clean_and_empty() -> None:
    session = Session()
    assert session.new
    assert session.identity is None
    assert not dirty(session)
    assert is_empty(session)
    assert len(session) == 0


def test_reads_do_not_mark_dirty() -> None:
    session = loaded(a=1, b=2)
    assert session["a"] == 1
    assert session.get("b") == 2
    assert session.get("missing", "fallback") == "fallback"
    assert "a" in session
    assert "missing" not in session
    assert sorted(session) == ["a", "b"]
    assert len(session) == 2
    assert dict(session.items()) == {"a": 1, "b": 2}
    assert not dirty(session)


def test_missing_key_raises_key_error_without_marking_dirty() -> None:
    session = loaded()
    with pytest.raises(KeyError):
        session["missing"]
    with pytest.raises(KeyError):
        del session["missing"]
    with pytest.raises(KeyError):
        session.pop("missing")
    assert not dirty(session)


def test_setting_a_key_marks_dirty() -> None:
    session = loaded()
    session["user"] = "alice"
    assert dirty(session)
    assert session["user"] == "alice"


def test_deleting_a_key_marks_dirty() -> None:
    session = loaded(user="alice")
    del session["user"]
    assert dirty(session)
    assert "user" not in session


def test_pop_of_existing_key_returns_it_and_marks_dirty() -> None:
    session = loaded(user="alice")
    assert session.pop("user") == "alice"
    assert dirty(session)
    assert "user" not in session


def test_pop_of_missing_key_with_default_is_not_a_change() -> None:
    session = loaded(user="alice")
    assert session.pop("missing", "default") == "default"
    assert not dirty(session)


def test_setdefault_marks_dirty_only_when_it_inserts() -> None:
    session = loaded(user="alice")
    assert session.setdefault("user", "bob") == "alice"
    assert not dirty(session)
    assert session.setdefault("theme", "dark") == "dark"
    assert dirty(session)
    assert session["theme"] == "dark"


def test_update_marks_dirty_only_when_it_writes() -> None:
    session = loaded()
    session.update({})
    assert not dirty(session)
    session.update({"a": 1}, b=2)
    assert dirty(session)
    assert dict(session) == {"a": 1, "b": 2}


def test_clear_marks_dirty_only_when_there_was_data() -> None:
    empty = loaded()
    empty.clear()
    assert not dirty(empty)

    session = loaded(a=1)
    session.clear()
    assert dirty(session)
    assert len(session) == 0


def test_non_str_key_is_rejected_and_nothing_changes() -> None:
    session = loaded()
    with pytest.raises(TypeError, match="str"):
        session[1] = "x"  # type: ignore[index]
    with pytest.raises(TypeError):
        session.update({(1, 2): "x"})  # type: ignore[dict-item]
    assert len(session) == 0
    assert not dirty(session)


def test_nested_mutation_is_not_dirty_until_changed() -> None:
    session = loaded(cart=["apple"])
    session["cart"].append("pear")
    assert not dirty(session)
    session.changed()
    assert dirty(session)
    assert session["cart"] == ["apple", "pear"]


def test_writes_do_not_change_created() -> None:
    session = loaded()
    created = session.created
    session["a"] = 1
    del session["a"]
    session.flash("hi")
    session.regenerate()
    assert session.created == created == NOW - 100


# -- max_age ----------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, -1, True, False, 1.5, 60.0, "60"])
def test_max_age_setter_rejects_non_positive_int(value: Any) -> None:
    session = loaded()
    with pytest.raises(ValueError, match="max_age"):
        session.max_age = value
    assert session.max_age is None
    assert not dirty(session)


def test_max_age_setter_marks_dirty_only_on_change() -> None:
    session = loaded()
    session.max_age = None
    assert not dirty(session)
    session.max_age = 600
    assert dirty(session)
    assert session.max_age == 600

    again = Session(SID, new=False, max_age=600)
    again.max_age = 600
    assert not dirty(again)
    again.max_age = None
    assert dirty(again)
    assert again.max_age is None


# -- invalidate, regenerate, flashes ------------------------------------------------------------


def test_invalidate_empties_everything_and_detaches_the_identity() -> None:
    session = Session(SID, data={"user": "alice"}, new=False, created=NOW - 500, max_age=900)
    session.flash("welcome")
    session.invalidate()
    assert len(session) == 0
    assert session.pop_flashes() == []
    assert is_empty(session)
    assert session.new
    assert session.identity is None
    assert session.max_age is None
    assert session.created == NOW
    assert dirty(session)
    assert session._discard_old


def test_regenerate_keeps_data_and_flashes_but_drops_the_identity() -> None:
    session = loaded(user="alice")
    session.flash("hello")
    session.regenerate()
    assert dict(session) == {"user": "alice"}
    assert session.identity is None
    assert dirty(session)
    assert session._discard_old
    assert session.pop_flashes() == ["hello"]


def test_flashes_pop_in_order_and_only_once() -> None:
    session = loaded()
    session.flash("one")
    session.flash({"level": "warning", "text": "two"})
    assert dirty(session)
    assert session.pop_flashes() == ["one", {"level": "warning", "text": "two"}]
    assert session.pop_flashes() == []


def test_popping_no_flashes_is_not_a_change() -> None:
    session = loaded(a=1)
    assert session.pop_flashes() == []
    assert not dirty(session)


def test_popping_flashes_is_a_change() -> None:
    session = Session(SID, new=False, flashes=["saved"])
    assert session.pop_flashes() == ["saved"]
    assert dirty(session)


def test_empty_considers_flashes() -> None:
    session = loaded()
    assert is_empty(session)
    session.flash("only a flash")
    assert not is_empty(session)
    assert len(session) == 0
    session.pop_flashes()
    assert is_empty(session)


def test_repr_shows_neither_the_full_identity_nor_values() -> None:
    session = loaded(token="hunter2-value")
    text = repr(session)
    assert SID not in text
    assert "secretpart" not in text
    assert "hunter2-value" not in text
    assert "token" in text  # keys help debugging; values stay out of logs


# -- payload round trip -----------------------------------------------------------------------


def test_payload_round_trip_keeps_everything(serializer: JSONSerializer) -> None:
    session = Session(
        None,
        data={"user": "alice", "n": 3, "nested": {"roles": ["admin"], "ok": True, "x": None}},
        created=NOW - 1000,
        max_age=7200,
    )
    session.flash("welcome")
    session.flash({"kind": "info"})
    payload = encode_payload(session, serializer, NOW - 5)

    back = decode_payload(
        payload, serializer, identity=SID, idle_timeout=IDLE, absolute_timeout=ABSOLUTE
    )
    assert back is not None
    assert not dirty(back)
    assert not back.new
    assert back.identity == SID
    assert dict(back) == dict(session)
    assert back.created == NOW - 1000
    assert back.last_access == NOW - 5
    assert back.max_age == 7200
    assert back.pop_flashes() == ["welcome", {"kind": "info"}]


def test_payload_round_trip_without_flashes_or_max_age(serializer: JSONSerializer) -> None:
    session = Session(data={"a": "é ☃"}, created=NOW - 50)
    back = decode(encode_payload(session, serializer, NOW))
    assert back is not None
    assert dict(back) == {"a": "é ☃"}
    assert back.pop_flashes() == []
    assert back.max_age is None
    assert back.last_access == NOW


def test_payload_layout_matches_the_documented_header(serializer: JSONSerializer) -> None:
    # The helper below builds malformed payloads by hand; this pins that it speaks the format.
    session = Session(data={"k": 1}, created=NOW - 100, max_age=50)
    payload = encode_payload(session, serializer, NOW - 10)
    assert payload == raw_payload(b'[{"k":1}]', max_age=50)


def test_hand_built_payload_decodes() -> None:
    back = decode(raw_payload(b'[{"k":1},["f"]]'))
    assert back is not None
    assert dict(back) == {"k": 1}
    assert back.pop_flashes() == ["f"]


@pytest.mark.parametrize("length", [0, 1, 5, 12])
def test_truncated_header_decodes_to_none(length: int) -> None:
    assert decode(raw_payload(b'[{"k":1}]')[:length]) is None


@pytest.mark.parametrize("version", [0, 3, 255])
def test_unknown_version_decodes_to_none(version: int) -> None:
    assert decode(raw_payload(b"[{}]", version=version)) is None


@pytest.mark.parametrize("max_age", [0, -2, -(2**31)])
def test_invalid_max_age_decodes_to_none(max_age: int) -> None:
    assert decode(raw_payload(b"[{}]", max_age=max_age)) is None


def test_created_in_the_future_is_tolerated_only_within_the_skew() -> None:
    assert decode(raw_payload(b"[{}]", created=NOW + 60, accessed=NOW + 60)) is not None
    assert decode(raw_payload(b"[{}]", created=NOW + 61, accessed=NOW + 61)) is None


def test_last_access_in_the_future_beyond_the_skew_decodes_to_none() -> None:
    assert decode(raw_payload(b"[{}]", created=NOW - 10, accessed=NOW + 61)) is None


def test_last_access_before_creation_decodes_to_none() -> None:
    assert decode(raw_payload(b"[{}]", created=NOW - 10, accessed=NOW - 11)) is None


def test_idle_expiry_uses_the_configured_idle_timeout() -> None:
    assert decode(raw_payload(b"[{}]", created=NOW - IDLE - 5, accessed=NOW - IDLE)) is not None
    assert decode(raw_payload(b"[{}]", created=NOW - IDLE - 5, accessed=NOW - IDLE - 1)) is None


def test_per_session_max_age_overrides_the_idle_timeout() -> None:
    # Shorter than the configured idle timeout: expires sooner.
    short = raw_payload(b"[{}]", created=NOW - 20, accessed=NOW - 11, max_age=10)
    assert decode(short) is None
    # Longer ("remember me"): outlives the configured idle timeout.
    long = raw_payload(b"[{}]", created=NOW - 2 * IDLE, accessed=NOW - 2 * IDLE, max_age=3 * IDLE)
    assert decode(long) is not None
    assert decode(long, idle_timeout=IDLE) is not None


def test_absolute_expiry_applies_however_recent_the_last_access() -> None:
    assert decode(raw_payload(b"[{}]", created=NOW - ABSOLUTE, accessed=NOW)) is not None
    assert decode(raw_payload(b"[{}]", created=NOW - ABSOLUTE - 1, accessed=NOW)) is None


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"not json", id="not-json"),
        pytest.param(b"[{}", id="unterminated"),
        pytest.param(b"[NaN]", id="list-of-nan"),
        pytest.param(b"[]", id="empty-list"),
        pytest.param(b"[1]", id="list-of-int"),
        pytest.param(b'["x"]', id="list-of-str"),
        pytest.param(b"[{},[],3]", id="three-items"),
        pytest.param(b'[{},"flash"]', id="flashes-not-a-list"),
        pytest.param(b"[{},{}]", id="flashes-a-dict"),
        pytest.param(b'{"user":"alice"}', id="dict"),
        pytest.param(b"null", id="null"),
        pytest.param(b'"[{}]"', id="string"),
    ],
)
def test_malformed_body_decodes_to_none(body: bytes) -> None:
    assert decode(raw_payload(body)) is None


def test_deeply_nested_body_decodes_to_none() -> None:
    deep = b"[" * 10_000 + b"]" * 10_000
    assert decode(raw_payload(deep)) is None
    inside = b'[{"a":' + b"[" * 10_000 + b"]" * 10_000 + b"}]"
    assert decode(raw_payload(inside)) is None


def test_huge_number_decodes_to_none() -> None:
    assert decode(raw_payload(b'[{"n":' + b"7" * 5000 + b"}]")) is None


@pytest.mark.parametrize("body", [b"\xff\xfe\xfd", b'[{"a":"\xc3"}]', b'[{"\xc0\xaf":1}]'])
def test_non_utf8_body_decodes_to_none(body: bytes) -> None:
    assert decode(raw_payload(body)) is None


# -- serialization errors ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(object(), id="object"),
        pytest.param({1, 2}, id="set"),
        pytest.param(float("nan"), id="nan"),
        pytest.param(b"bytes", id="bytes"),
        pytest.param({"deep": [{"x": object()}]}, id="nested"),
    ],
)
def test_serialization_error_names_the_offending_key(
    serializer: JSONSerializer, bad: object
) -> None:
    session = Session(data={"fine": 1, "also_fine": [1, 2]})
    session["culprit"] = bad
    with pytest.raises(SerializationError) as info:
        encode_payload(session, serializer, NOW)
    message = str(info.value)
    assert "'culprit'" in message
    assert "fine" not in message
    assert isinstance(info.value, TypeError)


def test_serialization_error_for_a_flash_message(serializer: JSONSerializer) -> None:
    session = Session(data={"fine": 1})
    session.flash(object())
    with pytest.raises(TypeError, match="flash") as info:
        encode_payload(session, serializer, NOW)
    assert isinstance(info.value, SerializationError)
    assert "'fine'" not in str(info.value)


def test_max_age_too_large_for_the_payload_is_refused_by_the_setter() -> None:
    # "Remember me for 100 years" must fail where it is set, not later inside the save.
    session = Session(data={"a": 1})
    with pytest.raises(ValueError, match="max_age"):
        session.max_age = 100 * 365 * 24 * 3600
    assert session.max_age is None and not session.is_dirty


def test_largest_max_age_survives_the_payload(serializer: JSONSerializer) -> None:
    session = Session(data={"a": 1})
    session.max_age = 2**31 - 1
    back = decode(encode_payload(session, serializer, NOW))
    assert back is not None
    assert back.max_age == 2**31 - 1


def test_serializer_output_is_compact_strict_json(serializer: JSONSerializer) -> None:
    encoded = serializer.dumps([{"a": [1, "é"]}])
    assert encoded == '[{"a":[1,"é"]}]'.encode()
    assert json.loads(encoded) == [{"a": [1, "é"]}]
    with pytest.raises(ValueError):
        serializer.dumps(float("inf"))


@pytest.mark.parametrize(
    "text",
    [b"", b" ", b' [{"a":1}]', b'[{"a":1}] x', b'[{"a":1}][]', b"NaN", b"[Infinity]", b"[1e999]"],
    ids=["empty", "blank", "leading space", "trailing text", "two documents", "NaN",
         "Infinity", "float overflow"],
)  # fmt: skip
def test_the_serializer_reads_one_strict_json_document_only(
    serializer: JSONSerializer, text: bytes
) -> None:
    with pytest.raises(ValueError):
        serializer.loads(text)
    assert serializer.loads(b'[{"a":1}] \n') == [{"a": 1}]  # trailing whitespace is fine


def test_the_serializer_names_a_value_json_cannot_hold(serializer: JSONSerializer) -> None:
    with pytest.raises(TypeError, match="Object of type set is not JSON serializable"):
        serializer.dumps([{"a": {1}}])
    assert serializer.dumps([{"a": 1}]) == b'[{"a":1}]'  # the failure left nothing behind


def test_lone_surrogate_round_trips_through_the_payload(serializer: JSONSerializer) -> None:
    # The encoder writes a lone surrogate as its UTF-8-style bytes, so the decoder accepts
    # exactly those: a session that holds one can always be saved again.
    session = Session(data={"a": "\ud800"})
    back = decode(encode_payload(session, serializer, NOW))
    assert back is not None
    assert dict(back) == {"a": "\ud800"}


NON_STR_KEYS = [
    pytest.param({"cart": {1: "a", "1": "b"}}, "session['cart'][1]", id="int-colliding"),
    pytest.param({"cart": ["x", {2: "b"}]}, "session['cart'][1][2]", id="int-in-a-list"),
    pytest.param({"a": ({"b": {1.5: 0}},)}, "session['a'][0]['b'][1.5]", id="float-in-a-tuple"),
    pytest.param({"flags": {True: 1}}, "session['flags'][True]", id="bool"),
    pytest.param({"m": {None: 1}}, "session['m'][None]", id="none"),
    pytest.param({"d": {"e": {"f": {7: 1}}}}, "session['d']['e']['f'][7]", id="deep"),
    pytest.param({"a": 1, 2: "top"}, "session[2]", id="top-level-given-to-the-constructor"),
    pytest.param({"note": "a { in a str", "m": {3: 1}}, "session['m'][3]", id="brace-in-a-str"),
]


@pytest.mark.parametrize(("data", "where"), NON_STR_KEYS)
def test_a_non_str_key_anywhere_is_refused_naming_where_it_is(
    serializer: JSONSerializer, data: dict[str, Any], where: str
) -> None:
    # JSON would store the key as a string: {1: "a", "1": "b"} would come back as {"1": "b"}.
    session = Session(data=data)
    with pytest.raises(SerializationError) as info:
        encode_payload(session, serializer, NOW)
    assert str(info.value).startswith(f"{where}: keys must be str, not ")
    assert isinstance(info.value, TypeError)


def test_a_non_str_key_in_a_flash_message_is_refused(serializer: JSONSerializer) -> None:
    session = Session(data={"fine": {"ok": 1}})
    session.flash({"level": {0: "info"}})
    with pytest.raises(
        SerializationError, match=r"^flashes\[0\]\['level'\]\[0\]: keys must be str"
    ):
        encode_payload(session, serializer, NOW)


def test_the_serializer_refuses_non_str_keys_on_its_own(serializer: JSONSerializer) -> None:
    with pytest.raises(NonStringKeyError, match=r"^value\[0\]\[3\]: keys must be str, not int"):
        serializer.dumps([{3: "x"}])
    # The encoder is left usable, and str keys of any depth still encode.
    assert serializer.dumps([{"a": [{"b": {"c": 1}}]}]) == b'[{"a":[{"b":{"c":1}}]}]'


def test_documented_type_mapping(serializer: JSONSerializer) -> None:
    class Colour(enum.StrEnum):
        RED = "red"

    class Level(enum.IntEnum):
        HIGH = 2

    session = Session(
        data={"pair": (1, 2), "nested": [(3, {"k": (4,)})], Colour.RED: Level.HIGH, "n": None}
    )
    back = decode(encode_payload(session, serializer, NOW))
    assert back is not None
    # A tuple comes back as a list; enum members of str and int as the plain values.
    assert dict(back) == {"pair": [1, 2], "nested": [[3, {"k": [4]}]], "red": 2, "n": None}
    assert type(back["red"]) is int
    assert all(type(key) is str for key in back)


def _has_non_str_key(value: Any) -> bool:
    """The readable version of check_keys: a plain recursive walk."""
    if isinstance(value, dict):
        return any(not isinstance(k, str) or _has_non_str_key(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_has_non_str_key(item) for item in value)
    return False


_SCALARS = st.none() | st.booleans() | st.integers() | st.text(alphabet='{}ab"', max_size=4)
_KEYS = st.text(alphabet="{}ab", max_size=3) | st.integers(-2, 2) | st.none() | st.booleans()
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.tuples(inner, inner)
        | st.dictionaries(_KEYS, inner, max_size=3)
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(data=st.dictionaries(_KEYS, _VALUES, max_size=4), flashes=st.lists(_VALUES, max_size=2))
def test_the_key_check_agrees_with_a_plain_recursive_walk(
    data: dict[Any, Any], flashes: list[Any]
) -> None:
    body = [data, flashes] if flashes else [data]
    serializer = JSONSerializer()
    try:
        serializer.dumps(body)
    except NonStringKeyError:
        refused = True
    else:
        refused = False
    assert refused == _has_non_str_key(body)
    # The walk without the JSON text's shortcut agrees too.
    try:
        check_keys(body)
    except NonStringKeyError:
        assert refused
    else:
        assert not refused
