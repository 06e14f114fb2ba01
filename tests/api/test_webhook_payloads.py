"""What webhook receivers get: customer text escaped per format, links and mentions neutralised.

The payloads are the real request bodies, captured by a local aiohttp
receiver on 127.0.0.1 (issue 19, item 7: ``<!channel> <https://evil.example|Reset
your password>`` became a Slack broadcast with a phishing link).
"""

from __future__ import annotations

import html
import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from exporter.api.notify import summary
from exporter.api.webhook_text import ZWSP, neutralise, render
from exporter.config import Config, ConfigError, load
from exporter.server.app import create_app
from tests.api_helpers import WebhookReceiver, make_config

URL = "/api/v1/feedback"
BOB = {"X-API-Key": "key-pro-bob"}
PHISH = "<!channel> <https://evil.example|Reset your password> @here <@U024BE7LH> ping @everyone"


@pytest.fixture
async def receivers():
    hooks = {fmt: await WebhookReceiver().start() for fmt in ("slack", "json", "html")}
    yield hooks
    for hook in hooks.values():
        await hook.stop()


def _no_live_markup(text: str) -> None:
    """Nothing in ``text`` that a chat tool turns into a link, a broadcast or a mention."""
    assert "https://" not in text and "evil.example" not in text
    assert not re.search(r"@(?!\u200b)", text), text  # every @ is followed by a zero-width space
    for live in ("<!channel>", "<!here>", "<@U024BE7LH>", "<https:"):
        assert live not in text


async def test_the_phishing_text_reaches_no_receiver_as_markup(aiohttp_client, tmp_path, receivers):
    hooks = [{"url": hook.url, "format": fmt} for fmt, hook in receivers.items()]
    client = await aiohttp_client(create_app(make_config(tmp_path, webhooks=hooks), CollectorRegistry()))
    resp = await client.post(URL, json={"type": "bug", "rating": 1, "text": PHISH,
                                        "metadata": {"page": "<a href='https://evil.example'>x</a>"}}, headers=BOB)
    assert resp.status == 201
    created = await resp.json()

    (slack,) = await receivers["slack"].wait(1)
    assert set(slack) == {"text", "unfurl_links", "unfurl_media"}
    assert slack["unfurl_links"] is False and slack["unfurl_media"] is False
    assert "&lt;!channel&gt; &lt;hxxps[:]//evil[.]example|Reset your password&gt;" in slack["text"]
    assert "<" not in slack["text"] and ">" not in slack["text"]
    assert slack["text"].endswith(f"feedback id: {created['id']}")
    _no_live_markup(slack["text"])

    (plain,) = await receivers["json"].wait(1)
    assert plain["feedback"]["id"] == created["id"] and plain["feedback"]["tier"] == "professional"
    assert plain["feedback"]["text"] == neutralise(PHISH).replace("<", "<" + ZWSP)
    assert plain["text"].endswith(": " + plain["feedback"]["text"])
    assert "hxxps[:]//evil[.]example|Reset your password" in plain["feedback"]["text"]
    for text in (plain["text"], plain["feedback"]["text"], json.dumps(plain["feedback"]["metadata"], ensure_ascii=False)):
        _no_live_markup(text)
        assert not re.search(r"<(?!\u200b)", text), text  # no tag, command or mention can start

    (marked,) = await receivers["html"].wait(1)
    assert "&lt;!channel&gt;" in marked["feedback"]["text"] and "<" not in marked["text"]
    assert marked["feedback"]["metadata"] == {
        "page": html.escape("<a href='hxxps[:]//evil[.]example'>x</a>".replace("@", "@" + ZWSP))}
    _no_live_markup(marked["text"])
    # What is stored is what the customer sent.
    listed = await (await client.get(URL, headers={"Authorization": "Bearer admin-token-0123456789abcdef"})).json()
    assert listed["items"][0]["text"] == PHISH


@pytest.mark.parametrize("text, expected", [
    ("see https://evil.example/reset?a=1", "see hxxps[:]//evil[.]example/reset?a=1"),
    ("http://10.0.0.1:8080/x", "hxxp[:]//10[.]0[.]0[.]1:8080/x"),
    ("go to www.evil.example now", "go to www[.]evil[.]example now"),
    ("mail me: bob@corp.example", f"mail me: bob@{ZWSP}corp[.]example"),
    ("javascript:alert(1)", "javascript[:]alert(1)"),
    ("_https://evil.example_ and x://y", "_hxxps[:]//evil[.]example_ and x[:]//y"),
    ("[Reset](https://evil.example)", "[Reset](hxxps[:]//evil[.]example)"),
    ("ｅｖｉｌ．ｃｏｍ and evil。example", "ｅｖｉｌ[.]ｃｏｍ and evil[.]example"),
    ("right-to-left \u202eexe.pdf", "right-to-left \ufffdexe[.]pdf"),
    # Not hosts or links: left alone.
    ("crashes in v2.4.1, e.g. on save; Re: export", "crashes in v2.4.1, e.g. on save; Re: export"),
    ("", ""),
])
def test_neutralise_examples(text, expected):
    assert neutralise(text) == expected


LINKY = st.lists(st.sampled_from(list("<>|!@#&:/.-_ ahtpsxwe\u3002\uff0e") + ["https://", "www.", ".com", "<!here>"]),
                 max_size=30).map("".join)


@settings(max_examples=300, deadline=None)
@given(text=st.one_of(st.text(max_size=80), LINKY))
def test_no_rendered_text_carries_a_link_or_mention(text):
    feedback = {"id": "f", "created_at": "t", "tier": "lite", "type": "bug", "rating": 1, "text": text,
                "metadata": {"k": text}}
    for fmt in ("slack", "json", "html"):
        body = json.loads(render(summary(feedback), fmt))
        strings = [body["text"]] + ([body["feedback"]["text"], body["feedback"]["metadata"]["k"]]
                                    if fmt != "slack" else [])
        for value in strings:
            assert "://" not in value
            assert not re.search(r"@(?!\u200b)", value)
            if fmt == "json":
                assert not re.search(r"<(?!\u200b)", value)
            else:
                assert "<" not in value and ">" not in value


def test_format_defaults_by_host_and_can_be_set():
    config = Config(webhooks=["https://hooks.slack.com/services/T0/B0/X", "https://ops.example/hook",
                              {"url": "https://teams.example/hook", "format": "html"}])
    assert [(h.url.split("/")[2], h.format) for h in config.webhooks] == [
        ("hooks.slack.com", "slack"), ("ops.example", "json"), ("teams.example", "html")]
    assert [h.format for h in load(environ={"CLARY_WEBHOOKS": "https://hooks.slack.com/x,http://a.example"}).webhooks] \
        == ["slack", "json"]


@pytest.mark.parametrize("webhooks, message", [
    (["ftp://files.example/x"], "webhooks.0.url: Value error, not an http(s) URL"),
    ([{"url": "https://a.example/hook?token=s3cret", "format": "xml"}], "webhooks.0.format: Input should be"),
    (["https://a.example/h", "https://a.example/h"], "webhooks: Value error, entry 1 repeats an earlier URL"),
])
def test_bad_webhook_entries_are_one_line_without_the_url(webhooks, message):
    with pytest.raises(ConfigError) as caught:
        load({"webhooks": webhooks})
    assert message in str(caught.value) and "s3cret" not in str(caught.value) and "\n" not in str(caught.value)


def test_an_outbox_row_from_before_the_upgrade_is_rendered_safely():
    """Rows written by the old exporter hold the raw summary (with a ready-made text): it is not sent as is."""
    old = {"event": "urgent_feedback", "text": f"Urgent Clary feedback: bug rated 1/5 from a lite customer: {PHISH}",
           "feedback": {"id": "i", "created_at": "t", "tier": "lite", "type": "bug", "rating": 1, "text": PHISH,
                        "metadata": None}}
    body = json.loads(render(old, "slack"))
    _no_live_markup(body["text"])
    assert "&lt;!channel&gt;" in body["text"]
