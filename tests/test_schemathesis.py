"""Schemathesis against the server's own OpenAPI schema: generated requests, valid and invalid,
to every operation; no answer may be a 5xx, and every answer must match the schema (its status
code, content type, headers and body), with invalid input refused.

Bounded for CI: at most MAX_EXAMPLES generated cases per operation and phase, no deadline (the
CPU is shared), and poems of one couplet (see `test_api`), so the whole file runs in well under a
minute. A tiny untrained GPT with the shipped tokenizer stands in for the model, as in
tests/test_server.py: the controls and the schema are the real ones."""

from __future__ import annotations

import pytest
import schemathesis
from conftest import untrained_poetry
from hypothesis import HealthCheck, settings
from schemathesis.checks import positive_data_acceptance

from persian_poetry.serve.app import LOOPBACK_HOSTS, create_app
from persian_poetry.writing.bundle import PoetryModel
from persian_poetry.writing.generate import MAX_COUPLETS

MAX_EXAMPLES = 20


def tiny_poetry() -> PoetryModel:
    return untrained_poetry()


@pytest.fixture(scope="module")
def api_schema():
    # Schemathesis calls an ASGI app as host "testserver": allowed here, on top of the loopback names.
    app = create_app(tiny_poetry(), allowed_hosts=[*LOOPBACK_HOSTS, "testserver"])
    return schemathesis.openapi.from_asgi("/openapi.json", app)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_api(case):
    # A long poem is the same code as a short one, only slower: schema-valid requests for more
    # than one couplet (or the form's usual seven) ask for one, so that the run stays bounded.
    # Invalid couplet counts (0, 41, "many", 1.5) are left as they are and must still be refused.
    if case.operation.path == "/api/generate" and isinstance(case.body, dict):
        couplets = case.body.get("couplets")
        if couplets is None or (type(couplets) is int and 1 < couplets <= MAX_COUPLETS):
            case.body["couplets"] = 1
    # Every check but one. positive_data_acceptance expects any schema-valid body to succeed, but
    # the schema cannot say which poets, forms, metres and rhymes the loaded model knows (a rhyme
    # must hold Persian letters, a radif needs a rhyme): those are 422s that name the field, by
    # design and documented as such. 5xx (not_a_server_error), undocumented status codes, content
    # types and response bodies, and invalid data accepted (negative_data_rejection) all run.
    case.call_and_validate(excluded_checks=[positive_data_acceptance])
