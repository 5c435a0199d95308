"""Every library query on a real ArcadeDB, checked against values computed from the Circuit objects.

The store of this module holds: classes 0..3 under parameter set P1; class 1 again under P2
(written later, so its latest); class 2 under P3 left `running` (a crashed write, newer than
everything but never to be read).  P1, with the most complete circuits, is the model's default
parameter set: comparisons read it (never class 1's newer P2 circuit), single-class queries read
each class's latest complete circuit.
"""

from __future__ import annotations

import math

import uuid
from itertools import product
from types import SimpleNamespace

import pytest

from ingest.store.embedded import create_database, drop_database
from ingest.queries.library import MAX_PATH_DEPTH, QUERIES, get_query, run_query
from ingest.store.readonly import check_readonly, run_readonly
from ingest.store.schema import ensure_schema
from ingest.store.connection import Store
from ingest.write.writer import WriteOptions, set_group_labels, write_circuit
from tests.fixtures_store import make_circuit, model_info

M = "testnet"


@pytest.fixture(scope="module")
def world(store_server):
    from neurflow.circuit import Params

    name = "tq_" + uuid.uuid4().hex[:10]
    create_database(store_server, name)
    store = Store(store_server.with_database(name))
    ensure_schema(store)
    p2 = Params(tau=2, k=4, ig_steps=8, granularities=(1.0, 0.5), num_representatives=2)
    p3 = Params(tau=4, k=4, ig_steps=8, granularities=(1.0, 0.5), num_representatives=2)
    old = {i: make_circuit(i) for i in range(4)}
    for c in old.values():
        write_circuit(store, c, model_info=model_info())
    newer = make_circuit(1, params=p2)
    write_circuit(store, newer, model_info=model_info())
    running = make_circuit(2, params=p3)
    write_circuit(store, running, options=WriteOptions(stop_after="groups"))

    def group(c, depth):  # uid of the first group of a layer
        return f"{c.uid}/{c.layer_name(depth)}/g{min(c.groups(depth))}"

    labels = {
        group(old[0], 1): "Round collar",
        group(old[1], 1): "round toe (old params)",
        group(newer, 2): "Stripes",
        group(running, 1): "round but running",
    }
    n = set_group_labels(store, [{"uid": u, "label": lab, "label_source": "manual", "label_score": 1.0} for u, lab in labels.items()])
    assert n == len(labels)
    picked = {0: old[0], 1: newer, 2: old[2], 3: old[3]}  # latest complete circuit per class
    try:
        yield SimpleNamespace(store=store, old=old, newer=newer, running=running, picked=picked,
                              p1=old[0].identity.param_set, p2=newer.identity.param_set)
    finally:
        store.close()
        drop_database(store_server, name)


def q(world, name, **params):
    return run_query(world.store, name, model=M, **params) if "model" in get_query(name).params else run_query(world.store, name, **params)


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a | b else 0.0


ARGS = {
    "models": {},
    "overview": {},
    "shared_neurons": {"class_a": 0, "class_b": 1},
    "class_channels": {"layer": "layer2"},
    "similarity_matrix": {"layer": "layer2"},
    "hub_neurons": {},
    "class_circuit": {"class_index": 0},
    "circuit_diff": {"class_a": 0, "class_b": 1},
    "strongest_paths": {"class_index": 0, "depth": 2},
    "reverse_lookup": {"layer": "layer2", "channel": None},  # filled from the data
    "label_search": {"text": "round"},
    "neuron_concepts": {"class_index": 0, "layer": "layer3", "channel": None},
}


def test_library_is_complete_and_documented():
    assert set(ARGS) == {qq.name for qq in QUERIES}
    for qq in QUERIES:
        assert qq.title and qq.description and qq.cypher.strip() and qq.returns
        check_readonly(qq.cypher)  # the console's refusal layer accepts every library query


@pytest.mark.parametrize("name", [qq.name for qq in QUERIES])
def test_every_query_runs_with_its_columns(world, name):
    args = dict(ARGS[name])
    if "channel" in args:
        args["channel"] = world.old[0].critical(2 if args["layer"] == "layer2" else 1)[0]
    rows = q(world, name, **args)
    assert rows, name
    assert list(rows[0]) == list(get_query(name).returns)


def test_unknown_names_and_parameters_are_clear_errors(world):
    with pytest.raises(KeyError, match="no library query named"):
        get_query("nope")
    with pytest.raises(KeyError, match="has no parameter"):
        run_query(world.store, "models", model="x")


def test_overview_and_models_only_complete_by_default(world):
    rows = q(world, "overview")
    assert all(r["total"] == len(rows) == 5 for r in rows)
    page = q(world, "overview", skip=1, limit=2)
    assert [r["circuit"] for r in page] == [r["circuit"] for r in rows][1:3] and page[0]["total"] == 5
    assert {r["circuit"] for r in rows} == {c.uid for c in world.old.values()} | {world.newer.uid}
    assert all(r["status"] == "complete" for r in rows)
    everything = q(world, "overview", include_incomplete=True)
    assert {r["circuit"] for r in everything} - {r["circuit"] for r in rows} == {world.running.uid}
    one = [r for r in rows if r["circuit"] == world.old[3].uid][0]
    assert (one["neurons"], one["feeds"], one["concepts"]) == (len(world.old[3].neurons), len(world.old[3].core), len(world.old[3].concepts))
    (m,) = run_query(world.store, "models")
    assert (m["model"], m["classes"], m["complete_circuits"], m["num_classes"]) == (M, 4, 5, 4)


@pytest.mark.parametrize("a,b,params", [(0, 2, None), (0, 1, None), (0, 1, "p1"), (2, 3, "p1")])
def test_shared_neurons_per_layer(world, a, b, params):
    p = getattr(world, params) if params else None
    ca, cb = world.old[a], world.old[b]  # P1, given or the default parameter set: never class 1's newer P2
    rows = q(world, "shared_neurons", class_a=a, class_b=b, params=p)
    assert [r["depth"] for r in rows] == ca.depths
    for r in rows:
        sa, sb = set(ca.critical(r["depth"])), set(cb.critical(r["depth"]))
        assert r["layer"] == ca.layer_name(r["depth"])
        assert (r["n_a"], r["n_b"], r["n_shared"]) == (len(sa), len(sb), len(sa & sb))
        assert r["shared_channels"] == sorted(sa & sb)
        assert r["jaccard"] == pytest.approx(jaccard(sa, sb))
        assert (r["circuit_a"], r["circuit_b"]) == (ca.uid, cb.uid)


def test_running_circuit_is_never_picked(world):
    # class 2's newest circuit is the running one; the query must use its complete P1 circuit
    rows = q(world, "shared_neurons", class_a=2, class_b=2)
    assert {r["circuit_a"] for r in rows} == {world.old[2].uid}
    assert q(world, "shared_neurons", class_a=2, class_b=2, params=world.running.identity.param_set) == []


@pytest.mark.parametrize("layer", ["layer3", "layer2", "layer1"])
def test_similarity_matrix(world, layer):
    from ingest.read.similarity import similarity_matrix

    rows = q(world, "similarity_matrix", layer=layer, limit=None)
    assert [r["class_a"] for r in rows] == [0, 1, 2, 3]  # one row per class A, its values in lists
    depth = [rec.depth for rec in world.old[0].layers if rec.name == layer][0]
    for r in rows:
        assert r["classes_b"] == [0, 1, 2, 3] and r["names_b"] == [world.old[b].class_name for b in range(4)]
        sa = set(world.old[r["class_a"]].critical(depth))
        assert r["n_a"] == len(sa) and r["name_a"] == world.old[r["class_a"]].class_name
        for b, n_b, n_shared, jac in zip(r["classes_b"], r["n_b"], r["n_shared"], r["jaccard"], strict=True):
            sb = set(world.old[b].critical(depth))
            assert jac == pytest.approx(jaccard(sa, sb)) and n_shared == len(sa & sb) and n_b == len(sb)
    # paged by rows of the matrix: the default page is the first row
    assert q(world, "similarity_matrix", layer=layer) == rows[:1]
    assert q(world, "similarity_matrix", layer=layer, skip=1, limit=2) == rows[1:3]
    assert q(world, "similarity_matrix", layer=layer, skip=4) == []
    # the client-side matrix from one channel list per class is the same matrix
    m = similarity_matrix(world.store, model=M, layer=layer)
    assert m.classes == [0, 1, 2, 3]
    got = m.rows()
    assert [{k: v for k, v in r.items() if k != "jaccard"} for r in got] == [{k: v for k, v in r.items() if k != "jaccard"} for r in rows]
    for g, r in zip(got, rows, strict=True):
        assert g["jaccard"] == pytest.approx(r["jaccard"])


def test_class_channels(world):
    (row,) = q(world, "class_channels", layer="layer3")  # one row of parallel lists, one entry per class
    assert row["classes"] == [0, 1, 2, 3]  # the default parameter set: class 1's P1 circuit
    assert row["names"] == [world.old[c].class_name for c in range(4)]
    assert row["circuits"] == [world.old[c].uid for c in range(4)]
    assert row["channels"] == [world.old[c].critical(1) for c in range(4)]
    assert q(world, "class_channels", layer="layer3", classes=[3, 1])[0]["classes"] == [1, 3]
    assert q(world, "class_channels", layer="layer3", params=world.p2)[0]["channels"] == [world.newer.critical(1)]
    none = q(world, "class_channels", layer="no such layer")[0]
    assert none["classes"] == [0, 1, 2, 3] and none["channels"] == [[], [], [], []]
    assert q(world, "class_channels", layer="layer3", classes=[99]) == [{"classes": [], "names": [], "circuits": [], "channels": []}]


def test_jaccard_matrix_by_hand():
    from ingest.read.similarity import jaccard_matrix

    m = jaccard_matrix([{"class_index": 5, "class_name": "e", "channels": []},
                        {"class_index": 2, "class_name": "b", "channels": [1, 2, 3]},
                        {"class_index": 3, "class_name": "c", "channels": [2, 3, 4, 9]}])  # fmt: skip
    assert m.classes == [2, 3, 5] and m.names == ["b", "c", "e"] and list(m.sizes) == [3, 4, 0]
    assert m.jaccard[0, 1] == pytest.approx(2 / 5) and m.jaccard[1, 0] == pytest.approx(2 / 5)
    assert m.jaccard[0, 0] == 1.0 and m.jaccard[2, 2] == 0.0 and m.jaccard[0, 2] == 0.0
    with pytest.raises(ValueError, match="appears twice"):
        jaccard_matrix([{"class_index": 1, "channels": [1]}, {"class_index": 1, "channels": [2]}])
    # the query's shape: one row of parallel lists
    same = jaccard_matrix([{"classes": [5, 2, 3], "names": ["e", "b", "c"], "circuits": ["x", "y", "z"],
                            "channels": [[], [1, 2, 3], [2, 3, 4, 9]]}])  # fmt: skip
    assert same.classes == m.classes and same.names == m.names and (same.jaccard == m.jaccard).all()
    with pytest.raises(ValueError, match="differ in length"):
        jaccard_matrix([{"classes": [1, 2], "names": ["a"], "circuits": ["x", "y"], "channels": [[1], [2]]}])


def test_comparisons_never_mix_parameter_sets(world):
    """Class 1's latest circuit is P2; a comparison across classes reads every class under P1."""
    default = {world.old[c].uid for c in range(4)}
    diff = q(world, "circuit_diff", class_a=1, class_b=2)
    assert {(r["circuit_a"], r["circuit_b"]) for r in diff} == {(world.old[1].uid, world.old[2].uid)}
    assert {r["circuit"] for r in q(world, "reverse_lookup", layer="layer3", channel=world.old[1].critical(1)[0])} <= default
    one_side = q(world, "circuit_diff", class_a=1, params_a=world.p2, class_b=1)  # one hash given: both sides use it
    assert {(r["circuit_a"], r["circuit_b"]) for r in one_side} == {(world.newer.uid, world.newer.uid)}
    assert q(world, "class_circuit", class_index=1)[0]["circuit"] == world.newer.uid  # one class: its latest


def test_similarity_matrix_with_params(world):
    rows = q(world, "similarity_matrix", layer="layer3", params=world.p2, limit=None)
    assert [(r["class_a"], r["classes_b"]) for r in rows] == [(1, [1])]  # only class 1 has a P2 circuit


def test_hub_neurons(world):
    rows = q(world, "hub_neurons", limit=1000)
    want: dict[str, set[int]] = {}
    for ci, c in world.old.items():
        for n in c.neurons:
            if n.depth > 0:
                want.setdefault(f"{M}/{c.layer_name(n.depth)}/{n.channel}", set()).add(ci)
    assert {r["neuron"]: set(r["class_indices"]) for r in rows} == want
    assert all(r["classes"] == len(r["class_indices"]) for r in rows)
    # ranked by class count, then by the importance summed over those classes' circuits
    importance: dict[str, float] = {}
    for c in world.old.values():
        for r in c.core:
            key = f"{M}/{c.layer_name(r.depth + 1)}/{r.lower_channel}"
            importance[key] = importance.get(key, 0.0) + r.importance
    assert [r["importance"] for r in rows] == pytest.approx([importance.get(r["neuron"], 0.0) for r in rows])
    keys = [(-r["classes"], -r["importance"]) for r in rows]
    assert keys == sorted(keys)
    assert len({r["importance"] for r in rows if r["classes"] == rows[0]["classes"]}) > 1 or rows[0]["classes"] != rows[1]["classes"]
    assert q(world, "hub_neurons", skip=2, limit=3) == rows[2:5]
    top = q(world, "hub_neurons", layer="layer3", limit=2)
    assert len(top) == 2 and all(r["layer"] == "layer3" for r in top)
    assert top[0]["classes"] == max(len(v) for k, v in want.items() if "/layer3/" in k)


def test_class_circuit_groups_and_edges(world):
    c = world.picked[1]
    rows = q(world, "class_circuit", class_index=1)
    want_groups = {(d, g): members for d in c.depths for g, members in c.groups(d).items()}
    assert {(r["depth"], r["index"]) for r in rows} == set(want_groups)
    by_uid = {r["group"]: r for r in rows}
    for r in rows:
        assert sorted(r["members"]) == sorted(f"{ch}:{j}" for ch, j in want_groups[(r["depth"], r["index"])])
        assert r["size"] == len(want_groups[(r["depth"], r["index"])])
    got_edges = {
        (by_uid[up]["depth"], by_uid[up]["index"], r["index"], w) for r in rows for up, w in zip(r["feeds_to"], r["weights"])
    }
    assert got_edges == {(e.depth, e.upper_group, e.lower_group, e.weight) for e in c.group_edges}
    labelled = [r for r in rows if r["label"]]
    assert [r["label"] for r in labelled] == ["Stripes"]


def _feeds(c) -> set[str]:
    return {f"{M}/{c.layer_name(r.depth + 1)}/{r.lower_channel}->{M}/{c.layer_name(r.depth)}/{r.channel}" for r in c.core}


def _neurons(c) -> set[str]:
    return {f"{M}/{c.layer_name(n.depth)}/{n.channel}" for n in c.neurons}


@pytest.mark.parametrize("case", ["two classes", "one class, two parameter sets"])
def test_circuit_diff(world, case):
    if case == "two classes":
        a, b = world.old[0], world.old[1]  # the default parameter set on both sides
        rows = q(world, "circuit_diff", class_a=0, class_b=1)
    else:
        a, b = world.old[1], world.newer
        rows = q(world, "circuit_diff", class_a=1, params_a=world.p1, class_b=1, params_b=world.p2)
    got = {(r["kind"], r["side"]): set(r["items"]) for r in rows}
    assert all(r["count"] == len(r["items"]) for r in rows)
    assert {(r["circuit_a"], r["circuit_b"]) for r in rows} == {(a.uid, b.uid)}
    for kind, sa, sb in (("neuron", _neurons(a), _neurons(b)), ("feeds", _feeds(a), _feeds(b))):
        assert got[(kind, "only_a")] == sa - sb
        assert got[(kind, "only_b")] == sb - sa
        assert got[(kind, "both")] == sa & sb
    # counts stay whole when the items are paged; the pages together are the items
    pa = {"class_a": 0, "class_b": 1} if case == "two classes" else {"class_a": 1, "params_a": world.p1, "class_b": 1, "params_b": world.p2}
    paged = [q(world, "circuit_diff", **pa, skip=s, limit=7) for s in range(0, max(map(len, got.values())), 7)]
    for key, items in got.items():
        parts = [r for page in paged for r in page if (r["kind"], r["side"]) == key]
        assert all(r["count"] == len(items) and len(r["items"]) <= 7 for r in parts)
        joined = [x for r in parts for x in r["items"]]
        assert len(joined) == len(items) and set(joined) == items


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_strongest_paths(world, depth):
    c = world.picked[3]
    # every FEEDS path from the logit down to `depth`, scored by the product of importances
    paths = [([(0, 3)], 1.0)]
    for _ in range(depth):
        paths = [
            (path + [(path[-1][0] + 1, r.lower_channel)], score * r.importance)
            for path, score in paths
            for r in c.core_of(*path[-1])
        ]
    want = sorted(paths, key=lambda p: -p[1])
    rows = q(world, "strongest_paths", class_index=3, depth=depth, limit=5)
    assert [r["score"] for r in rows] == pytest.approx([s for _, s in want[:5]])
    best = rows[0]
    assert best["path"] == [f"{M}/{c.layer_name(d)}/{ch}" for d, ch in want[0][0]]
    assert len(best["importances"]) == depth and best["circuit"] == c.uid
    assert depth <= MAX_PATH_DEPTH
    # only the extensions that can reach the top `limit` are unwound (a floor from the best
    # prefix): every limit, below and above a neuron's fan-in and the number of paths, is exact
    for limit in (1, 2, 3, len(want), len(want) + 10):
        rows = q(world, "strongest_paths", class_index=3, depth=depth, limit=limit)
        assert [r["score"] for r in rows] == pytest.approx([s for _, s in want[:limit]])
        for r in rows:
            assert r["score"] == pytest.approx(math.prod(r["importances"]))
            assert len(r["path"]) == depth + 1 and r["path"][0] == f"{M}/{c.layer_name(0)}/3"


def test_reverse_lookup(world):
    for layer, depth in (("layer3", 1), ("layer2", 2)):
        for ch in range(8):
            rows = q(world, "reverse_lookup", layer=layer, channel=ch)
            want = sorted(ci for ci, c in world.old.items() if ch in c.critical(depth))
            assert [r["class_index"] for r in rows] == want
            assert all(r["total"] == len(want) for r in rows)
            page = q(world, "reverse_lookup", layer=layer, channel=ch, skip=1, limit=1)
            assert [r["class_index"] for r in page] == want[1:2] and all(r["total"] == len(want) for r in page)
            for r in rows:
                c = world.old[r["class_index"]]
                assert r["circuit"] == c.uid and r["depth"] == depth
                assert r["feeds_up"] == sum(1 for x in c.core if x.depth == depth - 1 and x.lower_channel == ch)


def test_label_search(world):
    rows = q(world, "label_search", text="ROUND")
    assert [r["label"] for r in rows] == ["Round collar"]  # not the old-params one, not the running one
    assert rows[0]["total"] == 1
    both = q(world, "label_search", text="round", params=world.p1)
    assert q(world, "label_search", text="round", params=world.p1, skip=1, limit=1) == [both[1]]
    assert q(world, "label_search", text="round", params=world.p1)[0]["label"] == "Round collar"
    assert {r["label"] for r in q(world, "label_search", text="round", params=world.p1)} == {"Round collar", "round toe (old params)"}
    assert q(world, "label_search", text="stri")[0]["group"] == f"{world.newer.uid}/layer2/g{min(world.newer.groups(2))}"
    assert q(world, "label_search", text="no such label") == []


def test_neuron_concepts(world):
    c = world.picked[0]
    ch = c.critical(1)[0]
    rows = q(world, "neuron_concepts", class_index=0, layer="layer3", channel=ch)
    assert [r["index"] for r in rows] == [k.index for k in c.concepts_of(1, ch)]
    for r in rows:
        reps = sorted((m for m in c.concept_members if (m.depth, m.channel, m.concept) == (1, ch, r["index"]) and m.rep_rank >= 0), key=lambda m: m.rep_rank)
        assert [x["activation"] for x in r["exemplars"]] == [m.activation for m in reps]
        assert [x["rank"] for x in r["exemplars"]] == list(range(len(reps)))
        crops = {cr.crop_id: cr for cr in c.crops}
        assert [x["granularity"] for x in r["exemplars"]] == [crops[m.crop_id].granularity for m in reps]
        assert all(x["source"].startswith("/data/") and x["thumbnail"] is None for x in r["exemplars"])
        assert r["thumbnails"] == []  # written without a thumbnail callback


def test_library_queries_run_on_the_readonly_account(world):
    ro = Store(world.store.config, readonly=True)
    try:
        for name in ("overview", "shared_neurons", "hub_neurons"):
            qq = get_query(name)
            params = qq.bind(**{k: v for k, v in {"model": M, **ARGS[name]}.items() if k in qq.params})
            cols, rows = run_readonly(qq.cypher, params, store=ro)
            assert cols == list(qq.returns)
            assert [dict(zip(cols, r)) for r in rows] == run_query(world.store, name, **params)
    finally:
        ro.close()


def test_strongest_paths_with_negative_importances(store_server):
    """The floor that prunes the last level assumes importances >= 0 (mean absolute
    attributions); a circuit with a negative one must still get the exact top paths."""
    import dataclasses

    name = "tqn_" + uuid.uuid4().hex[:10]
    create_database(store_server, name)
    store = Store(store_server.with_database(name))
    try:
        ensure_schema(store)
        c = make_circuit(3)
        c.core[:] = [dataclasses.replace(r, importance=-r.importance) if i % 3 == 1 else r for i, r in enumerate(c.core)]
        write_circuit(store, c, model_info=model_info())
        for depth in (1, 2, 3):
            paths = [([(0, 3)], 1.0)]
            for _ in range(depth):
                paths = [(p + [(p[-1][0] + 1, r.lower_channel)], s * r.importance) for p, s in paths for r in c.core_of(*p[-1])]
            want = sorted(s for _, s in paths)[::-1]
            assert min(want) < 0 < max(want)
            for limit in (1, 3, len(want)):
                rows = run_query(store, "strongest_paths", model=M, class_index=3, depth=depth, limit=limit)
                assert [r["score"] for r in rows] == pytest.approx(want[:limit])
    finally:
        store.close()
        drop_database(store_server, name)
