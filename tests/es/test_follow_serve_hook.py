"""running_followers: what `es-embed serve` enters in its cleanup_ctx."""

from __future__ import annotations

import pytest

from es_embed.follow.follower import running_followers
from tests.es.follow_support import all_current, followed_index, wait_until

pytestmark = pytest.mark.es


async def test_followers_run_inside_the_context_and_stop_on_exit(es_url: str) -> None:
    async with followed_index(es_url) as env:
        async with running_followers(env.settings, env.service, env.es) as followers:
            assert [f.target.name for f in followers] == [env.index]
            await env.es.index(index=env.index, id="1", document={"text": "served"})
            await wait_until(lambda: all_current(env), what="embedded under serve")
        calls = env.encoder.encoded_inputs
        await env.es.index(index=env.index, id="2", document={"text": "after exit"}, refresh=True)
        assert not await all_current(env)  # nobody follows any more
        assert env.encoder.encoded_inputs == calls


async def test_follow_disabled_starts_nothing(es_url: str) -> None:
    async with followed_index(es_url, follow={"enabled": False}) as env:
        async with running_followers(env.settings, env.service, env.es) as followers:
            assert followers == []
