"""The ingest baseline of `bench_ingest.py`: a bare FastAPI app that only verifies the webhook's HMAC and
parses its JSON, then answers 202. Nothing else: no dedup, no metrics, no intake.

    BENCH_WEBHOOK_SECRET=... python -m uvicorn bench.ingest_bare:app --port 8099
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

SECRET = os.environ.get("BENCH_WEBHOOK_SECRET", "bench-webhook-secret").encode()

app = FastAPI()


@app.post("/webhooks/buildkite")
async def webhook(request: Request) -> JSONResponse:
    body = await request.body()
    parts = dict(
        part.split("=", 1)
        for part in request.headers.get("x-buildkite-signature", "").split(",")
        if "=" in part
    )
    expected = hmac.new(SECRET, parts.get("timestamp", "").encode() + b"." + body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, parts.get("signature", "")):
        return JSONResponse({"error": "bad signature"}, status_code=401)
    try:
        event = json.loads(body)
    except ValueError:
        return JSONResponse({"error": "bad json"}, status_code=400)
    return JSONResponse({"result": "accepted", "event": event.get("event")}, status_code=202)
