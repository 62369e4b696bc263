"""/v1/openapi.json against the real answers of every endpoint of a real `ferrymail serve`:
each body validates against the schema the document gives for its path, method and status."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import jsonschema
import orjson
from api_support import CAMPAIGN, serve

#: (method, concrete path, the document's path, body, which key) for every endpoint, in
#: an order that makes each answer meaningful; statuses of errors included.
CALLS: list[tuple[str, str, str, Any, str]] = [
    ("PUT", "/v1/campaigns/c1", "/v1/campaigns/{id}", CAMPAIGN, "rw"),
    ("PUT", "/v1/campaigns/c2", "/v1/campaigns/{id}", {**CAMPAIGN, "text": "{{ x"}, "rw"),
    ("PUT", "/v1/campaigns/c2", "/v1/campaigns/{id}", {"sender": 1}, "rw"),
    ("PUT", "/v1/campaigns/c1", "/v1/campaigns/{id}", CAMPAIGN, "ro"),
    ("GET", "/v1/status", "/v1/status", None, "none"),
    (
        "POST",
        "/v1/campaigns/c1/recipients",
        "/v1/campaigns/{id}/recipients",
        b'{"email": "a@a.test"}\n{"email": "b@b.test", "id": 7}\nnonsense\n',
        "rw",
    ),
    ("POST", "/v1/campaigns/zz/recipients", "/v1/campaigns/{id}/recipients", b"", "rw"),
    ("GET", "/v1/campaigns/c1", "/v1/campaigns/{id}", None, "ro"),
    ("GET", "/v1/campaigns/zz", "/v1/campaigns/{id}", None, "ro"),
    ("GET", "/v1/status", "/v1/status", None, "ro"),
    ("PUT", "/v1/suppressions/ann@a.test", "/v1/suppressions/{address}", {"reason": "x"}, "rw"),
    ("GET", "/v1/suppressions/ann@a.test", "/v1/suppressions/{address}", None, "ro"),
    ("DELETE", "/v1/suppressions/ann@a.test", "/v1/suppressions/{address}", None, "rw"),
    ("DELETE", "/v1/suppressions/ann@a.test", "/v1/suppressions/{address}", None, "rw"),
    ("POST", "/v1/flush", "/v1/flush", b"", "rw"),
    ("POST", "/v1/campaigns/c1/cancel", "/v1/campaigns/{id}/cancel", b"", "rw"),
    ("POST", "/v1/campaigns/zz/cancel", "/v1/campaigns/{id}/cancel", b"", "rw"),
    ("GET", "/v1/campaigns/c1", "/v1/campaigns/{id}", None, "rw"),
    ("POST", "/v1/campaigns/c1/recipients", "/v1/campaigns/{id}/recipients", b"{}", "rw"),
    ("PUT", "/v1/campaigns/c3", "/v1/campaigns/{id}", CAMPAIGN, "rw"),
    ("POST", "/v1/campaigns/c3/recipients", "/v1/campaigns/{id}/recipients", b"[{", "rw"),
    ("PUT", "/v1/campaigns/c3", "/v1/campaigns/{id}", b"{", "rw"),
]


def test_every_answer_matches_the_openapi_document(tmp_path: Path) -> None:
    with serve(tmp_path) as served, httpx.Client(base_url=served.url) as client:
        fetched = client.get("/v1/openapi.json")  # no key needed for the document
        assert fetched.status_code == 200
        document = fetched.json()
        assert document["openapi"] == "3.1.0"
        tokens = {"rw": served.token, "ro": served.read_only, "none": None}
        seen: set[tuple[str, str, int]] = set()
        for method, path, template, body, who in CALLS:
            headers = {} if tokens[who] is None else served.auth(tokens[who])
            content = body if isinstance(body, bytes) or body is None else orjson.dumps(body)
            answer = client.request(method, path, content=content, headers=headers)
            operation = document["paths"][template][method.lower()]
            status = str(answer.status_code)
            assert status in operation["responses"], (method, path, status, answer.text)
            schema = operation["responses"][status]["content"]["application/json"]["schema"]
            # The document is the root, so that its #/components/… references resolve.
            validator = jsonschema.Draft202012Validator({**document, **schema})
            errors = [e.message for e in validator.iter_errors(answer.json())]
            assert errors == [], (method, path, status, answer.json())
            seen.add((template, method.lower(), answer.status_code))
        # Every operation of the document was called, and answered 200 at least once.
        for template, item in document["paths"].items():
            for method in item.keys() - {"parameters"}:
                if template != "/v1/openapi.json":
                    assert (template, method, 200) in seen, (template, method)
        statuses = {status for _, _, status in seen}
        assert {200, 400, 401, 403, 404, 409, 422} <= statuses
