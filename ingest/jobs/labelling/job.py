"""The labelling job: read the groups of stored complete circuits (`Q_LABEL_GROUPS`), ask the
chat client for each group's label and the check, in a thread pool, and write the labels that
passed (label, ``label_source = llm:<model>`` and score together or not at all); a person's label
(`set_manual_label`) is kept unless forced.
"""

from __future__ import annotations

import logging
import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ingest.jobs.labelling.client import ChatClient, LabelError, parse_json_answer
from ingest.jobs.labelling.prompts import check_messages, data_url, label_messages, parse_label, parse_matching
from ingest.queries.jobs import Q_LABEL_GROUPS
from ingest.write.writer import set_group_labels
from neurflow.errors import one_line

log = logging.getLogger("neurflow.labelling")
MANUAL = "manual"


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
    text = " ".join(label.split())
    row = {"uid": group_uid, "label": text or None, "label_source": MANUAL if text else None, "label_score": None}
    return set_group_labels(store, [row])
