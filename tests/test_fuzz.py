"""Schemathesis throws generated requests (valid and malformed) at every operation.

Zero 500s, and every answer is a valid envelope.
"""

from __future__ import annotations

from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.generation.modes import GenerationMode

from conftest import Deployment


def _check(response: Any) -> None:
    assert response.status_code == 200, response.text
    body = response.json()
    assert isinstance(body, dict) and isinstance(body.get("code"), int) and isinstance(body.get("msg"), str)
    if body["code"] == 1000:
        assert "data" in body or "token" in body
    else:
        assert body["msg"] and body.get("data") is None


def test_every_answer_is_an_envelope(deployment: Deployment) -> None:
    url = deployment.server.url
    schema = schemathesis.openapi.from_url(url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 13
    auth = {"x-api-key": deployment.alice.key}
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(mode, headers=auth))
            @settings(max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck))
            def fuzz(case: Any) -> None:
                _check(case.call(base_url=url))

            try:
                fuzz()
            except Unsatisfiable:
                # An operation without parameters has nothing to make invalid.
                assert mode is GenerationMode.NEGATIVE
