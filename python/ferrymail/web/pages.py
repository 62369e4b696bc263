"""The bytes the endpoints answer with: the pixel, and the few small HTML pages."""

from __future__ import annotations

#: A 1x1 transparent GIF (GIF89a, one colour, a transparent-colour extension): 43 bytes.
PIXEL = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00"
    b"\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>{title}</title>
<style>body{{font:16px/1.5 system-ui,sans-serif;max-width:32em;margin:4em auto;padding:0 1em}}
button{{font:inherit;padding:.5em 1.5em}}</style>
</head><body>
<h1>{title}</h1>
{body}
</body></html>
"""


def page(title: str, body: str) -> bytes:
    """A page of constant text: nothing from the request is ever put in one."""
    return _PAGE.format(title=title, body=body).encode()


NOT_FOUND = page("Link not found", "<p>This link is not valid, or is no longer valid.</p>")
# The form posts to its own URL (an empty action), token and query included, with the
# body RFC 8058 asks for: the same request a mail program's one-click unsubscribe makes.
CONFIRM = page(
    "Unsubscribe",
    '<p>Do you want to stop receiving these emails?</p>\n<form method="post" action="">'
    '<input type="hidden" name="List-Unsubscribe" value="One-Click">'
    '<button type="submit">Unsubscribe</button></form>',
)
DONE = page("Unsubscribed", "<p>You are unsubscribed: you will not receive these emails.</p>")
BAD_REQUEST = page(
    "Bad request", "<p>An unsubscribe request has the body List-Unsubscribe=One-Click.</p>"
)
TOO_LARGE = page("Request too large", "<p>The request body is too large.</p>")
NOT_ALLOWED = page("Method not allowed", "<p>This URL does not answer that method.</p>")
UNAVAILABLE = page("Try again later", "<p>The request could not be recorded. Try again.</p>")
