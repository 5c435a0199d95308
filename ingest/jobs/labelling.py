"""Automatic concept labelling (spec §10) with a multimodal LLM behind an OpenAI-compatible
chat-completions endpoint (hosted APIs, vLLM, Ollama, llama.cpp server, ...).

Configuration (environment):

- ``NEURFLOW_LLM_BASE_URL``: e.g. ``https://api.openai.com/v1`` or ``http://localhost:11434/v1``
  (``/chat/completions`` is appended);
- ``NEURFLOW_LLM_MODEL``: the model name the server knows;
- ``NEURFLOW_LLM_API_KEY``: sent as ``Authorization: Bearer ...`` when set (local servers need none).

For every group of a stored complete circuit: the group's representative crops (PNG thumbnails
of the artifact folder, as data URLs) and those of its top-2 lower groups by ``GROUP_FEEDS``
weight are sent with a request for the common feature of each group, the feature evolution and
a one-to-two sentence label, as JSON.  Then the paper's check: the label with a shuffled mix of
the group's crops and as many crops of other groups; ``label_score`` = share of the group's
crops the model picks.  Label, ``label_source = llm:<model>`` and the score are written together
or not at all: a failed, malformed or truncated answer leaves the group as it was, with the
reason logged.

Requests are cached on disk (key: sha256 of the request body), so unchanged groups are not
relabelled; retried with exponential backoff on 429, 5xx and timeouts; run concurrently in a
thread pool.  Only the standard library is used (urllib).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import random
import re
import socket
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ingest.queries.jobs import Q_LABEL_GROUPS
from neurflow.errors import NeurflowInputError, one_line

log = logging.getLogger("neurflow.labelling")

ENV_BASE_URL = "NEURFLOW_LLM_BASE_URL"
ENV_MODEL = "NEURFLOW_LLM_MODEL"
ENV_API_KEY = "NEURFLOW_LLM_API_KEY"
MANUAL = "manual"
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
    import http.client

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


# --------------------------------------------------------------------------- prompts
def data_url(path: str | Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _text(t: str) -> dict[str, Any]:
    return {"type": "text", "text": t}


def _image(url: str) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url}}


SYSTEM = (
    "You label the features that groups of neurons of an image classifier detect. Each group is shown by "
    "image crops that activate it most. Answer with one JSON object only."
)


def label_messages(group_images: list[str], lower: list[list[str]], class_name: str | None) -> list[dict[str, Any]]:
    """The labelling request: group 1 (the upper group) and its lower groups, crops as data URLs."""
    parts: list[dict[str, Any]] = [_text(
        ("The model's class is '%s'. " % class_name if class_name else "")
        + "Group 1 is a group of neurons; groups 2.. are the lower-layer groups that feed it most. "
        "For each group, find the common visual feature of its crops. Then say which lower features "
        "build up the feature of group 1 ('feature evolution'), or 'no match' if none does. Finally "
        "give group 1 a label of one or two sentences."
    )]
    parts.append(_text("Group 1:"))
    parts += [_image(u) for u in group_images]
    for i, urls in enumerate(lower, start=2):
        parts.append(_text(f"Group {i}:"))
        parts += [_image(u) for u in urls]
    parts.append(_text(
        'Answer as JSON: {"common_features": {"group 1": "...", "group 2": "...", ...}, '
        '"feature_evolution": "...", "label": "one or two sentences"}'
    ))
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": parts}]


def check_messages(label: str, images: list[str]) -> list[dict[str, Any]]:
    """The check: which of the numbered crops show the labelled feature."""
    parts: list[dict[str, Any]] = [_text(
        f'A group of neurons is labelled: "{label}". Below are {len(images)} numbered image crops. '
        "Which of them show the feature the label describes?"
    )]
    for i, u in enumerate(images, start=1):
        parts.append(_text(f"Image {i}:"))
        parts.append(_image(u))
    parts.append(_text('Answer as JSON: {"matching": [numbers of the matching images]}'))
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": parts}]


def parse_label(doc: dict[str, Any]) -> dict[str, Any]:
    label = doc.get("label")
    if not isinstance(label, str) or not label.strip():
        raise LabelError("answer has no 'label' text")
    label = " ".join(label.split())
    if len(label) > 600:
        raise LabelError(f"label is {len(label)} characters long, not one or two sentences")
    evolution = doc.get("feature_evolution")
    return {"label": label, "feature_evolution": evolution if isinstance(evolution, str) else None,
            "common_features": doc.get("common_features")}  # fmt: skip


def parse_matching(doc: dict[str, Any], n: int) -> set[int]:
    picked = doc.get("matching")
    if not isinstance(picked, list) or not all(isinstance(x, int) and not isinstance(x, bool) for x in picked):
        raise LabelError("check answer has no 'matching' list of image numbers")
    return {x for x in picked if 1 <= x <= n}


# --------------------------------------------------------------------------- store reads
@dataclass
class GroupInfo:
    uid: str
    circuit: str
    class_index: int
    class_name: str | None
    layer: str
    depth: int
    label: str | None
    label_source: str | None
    thumbnails: list[str]
    lower: list[str]  # lower groups, strongest GROUP_FEEDS first


def read_label_groups(store, model: str, classes: list[int], params: str | None = None) -> list[GroupInfo]:
    rows = store.run(Q_LABEL_GROUPS, {"model": model, "classes": list(classes), "params": params})
    out = []
    for r in rows:
        thumbs = list(dict.fromkeys(t for t in r["thumbnails"] if t))
        out.append(GroupInfo(r["uid"], r["circuit"], r["class_index"], r["class_name"], r["layer"], r["depth"],
                             r["label"], r["label_source"], thumbs, [u for u in r["lower"] if u]))  # fmt: skip
    return out


# --------------------------------------------------------------------------- labelling
@dataclass
class LabelResult:
    uid: str
    label: str | None = None
    label_source: str | None = None
    label_score: float | None = None
    feature_evolution: str | None = None
    error: str | None = None
    skipped: str | None = None


@dataclass
class LabelReport:
    results: list[LabelResult] = field(default_factory=list)
    written: int = 0
    stats: dict[str, int] = field(default_factory=dict)

    @property
    def labelled(self) -> list[LabelResult]:
        return [r for r in self.results if r.label is not None]

    @property
    def failed(self) -> list[LabelResult]:
        return [r for r in self.results if r.error is not None]

    @property
    def skipped(self) -> list[LabelResult]:
        return [r for r in self.results if r.skipped is not None]


class Labeller:
    def __init__(self, client: ChatClient, artifacts: str | Path, *, crops_per_group: int = 5, lower_groups: int = 2,
                 seed: int = 0):  # fmt: skip
        self.client = client
        self.artifacts = Path(artifacts)
        self.crops_per_group = crops_per_group
        self.lower_groups = lower_groups
        self.seed = seed

    def _urls(self, rel_paths: list[str], n: int | None = None) -> list[str]:
        """Data URLs of the first `n` (default crops_per_group) thumbnails that exist."""
        n = self.crops_per_group if n is None else n
        out: list[str] = []
        for rel in rel_paths:
            if len(out) >= n:
                break
            p = self.artifacts / rel
            if p.is_file():
                out.append(data_url(p))
        return out

    def label_group(self, g: GroupInfo, by_uid: dict[str, GroupInfo]) -> LabelResult:
        try:
            own = self._urls(g.thumbnails)
            if not own:
                return LabelResult(g.uid, skipped=f"no crop thumbnails found under {self.artifacts}")
            lower = [self._urls(by_uid[u].thumbnails) for u in g.lower[: self.lower_groups] if u in by_uid]
            answer = self.client.complete(label_messages(own, [x for x in lower if x], g.class_name),
                                          lambda text: parse_label(parse_json_answer(text)))
            # the check: the group's crops and as many crops of other groups, shuffled
            rng = random.Random(f"{self.seed}/{g.uid}")
            others = sorted({t for o in by_uid.values() if o.uid != g.uid and o.circuit == g.circuit for t in o.thumbnails}
                            - set(g.thumbnails))  # fmt: skip
            if len(others) < len(own):  # a one-group circuit: borrow from every circuit being labelled
                others = sorted({t for o in by_uid.values() if o.uid != g.uid for t in o.thumbnails} - set(g.thumbnails))
            distractors = self._urls(rng.sample(others, len(others)), len(own))
            shown = own[: len(distractors)] or own  # as many of the group's crops as distractors
            mix = [(u, True) for u in shown] + [(u, False) for u in distractors]
            rng.shuffle(mix)
            picked = self.client.complete(check_messages(answer["label"], [u for u, _ in mix]),
                                          lambda text: parse_matching(parse_json_answer(text), len(mix)))
            hits = sum(1 for i, (_, is_own) in enumerate(mix, start=1) if is_own and i in picked)
            return LabelResult(g.uid, answer["label"], f"llm:{self.client.cfg.model}", hits / len(shown), answer["feature_evolution"])
        except LabelError as exc:
            log.warning("group %s left unlabelled: %s", g.uid, exc)
            return LabelResult(g.uid, error=str(exc))
        except OSError as exc:  # unreadable thumbnail and the like
            log.warning("group %s left unlabelled: %s", g.uid, exc)
            return LabelResult(g.uid, error=f"{type(exc).__name__}: {one_line(exc, 200)}")


def label_groups(store, labeller: Labeller, model: str, classes: list[int], *,
                 params: str | None = None, concurrency: int = 4, force: bool = False,
                 progress: Callable[[LabelResult], None] | None = None) -> LabelReport:  # fmt: skip
    """Label every group of the chosen complete circuits of `classes` with `labeller` (its chat
    client and the thumbnails folder it reads crops from); write the successful ones.

    Manually labelled groups are kept unless `force`."""
    from ingest.write.writer import set_group_labels

    groups = read_label_groups(store, model, classes, params)
    by_uid = {g.uid: g for g in groups}
    todo = [g for g in groups if force or g.label_source != MANUAL]
    report = LabelReport([LabelResult(g.uid, skipped="manual label (use --force)") for g in groups if g not in todo])
    with ThreadPoolExecutor(max_workers=max(1, int(concurrency))) as pool:
        for result in pool.map(lambda g: labeller.label_group(g, by_uid), todo):
            report.results.append(result)
            if progress:
                progress(result)
    rows = [{"uid": r.uid, "label": r.label, "label_source": r.label_source, "label_score": r.label_score}
            for r in report.results if r.label is not None]  # fmt: skip
    if rows:
        report.written = set_group_labels(store, rows)
    report.stats = dict(labeller.client.stats)
    return report


def set_manual_label(store, group_uid: str, label: str) -> int:
    """A person's label for a group (label_source = manual, no score); empty text clears the label."""
    from ingest.write.writer import set_group_labels

    text = " ".join(label.split())
    row = {"uid": group_uid, "label": text or None, "label_source": MANUAL if text else None, "label_score": None}
    return set_group_labels(store, [row])
