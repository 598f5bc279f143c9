"""``danmaku embed serve``: concurrent clients, limits, JSON errors, graceful shutdown.

Everything binds 127.0.0.1 on a free port and every wait is bounded.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import numpy as np
import pytest
from aiohttp import ClientSession, ClientTimeout
from aiohttp.test_utils import TestServer

from danmaku.embed.encoder import EncoderSettings
from danmaku.embed.models import load_encoder
from danmaku.embed.service import BatchPolicy, Limits, make_app
from danmaku.embed.texts import read_phrases
from tests.conftest import SHARED_DATA
from tests.support.embed_models import write_google_model
from tests.support.serve_process import ServeProcess

REPO = Path(__file__).resolve().parents[2]
PHRASES = read_phrases(SHARED_DATA / "meme_phrases.txt")
TIMEOUT = ClientTimeout(total=60)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return write_google_model(tmp_path_factory.mktemp("model"), seed=3)


@pytest.fixture(scope="module")
def encoder(model_dir):
    return load_encoder(model_dir, EncoderSettings())[0]


def run(coro, timeout: float = 120):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def test_concurrent_clients_each_get_their_own_vectors(encoder):
    # 24 clients, 1..8 different texts each, sent at once; the batcher must merge them
    # (batches < requests) and still route every row back to the client that sent it.
    requests = {i: PHRASES[(i * 5) % 80 : (i * 5) % 80 + 1 + i % 8] for i in range(24)}

    async def scenario():
        app = make_app(encoder, model="tiny", policy=BatchPolicy(max_batch_texts=64, max_wait_ms=50))
        async with TestServer(app, host="127.0.0.1", port=0) as server, ClientSession(timeout=TIMEOUT) as s:
            async def client(i: int, texts: list[str]):
                async with s.post(server.make_url("/encode"), json={"id": i, "texts": texts}) as r:
                    assert r.status == 200
                    return await r.json()

            answers = await asyncio.gather(*(client(i, t) for i, t in requests.items()))
            async with s.get(server.make_url("/status")) as r:
                return answers, await r.json()

    answers, status = run(scenario())
    for (i, texts), answer in zip(requests.items(), answers, strict=True):
        assert answer["id"] == i
        np.testing.assert_allclose(np.array(answer["result"]), encoder.encode(texts), atol=1e-5)
    load = status["load"]
    assert load["requests"] == 24 and load["texts"] == sum(map(len, requests.values()))
    assert load["batches"] < 24
    assert load["largest_batch"] <= 64 + 8
    assert load["queued_texts"] == 0
    assert status["pooling"] == "REDUCE_MEAN" and status["pooling_layer"] == [-1] and status["dim"] == 32


def test_limits_and_bad_requests_get_json_errors(encoder):
    limits = Limits(max_texts=4, max_text_chars=20, max_body_bytes=2048)
    cases = [
        ({"id": 1, "texts": ["a", "b", "c", "d", "e"]}, 413, "5 texts in one request; the limit is 4"),
        ({"id": 2, "texts": ["草" * 21]}, 413, "texts[0] is 21 long; the limit is 20"),
        (b'{"id": 3, "texts": ["' + b"x" * 3000 + b'"]}', 413, "larger than 2048 bytes"),
        (b"{not json", 400, "body is not JSON"),
        ({"id": 5}, 400, '"texts" must be a non-empty list'),
        ({"id": 6, "texts": []}, 400, '"texts" must be a non-empty list'),
        ({"id": 7, "texts": ["ok", "  "]}, 400, "texts[1] must be a non-empty string"),
        ({"id": 8, "texts": ["ok"], "is_tokenized": "yes"}, 400, '"is_tokenized" must be true or false'),
        ({"id": 9, "texts": ["ok"], "is_tokenized": True}, 400, "texts[0] must be a non-empty list"),
        ([1, 2], 400, "must be a JSON object"),
    ]

    async def scenario():
        app = make_app(encoder, limits=limits)
        async with TestServer(app, host="127.0.0.1", port=0) as server, ClientSession(timeout=TIMEOUT) as s:
            got = []
            for body, _, _ in cases:
                kwargs = {"data": body} if isinstance(body, bytes) else {"json": body}
                async with s.post(server.make_url("/encode"), **kwargs) as r:
                    got.append((r.status, await r.json()))
            async with s.get(server.make_url("/nope")) as r:
                got.append((r.status, await r.json()))
            async with s.post(server.make_url("/encode"), json={"id": 10, "texts": ["阿夸"]}) as r:
                good = (r.status, await r.json())
            async with s.get(server.make_url("/status")) as r:
                return got, good, await r.json()

    got, good, status = run(scenario())
    for (status_code, body), (_, expected_status, message) in zip(got, cases, strict=False):
        assert status_code == expected_status, body
        assert message in body["error"], body
    assert got[-1][0] == 404 and "error" in got[-1][1]
    assert good[0] == 200 and len(good[1]["result"]) == 1  # still serving after all that
    assert status["load"]["rejected"] == len(cases) + 1
    assert status["limits"] == {"max_texts": 4, "max_text_chars": 20, "max_body_bytes": 2048}


def test_pretokenized_input_equals_text_input(encoder):
    tokens = encoder.tokenizer.tokenize_batch(["我很可爱，请给我钱", "阿夸"])

    async def scenario():
        app = make_app(encoder)
        async with TestServer(app, host="127.0.0.1", port=0) as server, ClientSession(timeout=TIMEOUT) as s:
            body = {"id": "t", "texts": tokens + [["阿", "no-such-token"]], "is_tokenized": True}
            async with s.post(server.make_url("/encode"), json=body) as r:
                return await r.json()

    answer = run(scenario())
    vocab = encoder.tokenizer.vocab
    unknown = encoder.encode_ids([[vocab["[CLS]"], vocab["阿"], vocab["[UNK]"], vocab["[SEP]"]]])
    expected = np.concatenate([encoder.encode(["我很可爱，请给我钱", "阿夸"]), unknown])
    np.testing.assert_allclose(np.array(answer["result"]), expected, atol=1e-5)


def test_serve_binds_localhost_and_finishes_requests_in_flight_on_sigterm(model_dir):
    # The batcher holds the request for 1.5 s; SIGTERM arrives meanwhile; the client
    # must still get its vectors and the process must exit 0.
    server = ServeProcess(model_dir, "--batch-wait-ms", "1500")
    proc = server.proc
    try:
        url = server.url()
        assert url.startswith("http://127.0.0.1:")

        async def scenario():
            async with ClientSession(timeout=TIMEOUT) as s:
                pending = asyncio.ensure_future(s.post(f"{url}/encode", json={"id": 1, "texts": ["阿夸"]}))
                for _ in range(200):  # until the server has the request queued
                    async with s.get(f"{url}/status") as r:
                        if (await r.json())["load"]["requests"] == 1:
                            break
                    await asyncio.sleep(0.02)
                proc.send_signal(signal.SIGTERM)
                response = await pending
                return response.status, await response.json()

        status, body = run(scenario(), timeout=60)
        assert status == 200 and body["id"] == 1 and len(body["result"][0]) == 32
        assert proc.wait(timeout=60) == 0
        server.reader.join(timeout=10)
        assert "stopped" in server.output
    finally:
        server.kill()
