"""The table from domain errors to HTTP problems: subclasses first, our own faults never shown."""

from __future__ import annotations

import inspect
import json

from gateway import errors
from gateway.api.problems import domain_response, problem_type_for


def body(error: errors.GatewayError) -> dict[str, object]:
    response = domain_response(error, "/test")
    assert response.media_type == "application/problem+json"
    loaded: dict[str, object] = json.loads(bytes(response.body))
    assert loaded["status"] == response.status_code
    return loaded


def test_subclasses_win_over_their_parents() -> None:
    assert body(errors.WrongStatus("request R is open"))["status"] == 409
    assert str(body(errors.WrongStatus("x"))["type"]).endswith(":wrong-status")
    assert str(body(errors.Conflict("x"))["type"]).endswith(":conflict")
    assert str(body(errors.BodyTooLarge("x"))["type"]).endswith(":body-too-large")
    assert body(errors.BodyTooLarge("x"))["status"] == 413
    assert body(errors.InvalidCourtCode("x"))["status"] == 422
    assert body(errors.DiskFull("x"))["status"] == 503
    assert body(errors.Throttled("x"))["status"] == 429


def test_import_refusal_lists_every_line() -> None:
    refused = body(errors.ImportRefused([(3, "unknown court X"), (7, "bad address")]))
    assert refused["status"] == 422
    assert refused["problems"] == [
        {"line": 3, "problem": "unknown court X"},
        {"line": 7, "problem": "bad address"},
    ]


def test_unauthenticated_says_how_to_authenticate() -> None:
    response = domain_response(errors.Unauthenticated("no key"), "/x")
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_errors_outside_the_table_are_internal_and_hide_their_text() -> None:
    secret_text = "/var/lib/gateway/blobs/2026/x.raw.pgp is gone"
    for error in (errors.ConfigError(secret_text), errors.MalformedMessage(secret_text)):
        assert problem_type_for(error) is None
        shown = body(error)
        assert shown["status"] == 503 and secret_text not in json.dumps(shown)
        assert str(shown["correlation_id"]) in str(shown["detail"])


def test_every_client_error_maps_below_500() -> None:
    client_side = (errors.InputError, errors.NotFound, errors.Conflict, errors.KeyRefused,
                   errors.Unauthenticated, errors.NotPermitted)  # fmt: skip
    for _name, cls in inspect.getmembers(errors, inspect.isclass):
        if issubclass(cls, client_side):
            kind = problem_type_for(cls.__new__(cls))
            assert kind is not None and 400 <= kind.status < 500, cls


def test_control_characters_do_not_reach_the_detail() -> None:
    assert body(errors.NotFound("unknown request A\r\nX-Injected: 1"))["detail"] == (
        "unknown request A??X-Injected: 1"
    )
