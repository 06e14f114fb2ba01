"""Customer text made safe for the receivers of urgent-feedback webhooks.

A notification carries what a customer typed, and chat tools act on markup
in it: Slack turns ``<!channel>`` into a broadcast and ``<https://x|Reset
your password>`` into a disguised link; Discord and Teams ping on
``@everyone``; all of them link (and unfurl) a bare URL. So the text is
neutralised before it leaves the exporter, whatever the receiver:

- links are defanged, visibly, the way security tools quote indicators:
  ``https://evil.example/x`` becomes ``hxxps[:]//evil[.]example/x``, and a
  dot between two words of a host name (``evil.example``, an e-mail
  domain, ``10.0.0.1``) becomes ``[.]``. A reader still sees the address;
  no client makes it clickable or fetches a preview;
- every ``@`` gets a zero-width space (U+200B) after it: ``@everyone``,
  ``@here``, ``@channel`` and ``<@U123>`` mention nobody;
- bidirectional-override and control characters (which can make a link
  read as something else) become U+FFFD.

Then it is escaped for the receiver's format (``Webhook.format``):

- ``slack``: ``&``, ``<``, ``>`` as ``&amp;``, ``&lt;``, ``&gt;`` (Slack's
  own rule), so no ``<!…>`` command, ``<@…>`` mention or ``<url|text>``
  link survives; the body is ``{"text", "unfurl_links": false,
  "unfurl_media": false}``;
- ``html``: ``html.escape`` (quotes too): no tag or entity of the customer's;
- ``json``: strings are JSON values written by ``json.dumps``, never
  interpolated into a template; each ``<`` gets a zero-width space after
  it, so a receiver that renders HTML or Slack markup (a Teams card, a
  relay into Slack) finds no tag, command or link either.

Only the notification is changed: the stored feedback (``GET
/api/v1/feedback``) keeps the text as it was sent.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Callable
from typing import Any

ZWSP = "\u200b"
_BARE_SCHEME = re.compile(
    r"(?<![a-z])(mailto|javascript|vbscript|data|tel|sms|callto|file|slack):(?=[^\s/])", re.IGNORECASE)
_DEFANGED = re.compile(r"(?<![a-z])(http|https|ftp|ftps|ws|wss)(?=\[:\]//)", re.IGNORECASE)
_NAMES = {"http": "hxxp", "https": "hxxps", "ftp": "fxp", "ftps": "fxps", "ws": "wxs", "wss": "wxss"}
_DOT = "[.\u3002\uff0e\uff61]"  # ASCII, ideographic, fullwidth and halfwidth full stops
_LABEL = r"[^\W_](?:[\w-]{0,61}[^\W_])?"
# Bounded by anything but a letter, digit, "-" or dot: "_evil.example_" (Slack italics) is a host too.
_HOST = re.compile(rf"(?<![^\W_])(?<![.-]){_LABEL}(?:{_DOT}{_LABEL})+(?![^\W_])(?!-)")
_TLD = re.compile(r"[^\W\d_]{2,63}$")
_IPV4 = re.compile(rf"\d{{1,3}}(?:{_DOT}\d{{1,3}}){{3}}$")
_UNSAFE = re.compile("[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _host(match: re.Match) -> str:
    host = match.group(0)
    if not (_TLD.search(host) or _IPV4.match(host)):
        return host  # "v2.4.1", "e.g": not a host name
    return re.sub(_DOT, "[.]", host)


def neutralise(text: str) -> str:
    """``text`` with links defanged, mentions broken and control characters replaced (see module doc)."""
    text = _UNSAFE.sub("\ufffd", text)
    # Any "://" (whatever comes before it: linkifiers find "https://" inside "0https://" too),
    # then the usual names: https -> hxxps; and the schemes that link without "//".
    text = text.replace("://", "[:]//")
    text = _DEFANGED.sub(lambda m: _NAMES[m.group(1).lower()], text)
    text = _BARE_SCHEME.sub(r"\1[:]", text)
    text = _HOST.sub(_host, text)
    return text.replace("@", "@" + ZWSP)


def slack_escape(text: str) -> str:
    """Slack mrkdwn: the three characters Slack's docs say must be escaped."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _json_text(text: str) -> str:
    return neutralise(text).replace("<", "<" + ZWSP)


def _html_text(text: str) -> str:
    return html.escape(neutralise(text), quote=True)


def _walk(value: Any, clean: Callable[[str], str]) -> Any:
    """Every string of a JSON value (metadata: keys too) passed through ``clean``."""
    if isinstance(value, str):
        return clean(value)
    if isinstance(value, dict):
        return {clean(str(k)): _walk(v, clean) for k, v in value.items()}
    if isinstance(value, list):
        return [_walk(v, clean) for v in value]
    return value


def _message(summary: dict[str, Any], text: str) -> str:
    """The one-line message: who rated what, how many were held back, then the (clean) text."""
    feedback = summary["feedback"]
    line = f"Urgent Clary feedback: {feedback['type']} rated {feedback['rating']}/5 from a {feedback['tier']} customer"
    suppressed = summary.get("suppressed") or 0
    if suppressed:
        line += (f" (and {suppressed} more urgent reports from {feedback['tier']} customers not notified:"
                 " duplicates or over the notification limit)")
    return f"{line}: {text}" if text else line


def render(summary: dict[str, Any], fmt: str) -> bytes:
    """The request body for a webhook of format ``fmt``, from a :func:`exporter.api.notify.summary`."""
    feedback = summary["feedback"]
    if fmt == "slack":
        text = slack_escape(_message(summary, neutralise(feedback.get("text") or "")))
        body: dict[str, Any] = {"text": f"{text}\nfeedback id: {feedback['id']}",
                                "unfurl_links": False, "unfurl_media": False}
        return json.dumps(body).encode()
    clean = _html_text if fmt == "html" else _json_text
    text = clean(feedback.get("text") or "")
    body = {
        "event": summary["event"],
        "text": _message(summary, text),
        "feedback": {**feedback, "text": text, "metadata": _walk(feedback.get("metadata"), clean)},
    }
    if summary.get("suppressed"):
        body["suppressed"] = summary["suppressed"]
    return json.dumps(body, ensure_ascii=False).encode()
