"""``danmaku embed serve``'s modern routes, through real clients.

* ``/v1/embeddings`` with the official ``openai`` client (float, base64, its own
  default base64 decoding, errors as its typed exceptions);
* ``/tokenize`` against transformers' ``BertTokenizerFast`` offsets on real danmaku;
* ``/metrics`` through Prometheus' own text-format parser;
* the API key, ``/health``, ``/info``, the non-loopback warning.
"""

from __future__ import annotations

import asyncio
import base64

import numpy as np
import openai
import pytest
from aiohttp import ClientSession, ClientTimeout
from aiohttp.test_utils import TestServer
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from danmaku.cli.main import app as cli_app
from danmaku.embed.encoder import EncoderSettings
from danmaku.embed.models import load_encoder
from danmaku.embed.service import BatchPolicy, is_loopback, make_app
from danmaku.embed.serving import METRICS, Limits
from danmaku.embed.texts import read_phrases
from danmaku.text.tokenizer import strip_accents
from tests.conftest import SHARED_DATA
from tests.support.danmaku_sample import real_danmaku
from tests.support.embed_models import VOCAB, write_google_model

PHRASES = read_phrases(SHARED_DATA / "meme_phrases.txt")
TIMEOUT = ClientTimeout(total=60)
KEY = "sk-test-0123456789abcdef"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return write_google_model(tmp_path_factory.mktemp("model"), seed=5)


@pytest.fixture(scope="module")
def encoder(model_dir):
    return load_encoder(model_dir, EncoderSettings())[0]


def run(coro, timeout: float = 120):
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def _served(app, scenario):
    async with TestServer(app, host="127.0.0.1", port=0) as server, ClientSession(timeout=TIMEOUT) as s:
        return await scenario(server, s)


def test_openai_client_gets_the_vectors_of_encode(encoder):
    texts = PHRASES[:7] + ["我很可爱，请给我钱" * 10]  # the last one is truncated to max_seq_len

    async def scenario(server, s):
        client = openai.AsyncOpenAI(base_url=str(server.make_url("/v1")), api_key="unused", max_retries=0)
        floats = await client.embeddings.create(model="tiny", input=texts, encoding_format="float")
        b64 = await client.embeddings.create(model="tiny", input=texts, encoding_format="base64")
        default = await client.embeddings.create(model="tiny", input=texts)  # the client asks base64, decodes
        single = await client.embeddings.create(model="tiny", input=texts[0], dimensions=encoder.dim)
        listed = await client.models.list()
        async with s.post(server.make_url("/encode"), json={"id": 1, "texts": texts}) as r:
            encoded = np.array((await r.json())["result"], dtype=np.float32)
        await client.close()
        return floats, b64, default, single, listed, encoded

    floats, b64, default, single, listed, encoded = run(_served(make_app(encoder, model="tiny"), scenario))
    expected = encoder.encode(texts)
    np.testing.assert_allclose(encoded, expected, atol=1e-5)
    assert [d.index for d in floats.data] == list(range(len(texts)))
    # (a text batched with other texts may differ from itself alone in the last float bits)
    def rows(response) -> np.ndarray:
        return np.array([d.embedding for d in response.data], dtype=np.float32)

    np.testing.assert_allclose(rows(floats), encoded, atol=1e-6)
    raw = np.stack([np.frombuffer(base64.b64decode(d.embedding), dtype="<f4") for d in b64.data])
    np.testing.assert_allclose(raw, encoded, atol=1e-6)
    np.testing.assert_allclose(rows(default), raw, atol=1e-6)
    np.testing.assert_allclose(np.array(single.data[0].embedding, dtype=np.float32), expected[0], atol=1e-5)
    framed, truncated = encoder.ids_for_texts(texts)
    assert truncated == 1 and max(map(len, framed)) == encoder.settings.max_seq_len
    assert floats.usage.prompt_tokens == floats.usage.total_tokens == sum(map(len, framed))
    assert floats.model == "tiny" and floats.object == "list"
    assert [m.id for m in listed.data] == ["tiny"]


def test_openai_errors_are_typed_and_say_what_to_do(encoder):
    async def scenario(server, s):
        client = openai.AsyncOpenAI(base_url=str(server.make_url("/v1")), api_key="unused", max_retries=0)
        errors = {}
        calls = {
            "dimensions": dict(model="tiny", input="阿夸", dimensions=16),
            "model": dict(model="text-embedding-3-small", input="阿夸"),
            "empty": dict(model="tiny", input=""),
            "token_ids": dict(model="tiny", input=[[101, 102]]),
            "format": dict(model="tiny", input="阿夸", encoding_format="int8"),
        }
        for name, kwargs in calls.items():
            try:
                await client.embeddings.create(**kwargs)
            except openai.APIStatusError as err:
                errors[name] = err
        await client.close()
        return errors

    errors = run(_served(make_app(encoder, model="tiny"), scenario))
    dims = errors["dimensions"]
    assert isinstance(dims, openai.BadRequestError) and dims.status_code == 400
    assert dims.body["param"] == "dimensions" and dims.body["type"] == "invalid_request_error"
    assert "32 dimensions and cannot be shortened" in dims.body["message"]
    missing = errors["model"]
    assert isinstance(missing, openai.NotFoundError) and missing.body["code"] == "model_not_found"
    assert 'serves "tiny"' in missing.body["message"]
    assert isinstance(errors["empty"], openai.BadRequestError) and errors["empty"].body["param"] == "input"
    assert "check_embedding_ctx_length=False" in errors["token_ids"].body["message"]
    assert errors["format"].body["param"] == "encoding_format"


def test_api_key_guards_every_route_but_health(encoder):
    routes = [("POST", "/encode", {"id": 1, "texts": ["阿夸"]}), ("POST", "/tokenize", {"inputs": "阿夸"}),
              ("GET", "/info", None), ("GET", "/status", None), ("GET", "/metrics", None),
              ("GET", "/v1/models", None)]

    async def scenario(server, s):
        got = {}
        async with s.get(server.make_url("/health")) as r:
            got["health"] = (r.status, await r.json())
        for method, path, body in routes:
            for label, headers in (("none", {}), ("wrong", {"Authorization": "Bearer nope"}),
                                   ("right", {"Authorization": f"Bearer {KEY}"})):
                async with s.request(method, server.make_url(path), json=body, headers=headers) as r:
                    got[path, label] = (r.status, r.headers.get("WWW-Authenticate"), await r.read())
        good = openai.AsyncOpenAI(base_url=str(server.make_url("/v1")), api_key=KEY, max_retries=0)
        bad = openai.AsyncOpenAI(base_url=str(server.make_url("/v1")), api_key="sk-wrong", max_retries=0)
        got["openai"] = await good.embeddings.create(model="tiny", input=["阿夸"])
        try:
            await bad.embeddings.create(model="tiny", input=["阿夸"])
        except openai.AuthenticationError as err:
            got["openai_bad"] = err
        await good.close()
        await bad.close()
        return got

    got = run(_served(make_app(encoder, model="tiny", api_key=KEY), scenario))
    assert got["health"] == (200, {"status": "ok"})
    for _, path, _ in routes:
        assert got[path, "none"][:2] == (401, "Bearer"), path
        assert got[path, "wrong"][0] == 401, path
        assert got[path, "right"][0] == 200, path
    assert b"Authorization: Bearer KEY" in got["/encode", "none"][2]
    assert len(got["openai"].data[0].embedding) == 32
    assert got["openai_bad"].status_code == 401 and got["openai_bad"].body["code"] == "invalid_api_key"


def test_tokenize_offsets_agree_with_transformers_on_real_danmaku(encoder):
    from transformers import BertTokenizerFast

    texts = real_danmaku(400, seed=11) + ["ÀÉ晚安 ΣΑΣ", "草" * 40, "阿夸\u200bmea"]

    async def scenario(server, s):
        async with s.post(server.make_url("/tokenize"), json={"inputs": texts}) as r:
            assert r.status == 200, await r.text()
            many = await r.json()
        body = {"inputs": "阿夸", "add_special_tokens": False}
        async with s.post(server.make_url("/tokenize"), json=body) as r:
            one = await r.json()
        return many, one

    many, one = run(_served(make_app(encoder, limits=Limits(max_texts=1000)), scenario))
    reference = BertTokenizerFast(str(VOCAB), do_lower_case=True)
    framed, _ = encoder.ids_for_texts(texts)
    compared = 0
    for text, tokens, ids in zip(texts, many, framed, strict=True):
        assert [t["id"] for t in tokens] == ids  # exactly what the model sees, truncation included
        assert tokens[0]["special"] and tokens[-1]["special"] and tokens[0]["start"] is None
        prepared = strip_accents(text.lower())  # same length as text but for rare characters
        for t in tokens[1:-1]:  # every piece covers the characters it came from
            covered = prepared[t["start"]:t["stop"]] if len(prepared) == len(text) else strip_accents(
                text[t["start"]:t["stop"]].lower())
            assert t["text"] == "[UNK]" or covered == t["text"].removeprefix("##"), (text, t)
        theirs = reference(text, return_offsets_mapping=True, add_special_tokens=False, truncation=True,
                           max_length=encoder.settings.max_seq_len - 2)
        if theirs["input_ids"] == ids[1:-1]:  # Google-exact and HF agree on these tokens: compare offsets
            assert [(t["start"], t["stop"]) for t in tokens[1:-1]] == [tuple(o) for o in
                                                                      theirs["offset_mapping"]], text
            compared += 1
    assert compared > 350
    assert len(many[-2]) == encoder.settings.max_seq_len  # 40 x 草 cut to 30 pieces + [CLS] + [SEP]
    vocab = encoder.tokenizer.vocab
    assert one == [[{"id": vocab["阿"], "text": "阿", "special": False, "start": 0, "stop": 1},
                    {"id": vocab["夸"], "text": "夸", "special": False, "start": 1, "stop": 2}]]


def _samples(families, name: str) -> dict[tuple, float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in families if f.name == name for s in f.samples}


def test_metrics_parse_and_count_what_happened(encoder):
    requests = [PHRASES[i:i + 1 + i % 5] for i in range(0, 60, 6)]

    async def scenario(server, s):
        client = openai.AsyncOpenAI(base_url=str(server.make_url("/v1")), api_key="unused", max_retries=0)
        usages = await asyncio.gather(*(client.embeddings.create(model="tiny", input=t) for t in requests))
        await client.close()
        async with s.post(server.make_url("/encode"), json={"id": 1, "texts": []}) as r:
            assert r.status == 400
        async with s.get(server.make_url("/metrics")) as r:
            content_type = r.headers["Content-Type"]
            text = await r.text()
        async with s.get(server.make_url("/info")) as r:
            info = await r.json()
        return [u.usage.total_tokens for u in usages], content_type, text, info

    app = make_app(encoder, model="tiny", policy=BatchPolicy(max_wait_ms=30))
    tokens, content_type, text, info = run(_served(app, scenario))
    assert content_type.startswith("text/plain; version=")
    families = list(text_string_to_metric_families(text))
    names = {f.name for f in families}
    for name in ("danmaku_embed_requests", "danmaku_embed_texts", "danmaku_embed_tokens",
                 "danmaku_embed_batch_texts", "danmaku_embed_batch_tokens", "danmaku_embed_queue_tokens",
                 "danmaku_embed_request_duration_seconds", "danmaku_embed_batch_duration_seconds",
                 "danmaku_embed_rejected", "danmaku_embed_dropped", "danmaku_embed_model_info"):
        assert name in names, name
    value = {f.name: f.samples for f in families}
    total = lambda name: next(s.value for s in value[name] if s.name == f"{name}_total")  # noqa: E731
    assert total("danmaku_embed_texts") == sum(map(len, requests))  # the start-up warm-up is not counted
    assert total("danmaku_embed_tokens") == sum(tokens)
    batches = total("danmaku_embed_batches")
    hist = _samples(families, "danmaku_embed_batch_texts")
    assert hist[("danmaku_embed_batch_texts_count", ())] == batches
    assert hist[("danmaku_embed_batch_texts_sum", ())] == sum(map(len, requests))
    assert batches < len(requests)  # concurrent requests shared model calls
    requests_by = _samples(families, "danmaku_embed_requests")
    ok = ("danmaku_embed_requests_total", (("route", "/v1/embeddings"), ("status", "200")))
    assert requests_by[ok] == len(requests)
    bad = ("danmaku_embed_requests_total", (("route", "/encode"), ("status", "400")))
    assert requests_by[bad] == 1
    rejected = _samples(families, "danmaku_embed_rejected")
    assert rejected[("danmaku_embed_rejected_total", (("reason", "bad_request"),))] == 1
    latency = _samples(families, "danmaku_embed_request_duration_seconds")
    count = ("danmaku_embed_request_duration_seconds_count", (("route", "/v1/embeddings"),))
    assert latency[count] == len(requests)
    assert _samples(families, "danmaku_embed_queue_tokens")[("danmaku_embed_queue_tokens", ())] == 0
    model = _samples(families, "danmaku_embed_model_info")
    assert any(dict(labels).get("pooling") == "REDUCE_MEAN" and dict(labels).get("dim") == "32"
               for _, labels in model)
    assert info["model"] == "tiny" and info["dim"] == 32 and info["auth"] is False
    assert info["batching"]["max_batch_tokens"] == 2048 and "POST /v1/embeddings" in info["routes"]


def test_two_apps_in_one_process_keep_their_own_metrics(encoder):
    first, second = make_app(encoder, model="a"), make_app(encoder, model="b")
    text_a, text_b = first[METRICS].exposition().decode(), second[METRICS].exposition().decode()
    assert 'model="a"' in text_a and 'model="b"' not in text_a and 'model="b"' in text_b


def test_loopback_detection_and_the_cli_warning(model_dir, encoder):
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2", "[::1]"):
        assert is_loopback(host), host
    for host in ("0.0.0.0", "::", "192.168.1.5", "example.org", ""):
        assert not is_loopback(host), host
    # 192.0.2.1 (TEST-NET-1) is not an address of this machine: the bind fails after the warning,
    # so no port is ever opened by the test.
    runner = CliRunner()
    for bad in (" ", "天王盖地虎", "two words"):  # a key travels in an ASCII header: refused before serving
        with pytest.raises(ValueError, match="printable ASCII"):
            make_app(encoder, api_key=bad)
    result = runner.invoke(cli_app, ["embed", "serve", "-m", str(model_dir), "--api-key", "天王盖地虎"])
    assert result.exit_code == 1 and "printable ASCII" in " ".join(result.output.split())
    result = runner.invoke(cli_app, ["embed", "serve", "-m", str(model_dir), "--host", "192.0.2.1", "--port",
                                     "0"], terminal_width=200)
    output = " ".join(result.output.split())
    assert result.exit_code == 1
    assert "warning: binding 192.0.2.1 without an API key" in output and "DANMAKU_API_KEY" in output
    assert "cannot serve on 192.0.2.1:0" in output
    result = runner.invoke(cli_app, ["embed", "serve", "-m", str(model_dir), "--host", "192.0.2.1", "--port",
                                     "0"], env={"DANMAKU_API_KEY": KEY}, terminal_width=200)
    assert "warning" not in result.output and result.exit_code == 1
