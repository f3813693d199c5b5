"""The PrefixHash key extractor never raises on a hostile body (it was a 500 at the router)."""

import pytest
from shoal_router.prompt import prompt_prefix

pytestmark = pytest.mark.unit

DEEP = 100_000


@pytest.mark.parametrize(
    "body",
    [
        b"[" * DEEP + b"]" * DEEP,
        b'{"messages": ' + b"[" * DEEP + b"]" * DEEP + b"}",
        b'{"prompt": ' + b"[" * DEEP + b"]" * DEEP + b"}",
        b'{"prompt": [' + b"9" * 5000 + b"]}",
        b'{"prompt": "\xff\xfe"}',
    ],
    ids=["deep-array", "deep-messages", "deep-prompt", "int-over-4300-digits", "bad-utf8"],
)
def test_prompt_prefix_survives_hostile_bodies(body: bytes) -> None:
    assert prompt_prefix(body, 100) is None


def test_nested_prompt_under_the_json_limit_is_not_token_ids() -> None:
    nested = b'{"prompt": [' + b"[" * 900 + b"]" * 900 + b"]}"
    assert prompt_prefix(nested, 100) == ""
