"""`neurflow label`: label the groups of stored circuits with a multimodal LLM (ingest/jobs/labelling/).

    export NEURFLOW_LLM_BASE_URL=http://localhost:11434/v1 NEURFLOW_LLM_MODEL=llava
    neurflow label --model fashion-resnet --classes all [--concurrency 4] [--force]

Without an endpoint configured the command says so in one line (exit 2) and changes nothing.
"""

from __future__ import annotations

import argparse
import logging
import sys

from ingest.queries.jobs import Q_MODEL_CLASS_COUNT
from neurflow.errors import NeurflowInputError


def cmd_label(args: argparse.Namespace) -> int:
    from ingest.store.config import artifact_dir
    from cli.ingest_commands import parse_classes
    from ingest.jobs.labelling import ChatClient, Labeller, label_groups, llm_config
    from ingest.store.connect import open_store
    from neurflow.cache import cache_dir

    if args.concurrency < 1:
        raise NeurflowInputError(f"--concurrency must be at least 1, got {args.concurrency}")
    cfg = llm_config(timeout=args.timeout, max_retries=args.retries, max_tokens=args.max_tokens,
                     json_mode=not args.no_json_mode)  # fmt: skip  # fails first: no endpoint, no change
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    with open_store() as store:
        rows = store.run(Q_MODEL_CLASS_COUNT, {"model": args.model})
        if not rows:
            raise NeurflowInputError(f"the store has no model {args.model!r}: ingest its circuits first (neurflow ingest)")
        n = rows[0]["n"] or ((rows[0]["top"] + 1) if rows[0]["top"] is not None else 0)
        classes = parse_classes(args.classes, int(n))
        client = ChatClient(cfg, cache=cache_dir() / "llm")

        def progress(r) -> None:
            if args.quiet:
                return
            if r.label is not None:
                print(f"labelled  {r.uid}  score {r.label_score:.2f}  {r.label}")
            elif r.error is not None:
                print(f"FAILED    {r.uid}  {r.error}")
            else:
                print(f"skipped   {r.uid}  {r.skipped}")

        report = label_groups(store, Labeller(client, artifact_dir(store.cfg)), args.model, classes, params=args.params,
                              concurrency=args.concurrency, force=args.force, progress=progress)  # fmt: skip
    s = report.stats
    print(f"{len(report.labelled)} groups labelled ({report.written} written), {len(report.failed)} failed, "
          f"{len(report.skipped)} skipped; {s.get('requests', 0)} requests, {s.get('cached', 0)} answers from the cache, "
          f"{s.get('retries', 0)} retries")  # fmt: skip
    return 1 if report.failed and not report.labelled else 0


def add_label_commands(sub) -> None:
    from cli.options import DEFAULT_MODEL

    p = sub.add_parser("label", help="label stored groups with a multimodal LLM (OpenAI-compatible endpoint)")
    p.add_argument("--model", default=DEFAULT_MODEL, help="model uid in the store (default %(default)s)")
    p.add_argument("--classes", default="all", help="class indices: 0,3,7 or 2-5 or all")
    p.add_argument("--params", default=None, help="parameter hash of the circuits (default: latest per class)")
    p.add_argument("--concurrency", type=int, default=4, help="requests in flight at once")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    p.add_argument("--retries", type=int, default=5, help="retries on 429 / 5xx / timeouts (exponential backoff)")
    p.add_argument("--max-tokens", type=int, default=800, help="answer length limit")
    p.add_argument("--no-json-mode", action="store_true", help="do not send response_format (servers without it)")
    p.add_argument("--force", action="store_true", help="relabel manually labelled groups too")
    p.add_argument("--quiet", action="store_true", help="only the summary line")
    p.set_defaults(func=cmd_label)
