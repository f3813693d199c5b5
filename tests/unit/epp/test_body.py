from __future__ import annotations

import json

import pytest
from shoal_router.epp.body import BodyError, echo_chunks, parse_body


def test_chat_body():
    body = json.dumps(
        {"model": "m", "stream": True, "messages": [{"role": "system", "content": "be brief"}]}
    ).encode()
    req = parse_body(body, 256)
    assert req.model == "m" and req.stream and req.key == "system:be brief\n"


def test_completion_body_defaults():
    req = parse_body(b'{"prompt": "abc"}', 2)
    assert req.model == "" and not req.stream and req.key == "ab"


def test_empty_body_has_no_prompt():
    assert parse_body(b"", 256).key is None


@pytest.mark.parametrize(
    ("body", "param"),
    [(b"[1]", None), (b"nope", None), (b'{"model": 3}', "model"), (b'{"stream": "yes"}', "stream")],
)
def test_bad_bodies(body, param):
    with pytest.raises(BodyError) as info:
        parse_body(body, 256)
    assert info.value.param == param


def test_echo_chunks_cover_the_body_exactly():
    body = bytes(range(256)) * 1000
    chunks = echo_chunks(body, 62 * 1024)
    assert b"".join(chunks) == body and max(map(len, chunks)) <= 62 * 1024
    assert echo_chunks(b"") == [b""]
    with pytest.raises(ValueError):
        echo_chunks(b"x", 0)


def test_no_key_unless_asked_and_hostile_bodies_are_a_400():
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()
    assert parse_body(body, 256, with_key=False).key is None
    with pytest.raises(BodyError):  # nested too deeply for the parser: a 400, not a broken stream
        parse_body(b"[" * 100_000 + b"]" * 100_000, 256)
