"""`neurflow debug IMAGE`: which stored groups fire on an image, and what zeroing one does (spec §9)."""

from __future__ import annotations

import argparse
import json

from ingest.jobs.image_debugging import debug_image, format_report, load_query_image
from neurflow.errors import NeurflowInputError


def cmd_debug(args: argparse.Namespace) -> int:
    from ingest.store.connect import open_store
    from neurflow.models.registry import load_model, resolve_device

    loaded = load_model(args.model, args.weights, device=str(resolve_device(args.device)), train_if_missing=False)
    image, label, source = load_query_image(args.image, loaded.spec)
    true_class = args.class_index if args.class_index is not None else label
    if true_class is not None and not 0 <= true_class < len(loaded.class_names):
        raise NeurflowInputError(f"--class {true_class} out of range: the model has classes 0..{len(loaded.class_names) - 1}")
    if not 0 < args.threshold:
        raise NeurflowInputError(f"--threshold must be positive, got {args.threshold}")
    with open_store() as store:
        report = debug_image(store, loaded, image, true_class=true_class, params=args.params, ablate=args.ablate,
                             threshold=args.threshold, source=source)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print(format_report(report, loaded.class_names, top=args.top))
    return 0


def add_debug_commands(sub) -> None:
    from cli.options import DEFAULT_MODEL
    from neurflow.debugging import THRESHOLD

    p = sub.add_parser("debug", help="score the stored groups on an image; zero a group and see the logits change")
    p.add_argument("image", help="an image file, or fashion-mnist:test:<index>")
    p.add_argument("--model", default=DEFAULT_MODEL, help="registry name (its circuits must be in the store; default %(default)s)")
    p.add_argument("--weights", default=None, help="state-dict file for the model")
    p.add_argument("--device", default="auto", help="auto (cuda when present), cpu, cuda ...")
    p.add_argument("--class", dest="class_index", type=int, default=None, help="true class (also debug its circuit)")
    p.add_argument("--params", default=None, help="parameter hash of the circuits (default: latest per class)")
    p.add_argument("--ablate", default=None, metavar="GROUP_UID", help="zero this group's channels, print the logit change")
    p.add_argument("--threshold", type=float, default=THRESHOLD, help="exp(s) at which a crop counts as evidence")
    p.add_argument("--top", type=int, default=10, help="groups to print per circuit")
    p.add_argument("--json", action="store_true", help="print the full report as JSON")
    p.set_defaults(func=cmd_debug)
