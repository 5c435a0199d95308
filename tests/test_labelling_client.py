"""The OpenAI-compatible client of concept labelling (ingest/jobs/labelling/client.py): the endpoint
from the environment and the reading of answers on plain values; requests, the disk cache and the
retries against the local chat-completions server of tests/test_labelling.py (no network)."""

from __future__ import annotations

import io
import json

import pytest

from ingest.jobs.labelling.client import (
    ChatClient,
    LabelError,
    LLMConfig,
    llm_config,
    parse_completion,
    parse_json_answer,
)
from ingest.jobs.labelling.prompts import label_messages
from neurflow.errors import NeurflowInputError
from tests.test_labelling import LLM, llm  # noqa: F401 (the local server fixture)


def test_endpoint_from_the_environment():
    cfg = llm_config({"NEURFLOW_LLM_BASE_URL": " http://h:1/v1 ", "NEURFLOW_LLM_MODEL": "m", "NEURFLOW_LLM_API_KEY": "sk-secret"})
    assert (cfg.base_url, cfg.model, cfg.api_key) == ("http://h:1/v1", "m", "sk-secret")
    assert cfg.url == "http://h:1/v1/chat/completions"
    assert LLMConfig("http://h/v1/chat/completions/", "m").url == "http://h/v1/chat/completions"
    assert "sk-secret" not in repr(cfg) and "api_key=set" in repr(cfg)
    assert llm_config({"NEURFLOW_LLM_BASE_URL": "http://h", "NEURFLOW_LLM_MODEL": "m"}, max_tokens=9).max_tokens == 9


@pytest.mark.parametrize("env, message", [
    ({}, "no LLM endpoint configured: set NEURFLOW_LLM_BASE_URL"),
    ({"NEURFLOW_LLM_BASE_URL": "ftp://h", "NEURFLOW_LLM_MODEL": "m"}, "is not an http(s) URL"),
    ({"NEURFLOW_LLM_BASE_URL": "http://h"}, "NEURFLOW_LLM_MODEL is not set"),
])  # fmt: skip
def test_a_missing_or_bad_endpoint_is_one_line(env, message):
    with pytest.raises(NeurflowInputError) as err:
        llm_config(env)
    assert message in str(err.value) and "\n" not in str(err.value) and "nothing was changed" in str(err.value)


def _completion(content, finish="stop") -> bytes:
    return json.dumps({"choices": [{"message": {"role": "assistant", "content": content}, "finish_reason": finish}]}).encode()


def test_parse_completion_reads_the_message_text():
    assert parse_completion(_completion("hello")) == "hello"
    assert parse_completion(_completion([{"type": "text", "text": "a"}, "x", {"text": "b"}])) == "ab"
    for raw, reason in ((_completion("cut", "length"), "truncated answer"), (_completion("  "), "empty answer"),
                        (b'{"choices": []}', "malformed chat-completions response"), (b"<html>", "malformed")):
        with pytest.raises(LabelError, match=reason):
            parse_completion(raw)


def test_parse_json_answer_takes_an_object_fenced_or_not():
    assert parse_json_answer('```json\n{"label": "x"}\n```') == {"label": "x"}
    assert parse_json_answer(' {"a": 1} ') == {"a": 1}
    with pytest.raises(LabelError, match="not an object"):
        parse_json_answer("[1]")
    with pytest.raises(LabelError, match="not valid JSON"):
        parse_json_answer('{"label": "cut sh')


def _png_url() -> str:
    import base64

    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (4, 4), 7).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def test_client_posts_caches_and_retries(llm, tmp_path):  # noqa: F811
    slept: list[float] = []
    cfg = LLMConfig(llm.base_url, LLM, api_key="k", timeout=5.0, backoff=0.01, max_retries=2)
    client = ChatClient(cfg, cache=tmp_path / "cache", sleep=slept.append)
    messages = label_messages([_png_url()], [], "shirt")
    llm.fail_first = 1  # one 429 first
    answer = client.complete(messages, parse_json_answer)
    assert answer["label"].startswith("Feature ") and answer["feature_evolution"] == "no match"
    assert client.stats == {"requests": 2, "cached": 0, "retries": 1} and len(slept) == 1
    body = llm.requests[-1]
    assert body["temperature"] == 0 and body["response_format"] == {"type": "json_object"} and body["max_tokens"] == 800
    again = ChatClient(cfg, cache=tmp_path / "cache").complete(messages, parse_json_answer)
    assert again == answer and len(llm.requests) == 2  # from the disk cache: no request
    assert list((tmp_path / "cache").rglob("*.json"))[0].stem == ChatClient.key(body)


def test_client_gives_up_after_its_retries(llm, tmp_path):  # noqa: F811
    llm.fail_first, llm.fail_status = 99, 503
    client = ChatClient(LLMConfig(llm.base_url, LLM, backoff=0.0, max_retries=1), sleep=lambda s: None)
    with pytest.raises(LabelError, match=r"gave up after 2 tries: HTTP 503"):
        client.complete(label_messages([_png_url()], [], None))
    llm.fail_status = 400
    with pytest.raises(LabelError, match=r"^HTTP 400"):  # not worth a retry
        client.complete(label_messages([_png_url()], [], None))
