"""The OpenAI-compatible chat-completions client of concept labelling: the endpoint from the
environment (`llm_config`), and `ChatClient`, which posts a request with a disk cache (key: sha256
of the request body, so unchanged groups are not asked again) and retries with exponential backoff
on 429, 5xx and timeouts; the answer's text (`parse_completion`) and its JSON object
(`parse_json_answer`).  Only the standard library is used (urllib).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import random
import re
import socket
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from neurflow.errors import NeurflowInputError, one_line

ENV_BASE_URL = "NEURFLOW_LLM_BASE_URL"
ENV_MODEL = "NEURFLOW_LLM_MODEL"
ENV_API_KEY = "NEURFLOW_LLM_API_KEY"
RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


class LabelError(RuntimeError):
    """A request or answer that cannot give a label (logged; the group stays unlabelled)."""


# --------------------------------------------------------------------------- configuration
@dataclass(frozen=True)
class LLMConfig:
    base_url: str
    model: str
    api_key: str | None = None
    timeout: float = 120.0
    max_retries: int = 5
    backoff: float = 1.0  # seconds before the first retry; doubled each time (plus jitter)
    max_backoff: float = 60.0
    max_tokens: int = 800
    json_mode: bool = True  # send response_format {"type": "json_object"}

    @property
    def url(self) -> str:
        base = self.base_url.rstrip("/")
        return base if base.endswith("/chat/completions") else base + "/chat/completions"

    def __repr__(self) -> str:  # never print the key
        return f"LLMConfig(base_url={self.base_url!r}, model={self.model!r}, api_key={'set' if self.api_key else None})"


def llm_config(env: dict[str, str] | None = None, **overrides: Any) -> LLMConfig:
    """The endpoint from the environment; `NeurflowInputError` (one line) when none is configured."""
    env = os.environ if env is None else env
    base, model = (env.get(ENV_BASE_URL) or "").strip(), (env.get(ENV_MODEL) or "").strip()
    if not base:
        raise NeurflowInputError(
            f"no LLM endpoint configured: set {ENV_BASE_URL} (e.g. http://localhost:11434/v1) and {ENV_MODEL}; nothing was changed"
        )
    if not base.startswith(("http://", "https://")):
        raise NeurflowInputError(f"{ENV_BASE_URL}={base!r} is not an http(s) URL; nothing was changed")
    if not model:
        raise NeurflowInputError(f"{ENV_MODEL} is not set: name the multimodal model of {base}; nothing was changed")
    return LLMConfig(base, model, (env.get(ENV_API_KEY) or "").strip() or None, **overrides)


# --------------------------------------------------------------------------- the client
class ChatClient:
    """POST chat-completions requests with a disk cache, retries and backoff."""

    def __init__(self, cfg: LLMConfig, cache: str | Path | None = None, sleep: Callable[[float], None] = time.sleep):
        self.cfg = cfg
        self.cache = Path(cache) if cache is not None else None
        self.sleep = sleep
        self.stats = {"requests": 0, "cached": 0, "retries": 0}
        self._lock = threading.Lock()

    def _count(self, key: str) -> None:
        with self._lock:
            self.stats[key] += 1

    @staticmethod
    def key(body: dict[str, Any]) -> str:
        return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()

    def _cache_path(self, key: str) -> Path | None:
        return None if self.cache is None else self.cache / key[:2] / f"{key}.json"

    def complete(self, messages: list[dict[str, Any]], validate: Callable[[str], Any] | None = None) -> Any:
        """The assistant's answer to `messages`, passed through `validate` (default: the text).

        Only an answer that `validate` accepts is cached; `LabelError` when there is none to trust."""
        validate = validate or (lambda text: text)
        body: dict[str, Any] = {"model": self.cfg.model, "messages": messages, "temperature": 0,
                                "max_tokens": self.cfg.max_tokens}  # fmt: skip
        if self.cfg.json_mode:
            body["response_format"] = {"type": "json_object"}
        key = self.key(body)
        path = self._cache_path(key)
        if path is not None and path.is_file():
            try:
                result = validate(json.loads(path.read_text())["content"])
                self._count("cached")
                return result
            except (ValueError, KeyError, OSError, LabelError):
                pass  # a broken cache entry is asked again
        text = self._post(body)
        result = validate(text)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
            tmp.write_text(json.dumps({"model": self.cfg.model, "content": text}))
            tmp.replace(path)
        return result

    def _post(self, body: dict[str, Any]) -> str:
        data = json.dumps(body).encode()
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.cfg.api_key:
            headers["Authorization"] = f"Bearer {self.cfg.api_key}"
        last = ""
        for attempt in range(self.cfg.max_retries + 1):
            if attempt:
                self._count("retries")
            self._count("requests")
            retry_after = None
            try:
                req = urllib.request.Request(self.cfg.url, data=data, headers=headers, method="POST")
                with urllib.request.urlopen(req, timeout=self.cfg.timeout) as resp:
                    raw = resp.read()
                return parse_completion(raw)
            except urllib.error.HTTPError as exc:
                detail = one_line(exc.read()[:300].decode("utf-8", "replace"), 200)
                last = f"HTTP {exc.code}" + (f": {detail}" if detail else "")
                if exc.code not in RETRY_STATUS:
                    raise LabelError(last) from None
                retry_after = _retry_after(exc.headers.get("Retry-After"))
            except (TimeoutError, socket.timeout) as exc:
                last = f"timeout after {self.cfg.timeout:g} s ({type(exc).__name__})"
            except urllib.error.URLError as exc:
                if isinstance(exc.reason, (TimeoutError, socket.timeout)):
                    last = f"timeout after {self.cfg.timeout:g} s"
                else:
                    last = f"cannot reach {self.cfg.url}: {one_line(exc.reason, 200)}"
            except (ConnectionError, http_client_errors()) as exc:
                last = f"connection error: {type(exc).__name__}"
            if attempt < self.cfg.max_retries:
                delay = min(self.cfg.max_backoff, self.cfg.backoff * 2**attempt) * (1 + 0.25 * random.random())
                self.sleep(max(delay, retry_after or 0.0))
        raise LabelError(f"gave up after {self.cfg.max_retries + 1} tries: {last}")


def http_client_errors() -> type[BaseException]:
    return http.client.HTTPException


def _retry_after(value: str | None) -> float | None:
    try:
        return min(float(value), 120.0) if value else None
    except ValueError:
        return None


def parse_completion(raw: bytes) -> str:
    """The message text of a chat-completions response; `LabelError` for a malformed or truncated one."""
    try:
        doc = json.loads(raw)
        choice = doc["choices"][0]
        content = choice["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        raise LabelError(f"malformed chat-completions response: {one_line(raw[:200].decode('utf-8', 'replace'), 200)!r}") from None
    if choice.get("finish_reason") == "length":
        raise LabelError("truncated answer (finish_reason = length): raise max_tokens")
    if isinstance(content, list):  # some servers answer with content parts
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    if not isinstance(content, str) or not content.strip():
        raise LabelError("empty answer")
    return content


def parse_json_answer(text: str) -> dict[str, Any]:
    """The JSON object of an answer (a ```json fence is allowed); `LabelError` otherwise."""
    s = text.strip()
    fence = re.match(r"^```(?:json)?\s*(.*?)\s*```$", s, re.S)
    if fence:
        s = fence.group(1)
    try:
        doc = json.loads(s)
    except ValueError:
        raise LabelError(f"answer is not valid JSON (truncated?): {one_line(text[-120:], 200)!r}") from None
    if not isinstance(doc, dict):
        raise LabelError("answer is JSON but not an object")
    return doc
