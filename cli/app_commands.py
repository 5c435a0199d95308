"""`neurflow app` and `neurflow demo`.

    neurflow app [--port 8501] [--host 127.0.0.1] [--browser] [--allow-label-edits]
        starts the Streamlit app on the configured store: the embedded ArcadeDB (started when it
        is not running) unless NEURFLOW_STORE_URI names a Neo4j / Bolt server.  The labels page
        edits group labels (with the writer's account) only with --allow-label-edits: anyone who
        can open the app could otherwise change the store.

    neurflow demo [--device auto] [--no-app] [--no-evaluate] [method options of `neurflow ingest`]
        ingests the ten Fashion-MNIST classes of fashion-resnet (weights shipped, nothing to train)
        into the store (classes already complete are skipped), evaluates the circuits that have no
        evaluations yet (lighter settings than `neurflow evaluate`'s, `demo_eval_settings`), then starts the
        app.  Method defaults differ from `neurflow ingest`'s (DEMO_DEFAULTS): chosen so the
        circuits are selective and their crops show garment parts (docs/demo-model.md), and so the
        demo builds in minutes on a CPU.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import app
from app.settings import LABEL_EDITS_ENV

APP_MAIN = Path(app.__file__).resolve().parent / "main.py"
PROJECT_ROOT = APP_MAIN.parent.parent
DEFAULT_PORT = 8501
DEMO_MODEL = "fashion-resnet"
# Chosen on measurements (docs/demo-model.md, bench/demo_selectivity.py): at tau 3 every analysed
# layer's critical set stays under a third of its channels, so classes differ and the faithfulness
# claims are visible; crops of 28 px images at granularity 0.25 (7 px) are mostly background, hence
# 1 and 0.5 only, and crops with pixel std < 0.2 (uniform background) are left out of the concept
# data.  Lighter than `neurflow ingest`'s defaults (k 50, 50 IG steps, 200 images) so the ten
# circuits build in minutes on a laptop CPU.
DEMO_DEFAULTS = {"tau": 3, "k": 20, "ig_steps": 16, "max_images": 60, "granularities": "1,0.5", "min_crop_std": 0.2}


def streamlit_command(port: int, host: str = "127.0.0.1", *, headless: bool = True) -> list[str]:
    """The `streamlit run` command line of the app (quiet, no file watcher, no telemetry)."""
    return [
        sys.executable, "-m", "streamlit", "run", str(APP_MAIN),
        "--server.port", str(port), "--server.address", host,
        "--server.headless", "true" if headless else "false",
        "--server.fileWatcherType", "none", "--server.runOnSave", "false",
        "--browser.gatherUsageStats", "false", "--client.toolbarMode", "minimal",
        "--theme.base", "light",
    ]  # fmt: skip


def app_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(PROJECT_ROOT), env.get("PYTHONPATH", "")] if p)
    env.setdefault("STREAMLIT_BROWSER_GATHER_USAGE_STATS", "false")
    env.update(extra or {})
    return env


def streamlit_env(args: argparse.Namespace) -> dict[str, str]:
    """The app's environment: label edits on only when this start asked for them (a variable
    inherited from the shell does not turn them on)."""
    return app_env({LABEL_EDITS_ENV: "1" if getattr(args, "allow_label_edits", False) else "0"})


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _bring_up_to_date(cfg) -> None:
    """Open the store once as the writer before the app starts: a store written by an earlier
    version gets the aggregates the app's queries read (ingest.write.aggregates; one line on stderr
    while it rebuilds).  The app itself reads with a read-only account, which cannot; without
    usable writer credentials the app still starts and its pages name the command that fixes it."""
    from ingest.store.errors import StoreError
    from ingest.store.connect import open_store

    try:
        with open_store(cfg):
            pass
    except StoreError as exc:  # e.g. a writer account without schema rights on Neo4j (the runner words driver errors)
        print(f"note: could not open the store as the writer to check its aggregates ({exc}); "
              "if pages come up empty, run `neurflow store rebuild-aggregates`", file=sys.stderr)


def cmd_app(args: argparse.Namespace) -> int:
    """Start the app on the configured store; returns Streamlit's exit status."""
    from ingest.store.connection import start_store
    from ingest.store.readonly import readonly_store
    from neurflow.images import NeurflowInputError

    cfg = start_store()  # starts the embedded store when needed (StoreError: one line, exit 1)
    _bring_up_to_date(cfg)
    readonly_store(cfg)  # fail now, with the fix named, rather than in the browser
    if not _port_free(args.host, args.port):
        raise NeurflowInputError(f"port {args.port} on {args.host} is in use: pass --port with a free port")
    url = f"http://{'localhost' if args.host in ('127.0.0.1', '0.0.0.0') else args.host}:{args.port}"
    kind = "embedded ArcadeDB" if cfg.embedded else "external"
    print(f"NeurFlow app: {url}   (store: {kind} {cfg.uri}, database {cfg.database or 'default'}; Ctrl-C stops the app)",
          flush=True)
    proc = subprocess.Popen(streamlit_command(args.port, args.host, headless=not args.browser), env=streamlit_env(args),
                            cwd=str(PROJECT_ROOT))
    previous = signal.signal(signal.SIGTERM, lambda *_: proc.terminate())  # `kill` of the CLI stops the app too
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)


def demo_eval_settings():
    """`neurflow evaluate`'s measurements with fewer images and random sets (1.7-7 s a class on 2
    lightly loaded cores, where the defaults took 45-95 s under load) so that `make demo` fills the
    faithfulness page in seconds; `neurflow evaluate` with its defaults overwrites them with the
    full ones.  Noisier: at these settings block4's retain ratio read 2.4x where the full run says
    3.7x (README, "The demo store")."""
    from neurflow.evaluation import EvalSettings

    return EvalSettings(draws=3, test_images=100, crop_images=6, opt_neurons=3, opt_random=20, edge_sets=10)


def cmd_demo(args: argparse.Namespace) -> int:
    """Ingest the ten demo classes (if not complete), evaluate them (if not evaluated), start the app."""
    from cli.ingest_commands import format_table, preflight_run, print_notes
    from ingest.jobs.evaluations import HeldOut, circuits_to_evaluate, evaluate_stored
    from ingest.jobs.pipeline import IngestRequest, ingest_classes
    from ingest.store.connect import open_store
    from cli.options import budget_from_args, layers_from_args, params_from_args
    from neurflow.models.registry import load_model, resolve_device

    params = params_from_args(args)  # bad options fail before the long work
    device = resolve_device(args.device)
    loaded = load_model(DEMO_MODEL, device=str(device))  # shipped weights, checksum verified
    data = loaded.spec.default_data
    classes = list(range(len(loaded.class_names)))
    layers, budget = layers_from_args(args, loaded.spec), budget_from_args(args)
    preflight_run(loaded, data, classes, params, layers)  # --tau, --layers ... checked before the store starts
    say = (lambda line: None) if args.quiet else (lambda line: print(line, flush=True))
    print(f"demo: {len(classes)} classes of {loaded.uid} into the store (complete ones are skipped)", flush=True)
    with open_store() as store:
        results = ingest_classes(store, IngestRequest(loaded, data, classes, params, layers, budget, device=device),
                                 progress=not args.quiet)
        print(format_table(results), flush=True)
        print_notes(results)
        if not args.no_evaluate:
            todo = circuits_to_evaluate(store, [r.uid for r in results])
            print(f"demo: evaluating {len(todo)} circuits (faithfulness page; "
                  f"{len(results) - len(todo)} already evaluated)", flush=True)
            evaluate_stored(store, loaded, HeldOut(data), todo, demo_eval_settings(), device=device, on_class=say)
        cfg = store.config
    print(demo_next_steps(cfg, app_follows=not args.no_app), flush=True)
    if args.no_app:
        return 0
    return cmd_app(args)


def demo_next_steps(cfg, *, app_follows: bool) -> str:
    """Where the demo store is and what to run next (the last lines of `neurflow demo`)."""
    if cfg.embedded:
        where = f"store: embedded ArcadeDB, data folder {cfg.data_dir}, {cfg.uri}, database {cfg.database}"
    else:
        where = f"store: {cfg.uri}, database {cfg.database or 'default'}"
    lines = [where, "next:"]
    if app_follows:
        lines.append("  the app starts now (Ctrl-C stops it; `neurflow app` starts it again)")
    else:
        lines.append("  neurflow app                                  # browse the circuits")
    lines += [
        "  neurflow query --lib models                   # or any read-only Cypher: neurflow query \"MATCH ...\"",
        f"  neurflow evaluate --model {DEMO_MODEL} --classes all --out report/   # full faithfulness numbers",
        "  neurflow store stop                           # stop the store (data stays in the folder)",
    ]
    return "\n".join(lines)


def _add_server_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="port of the app")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s; 0.0.0.0 for all)")
    p.add_argument("--browser", action="store_true", help="open a browser tab")
    p.add_argument("--allow-label-edits", action="store_true",
                   help="let the labels page change group labels (with the writer's account; anyone who can open "
                        "the app can then edit them)")


def add_app_commands(sub) -> None:
    from cli.options import add_method_args

    p = sub.add_parser("app", help="start the Streamlit app (embedded store by default, NEURFLOW_STORE_URI otherwise)")
    _add_server_args(p)
    p.set_defaults(func=cmd_app)

    light = ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in DEMO_DEFAULTS.items())
    p = sub.add_parser(
        "demo", help=f"ingest the 10 classes of the demo model ({DEMO_MODEL}) if needed, evaluate them, start the app",
        description=f"Ingest the 10 Fashion-MNIST classes of {DEMO_MODEL} (weights shipped; complete classes are "
                    f"skipped), evaluate the circuits not yet evaluated (lighter settings than `neurflow evaluate`), "
                    f"start the app. Method defaults chosen for selective circuits whose crops show garment parts "
                    f"and a build of minutes on a CPU (docs/demo-model.md): {light}; pass those options for other "
                    f"values.",
    )
    add_method_args(p)
    p.set_defaults(**DEMO_DEFAULTS)  # also the defaults --help shows
    p.add_argument("--device", default="auto", help="auto (cuda when present), cpu, cuda, ...")
    p.add_argument("--no-app", action="store_true", help="build the demo store only")
    p.add_argument("--no-evaluate", action="store_true", help="skip the faithfulness evaluation")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_server_args(p)
    p.set_defaults(func=cmd_demo)
