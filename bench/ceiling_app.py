"""The HTTP ceiling: a bare FastAPI endpoint that only validates the same batches with the same models."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import FastAPI, Request, Response
from pydantic import TypeAdapter

from domain.segment import SegmentCall

app = FastAPI()
batch_adapter: TypeAdapter[list[SegmentCall]] = TypeAdapter(list[SegmentCall])


@app.post("/v1/batch")
async def batch(request: Request) -> Response:
    body: dict[str, Any] = orjson.loads(await request.body())
    batch_adapter.validate_python(body["batch"])
    return Response(b'{"success":true}', media_type="application/json")
