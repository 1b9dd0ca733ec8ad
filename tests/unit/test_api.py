"""api/: the status of each domain.errors kind, the one error shape, and keys read one way."""

import base64

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from api.auth import BadCredentials, basic_username, bearer, key_of
from api.errors import STATUS, from_domain, install_error_handlers
from domain.errors import CdpError, Conflict, Invalid, NotFound, Unavailable
from projections.kpis import KpiQueryError, UnknownKpi


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (Invalid("x"), 400, "invalid_request"),
        (Invalid("x", code="invalid_origin"), 400, "invalid_origin"),
        (NotFound("x"), 404, "not_found"),
        (NotFound("x", code="unknown_source"), 404, "unknown_source"),
        (Conflict("x"), 409, "conflict"),
        (Unavailable("x", code="store_unavailable"), 503, "store_unavailable"),
        # KPI errors keep the generic codes the API has always answered them with (docs/errors.md).
        (KpiQueryError("x", code="funnel_kpi"), 400, "bad_request"),
        (UnknownKpi("x"), 404, "not_found"),
    ],
)
def test_each_kind_has_its_status_and_the_error_its_code(error: CdpError, status: int, code: str) -> None:
    answer = from_domain(error)
    assert (answer.status, answer.code, answer.message) == (status, code, "x")
    assert STATUS[error.kind] == status


def test_handlers_give_domain_errors_the_one_shape() -> None:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/missing")
    def missing() -> None:
        raise NotFound("no profile has the identifier 'email:a@b.c'")

    @app.get("/invalid")
    def invalid() -> None:
        raise Invalid("invalid tag; nothing changed", code="invalid_tag", errors=[{"path": "rule", "reason": "r"}])

    http = TestClient(app)
    assert http.get("/missing").status_code == 404
    assert http.get("/missing").json() == {"code": "not_found", "message": "no profile has the identifier 'email:a@b.c'"}
    answer = http.get("/invalid")
    assert answer.status_code == 400
    assert answer.json() == {"code": "invalid_tag", "message": "invalid tag; nothing changed",
                             "errors": [{"path": "rule", "reason": "r"}]}  # fmt: skip


def _request(authorization: str | None) -> Request:
    headers = [(b"authorization", authorization.encode())] if authorization is not None else []
    return Request({"type": "http", "method": "GET", "path": "/", "headers": headers, "query_string": b""})


def test_keys_are_read_one_way() -> None:
    basic = "Basic " + base64.b64encode(b"wk_123:").decode()
    assert basic_username(_request(basic)) == "wk_123" and key_of(_request(basic)) == "wk_123"
    assert bearer(_request("Bearer rk_1 ")) == "rk_1" and key_of(_request("bearer rk_1")) == "rk_1"
    assert basic_username(_request(None)) is None and key_of(_request(None)) == ""
    assert bearer(_request(basic)) == ""
    with pytest.raises(BadCredentials):
        basic_username(_request("Basic !!"))
    assert key_of(_request("Basic !!")) == ""
