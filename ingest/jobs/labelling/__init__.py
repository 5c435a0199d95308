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

By concern: `client` (the OpenAI-compatible HTTP client), `prompts` (the requests and the reading
of their answers), `job` (the store reads, the labelling and the writes); the names the command
line, the app and the tests use are importable from here.
"""

from ingest.jobs.labelling.client import (
    ENV_API_KEY,
    ENV_BASE_URL,
    ENV_MODEL,
    ChatClient,
    LabelError,
    LLMConfig,
    llm_config,
    parse_completion,
    parse_json_answer,
)
from ingest.jobs.labelling.job import (
    MANUAL,
    GroupInfo,
    Labeller,
    LabelReport,
    LabelResult,
    label_groups,
    read_label_groups,
    set_manual_label,
)
from ingest.jobs.labelling.prompts import check_messages, data_url, label_messages, parse_label, parse_matching

__all__ = [
    "ENV_API_KEY", "ENV_BASE_URL", "ENV_MODEL", "MANUAL", "ChatClient", "GroupInfo", "LLMConfig", "LabelError",
    "LabelReport", "LabelResult", "Labeller", "check_messages", "data_url", "label_groups", "label_messages",
    "llm_config", "parse_completion", "parse_json_answer", "parse_label", "parse_matching", "read_label_groups",
    "set_manual_label",
]  # fmt: skip
