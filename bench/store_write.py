"""Write throughput of the embedded store: relationships per second of `write_circuit`.

    .venv/bin/python bench/store_write.py [--classes 3] [--tau 16] [--batch 5000]

Starts a throwaway embedded server (temporary folder, free ports), writes synthetic circuits
of a ResNet-like shape (logits + 3 layers, `tau` core neurons per critical neuron), and prints
relationships/s per circuit and overall.  Goal on this 2-core machine: >= 20k rel/s.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ingest.store.embedded import create_database, ensure_embedded_server, free_port, stop_embedded_server  # noqa: E402
from ingest.store.schema import ensure_schema  # noqa: E402
from ingest.store.connection import Store  # noqa: E402
from ingest.write.writer import WriteOptions, write_circuit  # noqa: E402
from tests.fixtures_store import make_circuit  # noqa: E402

LAYERS = [("logits", 1000), ("layer4", 2048), ("layer3", 1024), ("layer2", 512)]


def _rust_packstream() -> bool:
    """True when the optional neo4j-rust-ext accelerator is installed (about 1.5x here)."""
    import importlib.util

    return importlib.util.find_spec("neo4j._rust") is not None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--classes", type=int, default=16)
    ap.add_argument("--tau", type=int, default=16)
    ap.add_argument("--batch", type=int, default=10000)
    ap.add_argument("--uri", default=None, help="bench an external Bolt store instead (NEURFLOW_STORE_* credentials)")
    args = ap.parse_args(argv)

    from neurflow.circuit import Params

    params = Params(tau=args.tau, k=8, ig_steps=8, granularities=(1.0, 0.5), num_representatives=3)
    circuits = [make_circuit(ci, model="bench-resnet", params=params, layers=LAYERS, num_images=40) for ci in range(args.classes)]
    with tempfile.TemporaryDirectory(prefix="neurflow-bench-") as tmp:
        t0 = time.perf_counter()
        cfg = ensure_embedded_server(tmp, bolt_port=free_port(), http_port=free_port(), owner_pid=os.getpid())
        print(f"embedded server ready in {time.perf_counter() - t0:.1f} s")
        try:
            create_database(cfg, "bench")
            with Store(cfg.with_database("bench")) as store:
                ensure_schema(store)
                total_rels, total_s, warm_rels, warm_s = 0, 0.0, 0, 0.0
                late: list[tuple[int, float]] = []
                for i, c in enumerate(circuits):
                    st = write_circuit(store, c, Path(tmp) / "artifacts", options=WriteOptions(batch_size=args.batch))
                    total_rels += st.relationships
                    total_s += st.seconds
                    if i > 0:  # the first circuit also pays the server's JIT warm-up
                        warm_rels += st.relationships
                        warm_s += st.seconds
                    if i >= len(circuits) // 2:
                        late.append((st.relationships, st.seconds))
                    print(f"{c.uid}: {st.nodes} nodes, {st.relationships} relationships in {st.seconds:.2f} s = {st.rel_per_s:,.0f} rel/s")
                # a forced rewrite measures the cleanup path too
                st = write_circuit(store, circuits[0], force=True, options=WriteOptions(batch_size=args.batch))
                print(f"forced rewrite of {circuits[0].uid}: {st.seconds:.2f} s (cleaned {st.cleaned})")
                print(f"RESULT write throughput: {total_rels / total_s:,.0f} relationships/s overall ({total_rels} relationships, {total_s:.2f} s)")
                if warm_s:
                    print(f"RESULT warm write throughput: {warm_rels / warm_s:,.0f} relationships/s (circuits 2..{len(circuits)})")
                if late:
                    r, t = sum(x for x, _ in late), sum(y for _, y in late)
                    print(f"RESULT steady write throughput: {r / t:,.0f} relationships/s (last {len(late)} circuits)")
                load = os.getloadavg()[0]
                packer = "rust" if _rust_packstream() else "pure Python"
                print(f"(machine: {os.cpu_count()} CPUs, load average {load:.1f}; neo4j driver packstream: {packer})")
        finally:
            stop_embedded_server(tmp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
