"""OpenAI's embeddings API on ``danmaku embed serve``: ``POST /v1/embeddings``, ``GET /v1/models``.

The request and response follow OpenAI's reference, so the official ``openai``
client (and anything built on it) works when pointed at the service
(``OpenAI(base_url="http://host:8125/v1", api_key=...)``):

* ``input``: a string or a list of strings (at most ``--max-texts``). Token-id
  arrays are refused: they would be ids of OpenAI's tokenizer, not this model's
  (LangChain's ``OpenAIEmbeddings`` sends them unless ``check_embedding_ctx_length=False``).
* ``model``: must be the served name (``GET /v1/models``); anything else is a
  404 ``model_not_found``, as OpenAI answers, so a client aimed at the wrong server
  finds out instead of getting another model's vectors.
* ``encoding_format``: ``float`` (lists) or ``base64`` (little-endian float32
  bytes, what the ``openai`` client asks for by default and decodes itself).
* ``dimensions``: accepted only when equal to the model's width -- BERT vectors
  cannot be shortened the way OpenAI's Matryoshka-trained models can.
* ``usage``: the tokens the model saw, ``[CLS]`` and ``[SEP]`` included, after truncation.

The vectors are exactly ``POST /encode``'s (same pooling, layers, ``max_seq_len``).
"""

from __future__ import annotations

import base64
import time

import numpy as np
from aiohttp import web

from danmaku.embed.serving import (
    ACCESS,
    BATCHER,
    ENCODER,
    LIMITS,
    RequestError,
    check_texts,
    encode,
    read_json,
)

ENCODING_FORMATS = ("float", "base64")
STARTED: web.AppKey[float] = web.AppKey("openai_started", float)


def _inputs(payload: dict, limits) -> list[str]:
    if "input" not in payload:
        raise RequestError(400, "you must provide an input: a string or a list of strings", param="input")
    value = payload["input"]
    if isinstance(value, str):
        value = [value]
    def token_ids(v) -> bool:
        return isinstance(v, int) or (isinstance(v, list) and all(isinstance(t, int) for t in v))

    if isinstance(value, list) and value and all(token_ids(v) for v in value):
        raise RequestError(400, "token-id input is not supported: send the texts as strings (token ids of "
                           "another tokenizer mean nothing to this model; LangChain: "
                           "OpenAIEmbeddings(check_embedding_ctx_length=False))", param="input")
    return check_texts(value, limits, "input")


def _vector(vector: np.ndarray, fmt: str) -> list[float] | str:
    if fmt == "base64":
        return base64.b64encode(np.ascontiguousarray(vector, dtype="<f4").tobytes()).decode("ascii")
    return vector.tolist()


async def embeddings(request: web.Request) -> web.Response:
    app = request.app
    app[BATCHER].check_capacity()
    payload = await read_json(request)
    if not isinstance(payload, dict):
        raise RequestError(400, "the body must be a JSON object")
    served = app[ACCESS].model_name
    model = payload.get("model")
    if not isinstance(model, str) or not model:
        raise RequestError(400, f'you must provide a model parameter (this server serves "{served}")',
                           param="model")
    if model != served:
        raise RequestError(404, f'the model "{model}" does not exist here; this server serves "{served}"',
                           param="model", code="model_not_found")
    fmt = payload.get("encoding_format") or "float"
    if fmt not in ENCODING_FORMATS:
        raise RequestError(400, f"encoding_format must be one of {', '.join(ENCODING_FORMATS)}, got {fmt!r}",
                           param="encoding_format")
    encoder = app[ENCODER]
    dimensions = payload.get("dimensions")
    if dimensions is not None and (isinstance(dimensions, bool) or dimensions != encoder.dim):
        raise RequestError(400, f"this model's embeddings have {encoder.dim} dimensions and cannot be "
                           f"shortened; leave out dimensions or pass {encoder.dim} (got {dimensions!r})",
                           param="dimensions")
    if encoder.settings.pooling.token_level:
        raise RequestError(400, "the server runs --pooling NONE (one vector per token); /v1/embeddings needs "
                           "one vector per input", param="input")
    texts = _inputs(payload, app[LIMITS])
    vectors, tokens = await encode(request, texts)
    data = [{"object": "embedding", "index": i, "embedding": _vector(v, fmt)} for i, v in enumerate(vectors)]
    return web.json_response({"object": "list", "data": data, "model": served,
                              "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})


async def models(request: web.Request) -> web.Response:
    app = request.app
    entry = {"id": app[ACCESS].model_name, "object": "model", "created": int(app[STARTED]),
             "owned_by": "danmaku"}
    return web.json_response({"object": "list", "data": [entry]})


def add_routes(app: web.Application) -> None:
    app[STARTED] = time.time()
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_get("/v1/models", models)


def error_body(err: RequestError) -> dict:
    """OpenAI's error object (what ``openai.APIStatusError.body`` holds)."""
    kind = {401: "invalid_request_error", 404: "invalid_request_error", 503: "server_error",
            500: "server_error"}.get(err.status, "invalid_request_error")
    return {"error": {"message": str(err), "type": kind, "param": err.param, "code": err.code}}
