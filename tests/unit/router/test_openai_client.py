"""The official openai client through the router, streaming and not."""

from __future__ import annotations

import openai
import pytest
from unit.router.fakes import running_router, upstreams

pytestmark = pytest.mark.unit


async def test_openai_client_through_router(tmp_path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("team:sk-test\n")
    async with (
        upstreams(2) as ups,
        running_router(upstream_urls=[u.url for u in ups], api_keys_file=str(keys)) as r,
    ):
        from shoal_router.server import default_sources

        await next(s for s in default_sources(r.router.config) if s.__name__ == "keys_file")(r.router)
        client = openai.AsyncOpenAI(base_url=r.url + "/v1", api_key="sk-test", max_retries=0)
        chat = await client.chat.completions.create(
            model="fake", messages=[{"role": "user", "content": "hi"}]
        )
        assert chat.choices[0].message.content is not None
        assert chat.choices[0].message.content.startswith("hello from up")
        comp = await client.completions.create(model="fake", prompt="hi")
        assert comp.choices[0].text.startswith("hello from up")

        stream = await client.chat.completions.create(
            model="fake", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        pieces = [
            c.choices[0].delta.content async for c in stream if c.choices and c.choices[0].delta.content
        ]
        assert "".join(pieces) == "tok0 tok1 tok2 "

        cstream = await client.completions.create(model="fake", prompt="hi", stream=True)
        texts = [c.choices[0].text async for c in cstream]
        assert "".join(texts) == "tok0 tok1 tok2 "

        models = await client.models.list()
        assert [m.id for m in models.data] == ["fake"]

        bad = openai.AsyncOpenAI(base_url=r.url + "/v1", api_key="wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            await bad.chat.completions.create(model="fake", messages=[{"role": "user", "content": "hi"}])
        await client.close()
        await bad.close()
