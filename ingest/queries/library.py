"""The query library: named, parameterised, documented Cypher that ArcadeDB and Neo4j 5 both run.

The app's Cypher console starts from this list, and the app and the tests import it:

    from ingest.queries.library import QUERIES, get_query, run_query
    rows = run_query(store, "shared_neurons", model="fmnist-cnn", class_a=0, class_b=6)

Which circuit a query reads: only ``status = 'complete'`` circuits.  A class can have several
(one per parameter set: method parameters, layers, data source, precision, method version;
``Circuit.params_hash``).  Queries take ``params`` (a parameter-set hash).  Queries that compare
classes (shared_neurons, similarity_matrix, hub_neurons, circuit_diff, reverse_lookup) never mix
parameter sets: with ``params = null`` they use the model's *default parameter set*, the one
with the most complete circuits (ties: the most recently completed), and a class without a
circuit in it is left out.  Single-class queries with ``params = null`` read the class's latest
complete circuit (highest ``completed_at``).  `circuit_diff` takes one hash per side (one given:
both sides use it).

Every query is plain Neo4j-5 Cypher: no APOC, no ``SHORTEST k``, no CALL subqueries;
`strongest_paths` goes at most ``MAX_PATH_DEPTH`` layers down.

Answers stay small (issue 15): per-class lists are paged (``$skip``, ``$limit``, a ``total``
column), `circuit_diff` gives full counts and a page of items, `similarity_matrix` a page of
matrix rows, one row each with its values in lists, and `class_channels` one row of per-class
lists (Python users: `ingest.read.similarity`, from `class_channels`).  Cross-class queries read
what the writer keeps (ingest/write/aggregates.py): per-layer neuron counts, each circuit's critical
channels and labelled groups on its node; ArcadeDB reads a node in tens of microseconds and a
list element in well under one, so they read one node per class or per layer, never per edge.

Scale (``bench/store_scale.py``, 1,000 ResNet50-shaped circuits): Neuron nodes are shared by
every class, so walking a circuit's FEEDS from its neurons reads every circuit's FEEDS at hub
neurons.  Queries that need one class's FEEDS read them through the relationship index on
``FEEDS.class_index`` (``ingest/store/schema.py``) in their first clause (ArcadeDB uses a
relationship index only there, and only against parameters), then keep the chosen circuit's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ingest.queries.fragments import LATEST, latest_complete
from ingest.store.runner import Runner

MAX_PATH_DEPTH = 8

# Some statements compose Neuron uids (the form of `ingest.store.uids.neuron_uid`: <model>/<layer>/<channel>)
# with '+': from per-row values (FEEDS keys, NeuronStat rows) they cannot be parameters, and the
# library queries take model, layer and channel as a user gives them (`neurflow query --lib`, the
# console, which shows and runs the statement as written here).  The concatenation of parameters
# is computed once per statement, so the uid lookup still uses the index.


@dataclass(frozen=True)
class Query:
    name: str
    title: str
    description: str
    cypher: str
    params: dict[str, Any] = field(default_factory=dict)  # every parameter with its default
    returns: tuple[str, ...] = ()

    def bind(self, **given: Any) -> dict[str, Any]:
        unknown = set(given) - set(self.params)
        if unknown:
            raise KeyError(f"query {self.name!r} has no parameter {', '.join(sorted(unknown))}; it takes {', '.join(self.params) or 'none'}")
        return {**self.params, **given}


def param_set(given: str = "$params", carry: str = "") -> str:
    """Cypher lines binding `ps` to the parameter set `given` (a Cypher expression) or, when it is
    null, to the model's default parameter set: the one with the most complete circuits, ties to
    the most recently completed.  `carry` ("a, b, ") names variables to keep.  Reads the counts
    the writer keeps on the Model node (ingest/write/aggregates.py): scanning every circuit of the
    model cost 30-40 ms at 300 classes."""
    return (
        "OPTIONAL MATCH (m0:Model {uid: $model})\n"
        f"WITH {carry}coalesce(m0.ps_hashes, []) AS hs0, coalesce(m0.ps_circuits, []) AS ns0, coalesce(m0.ps_last, []) AS ls0\n"
        f"WITH {carry}reduce(best = -1, i IN range(0, size(hs0) - 1) | CASE WHEN best < 0 OR ns0[i] > ns0[best] "
        "OR (ns0[i] = ns0[best] AND ls0[i] > ls0[best]) THEN i ELSE best END) AS at0, hs0\n"
        f"WITH {carry}coalesce({given}, CASE WHEN at0 < 0 THEN null ELSE hs0[at0] END) AS ps\n"
    )


# every class of a model with its latest circuit in the parameter set (the model's default one when
# $params is null) -> (ps, ci, c), from the circuit nodes alone (they carry model, class_index and
# class_name)
_PICK_PER_CLASS = param_set() + (
    "MATCH (c:Circuit {status: 'complete'})\n"
    "WHERE c.model = $model AND c.params_hash = ps\n"
    "WITH ps, c.class_index AS ci, collect(c) AS cs\n"
    f"WITH ps, ci, {LATEST} AS c\n"
)


def _channels_of(carry: str) -> str:
    """Cypher lines binding `channels` to circuit c's critical channels of $layer (kept lists;
    the layer's position computed once, its list bound to a name first), keeping `carry`."""
    return (
        f"WITH {carry}, c, c.critical_layers AS l0, c.critical_offsets AS o0\n"
        f"WITH {carry}, c, o0, [i IN range(0, size(coalesce(l0, [])) - 1) WHERE l0[i] = $layer] AS at0\n"
        f"WITH {carry}, c, CASE WHEN size(at0) = 0 THEN [] ELSE c.critical_channels[o0[at0[0]]..o0[at0[0] + 1]] END AS channels\n"
    )


# the chosen circuit's critical channels of layer $layer, from the lists kept on the circuit node
# (ingest/write/aggregates.py): one node per class instead of the INCLUDES of every circuit
def _channels(c: str = "c", layer: str = "$layer") -> str:
    return (
        f"CASE WHEN {c}.critical_layers IS NULL OR NOT ({layer} IN {c}.critical_layers) THEN [] ELSE "
        f"{c}.critical_channels[{c}.critical_offsets[[i IN range(0, size({c}.critical_layers) - 1) "
        f"WHERE {c}.critical_layers[i] = {layer}][0]]..{c}.critical_offsets[[i IN range(0, size({c}.critical_layers) - 1) "
        f"WHERE {c}.critical_layers[i] = {layer}][0] + 1]] END"
    )


def _page(rows: str, columns: str, order: str) -> str:
    """Cypher that returns rows $skip .. $skip + $limit of the collected list `rows` (each an
    array; `columns` projects `r`) with the number of all rows as `total` ($limit null: all)."""
    return (
        f"WITH {rows} AS rows\n"
        "UNWIND CASE WHEN $limit IS NULL THEN rows[$skip..] ELSE rows[$skip..$skip + $limit] END AS r\n"
        f"RETURN {columns}, size(rows) AS total\n"
        f"ORDER BY {order}\n"
    )


_JACCARD = "CASE WHEN {a} + {b} - {s} = 0 THEN 0.0 ELSE toFloat({s}) / ({a} + {b} - {s}) END"



# Two circuits' critical neurons come from the lists on their nodes, compared layer by layer (a
# layer holds at most a few dozen); their FEEDS from the sorted integer keys the writer keeps per
# circuit (CircuitFeeds, ingest/write/aggregates.py: depth * 2^32 + upper * 2^16 + lower), unwound from
# the two nodes and grouped: a key in both sums to 3.  The rows are unwound from an index range
# and carry only the key, never a list: ArcadeDB charges every unwound row with the list it came
# from, so unwinding [side, keys] pairs needed more than the 1 GB query heap budget of the
# embedded default heap (2g) at 1,000 classes, and grouping one list built in the query more than
# 2 GB.  Measured at 1,000 classes: 7 ms; reading both circuits' FEEDS and the neurons at their
# ends cost 0.3-0.5 s, comparing the key lists with IN 0.7 s.  Every side returns its
# full count and one page of items; the items are in key order (depth, upper channel, lower
# channel) because each stored list is sorted and the grouping keeps first-seen order (an ORDER
# BY of the 9k keys cost 50 ms); only the page becomes uid strings.  FEEDS compare by depth: two
# parameter sets with different layer lists compare depth by depth.
_DIFF_LAYERS = "coalesce(ca.critical_layers, []) + [x IN coalesce(cb.critical_layers, []) WHERE NOT (x IN coalesce(ca.critical_layers, []))]"
_KEY_TO_UID = (
    "m + '/' + {L}[k / 4294967296 + 1] + '/' + toString(k % 65536) + '->' + m + '/' + {L}[k / 4294967296] + '/' "
    "+ toString((k / 65536) % 65536)"
)

_CIRCUIT_DIFF = (
    param_set("coalesce($params_a, $params_b)")
    + latest_complete("(:Class {model: $model, index: $class_a})", "ca", where="ca.params_hash = coalesce($params_a, ps)", carry="ps, ")
    + latest_complete("(:Class {model: $model, index: $class_b})", "cb", where="cb.params_hash = coalesce($params_b, ps)", carry="ca, ")
    + """WITH ca.uid AS a, cb.uid AS b
OPTIONAL MATCH (fa:CircuitFeeds {uid: a})
OPTIONAL MATCH (fb:CircuitFeeds {uid: b})
WITH a, b, coalesce(fa.keys, []) AS ka, coalesce(fb.keys, []) AS kb
UNWIND range(0, size(ka) + size(kb)) AS i
WITH a, b, CASE WHEN i < size(ka) THEN ka[i] WHEN i < size(ka) + size(kb) THEN kb[i - size(ka)] ELSE -1 END AS k,
     CASE WHEN i < size(ka) THEN 1 WHEN i < size(ka) + size(kb) THEN 2 ELSE 0 END AS side
WITH a, b, k, sum(side) AS s
WITH a, b, s, collect(k) AS ks
WITH a, b, collect([s, ks]) AS parts
MATCH (ca:Circuit {uid: a})
MATCH (cb:Circuit {uid: b})
WITH ca, cb, coalesce([x IN parts WHERE x[0] = 1][0][1], []) AS fa, coalesce([x IN parts WHERE x[0] = 2][0][1], []) AS fb,
     coalesce([x IN parts WHERE x[0] = 3][0][1], []) AS fab
WITH ca, cb, size(fa) AS n_fa, size(fb) AS n_fb, size(fab) AS n_fab, fa, fb, fab
WITH ca, cb, n_fa, n_fb, n_fab, fa, fb, fab, ca.model AS m, coalesce(ca.critical_layers, []) AS la0, coalesce(cb.critical_layers, []) AS lb0, """
    + _DIFF_LAYERS
    + """ AS layers
WITH ca, cb, m, la0, lb0, n_fa, n_fb, n_fab, fa, fb, fab,
     [lay IN layers | [m + '/' + lay + '/', """
    + _channels("ca", "lay")
    + ", "
    + _channels("cb", "lay")
    + """]] AS sides
WITH ca, cb, m, la0, lb0, n_fa, n_fb, n_fab, fa, fb, fab,
     [x IN sides | [[ch IN x[1] WHERE NOT (ch IN x[2]) | x[0] + toString(ch)],
                    [ch IN x[2] WHERE NOT (ch IN x[1]) | x[0] + toString(ch)],
                    [ch IN x[1] WHERE ch IN x[2] | x[0] + toString(ch)]]] AS per
WITH ca, cb, m, la0, lb0, n_fa, n_fb, n_fab, fa, fb, fab, reduce(acc = [], p IN per | acc + p[0]) AS na, reduce(acc = [], p IN per | acc + p[1]) AS nb,
     reduce(acc = [], p IN per | acc + p[2]) AS nab
UNWIND [
  {kind: 'neuron', side: 'only_a', count: size(na), items: CASE WHEN $limit IS NULL THEN na[$skip..] ELSE na[$skip..$skip + $limit] END},
  {kind: 'neuron', side: 'only_b', count: size(nb), items: CASE WHEN $limit IS NULL THEN nb[$skip..] ELSE nb[$skip..$skip + $limit] END},
  {kind: 'neuron', side: 'both', count: size(nab), items: CASE WHEN $limit IS NULL THEN nab[$skip..] ELSE nab[$skip..$skip + $limit] END},
  {kind: 'feeds', side: 'only_a', count: n_fa,
   items: [k IN CASE WHEN $limit IS NULL THEN fa[$skip..] ELSE fa[$skip..$skip + $limit] END | """ + _KEY_TO_UID.format(L="la0") + """]},
  {kind: 'feeds', side: 'only_b', count: n_fb,
   items: [k IN CASE WHEN $limit IS NULL THEN fb[$skip..] ELSE fb[$skip..$skip + $limit] END | """ + _KEY_TO_UID.format(L="lb0") + """]},
  {kind: 'feeds', side: 'both', count: n_fab,
   items: [k IN CASE WHEN $limit IS NULL THEN fab[$skip..] ELSE fab[$skip..$skip + $limit] END | """ + _KEY_TO_UID.format(L="la0") + """]}
] AS r
RETURN ca.uid AS circuit_a, cb.uid AS circuit_b, r.kind AS kind, r.side AS side, r.count AS count, r.items AS items
"""
)

# adjacency of the chosen circuit: by_depth[d] = [[upper neuron uid at depth d, [[lower uid, importance], ...]], ...];
# a path is [uids from the logit down, importances, product of importances].  Only the FEEDS above
# $depth are grouped.  Paths grow level by level in lists up to the last level but one (a circuit
# has tau^depth paths: 4,096 at depth 3 with tau 16, where the last level was 80 % of the time);
# the last level is unwound as rows, not appended to a list (each `acc + [...]` copies the list),
# and only the extensions that can reach the top $limit are unwound: the prefix with the best
# possible extension and its $limit strongest extensions are $limit real paths, so the answer's
# last score is at least the lowest of them (the floor); a prefix whose score times its neuron's
# strongest input falls below the floor, or an extension below it, cannot be in the answer (exact,
# ties kept).  That needs importances >= 0, which mean absolute attributions are; with a negative
# one anywhere no floor is used and every extension is unwound.
# Measured at 1,000 classes, depth 3: 9-10 ms instead of 15-17 ms (6 of them reading the class's
# FEEDS); depth 4 (65k paths) 65 ms, where sorting every path went past the server's query heap.
_STRONGEST_PATHS = (
    """MATCH (v)-[f:FEEDS]->(u)
WHERE f.class_index = $class_index
WITH f, v, u WHERE u.depth < $depth
WITH f.circuit AS cu, u.depth AS d, u.uid AS uu, collect([v.uid, f.importance]) AS ins
WITH collect([cu, d, uu, ins]) AS adj
"""
    + latest_complete("(:Class {model: $model, index: $class_index})", "c", carry="adj, ")
    + f"""MATCH (c)-[:INCLUDES {{depth: 0}}]->(logit:Neuron)
WHERE $depth >= 1 AND $depth <= {MAX_PATH_DEPTH}
WITH c, logit, [a IN adj WHERE a[0] = c.uid] AS adj
WITH c, logit, [d IN range(0, {MAX_PATH_DEPTH - 1}) | [a IN adj WHERE a[1] = d | [a[2], a[3]]]] AS by_depth
WITH c, by_depth, reduce(paths = [[[logit.uid], [], 1.0]], level IN range(1, $depth - 1) |
       reduce(acc = [], p IN paths | acc + [x IN coalesce([a IN by_depth[level - 1] WHERE a[0] = last(p[0])][0][1], []) |
         [p[0] + x[0], p[1] + x[1], p[2] * x[1]]])) AS paths
WITH c, paths, [a IN by_depth[$depth - 1] | [a[0], a[1], reduce(m = 0.0, x IN a[1] | CASE WHEN x[1] > m THEN x[1] ELSE m END),
       reduce(m = 0.0, x IN a[1] | CASE WHEN x[1] < m THEN x[1] ELSE m END)]] AS lastadj
WITH c, [p IN paths | [p, coalesce([a IN lastadj WHERE a[0] = last(p[0])][0], [null, [], 0.0, 0.0])]] AS pe
WITH c, pe, reduce(b = null, q IN pe | CASE WHEN b IS NULL OR q[0][2] * q[1][2] > b[0][2] * b[1][2] THEN q ELSE b END) AS best
WITH c, pe, CASE WHEN best IS NULL OR size(best[1][1]) < $limit OR size([q IN pe WHERE q[0][2] < 0 OR q[1][3] < 0]) > 0 THEN null ELSE best[0][2] * reduce(t = -1.0, x IN best[1][1] |
       CASE WHEN size([y IN best[1][1] WHERE y[1] > x[1]]) < $limit AND (t < 0 OR x[1] < t) THEN x[1] ELSE t END) END AS floor
UNWIND pe AS q
WITH c, floor, q[0] AS p, q[1] AS a
WHERE floor IS NULL OR p[2] * a[2] >= floor
UNWIND [x IN a[1] WHERE floor IS NULL OR p[2] * x[1] >= floor] AS x
WITH c, p, x, p[2] * x[1] AS score
ORDER BY score DESC
LIMIT $limit
RETURN c.uid AS circuit, p[0] + x[0] AS path, p[1] + x[1] AS importances, score
ORDER BY score DESC
"""
)

QUERIES: list[Query] = [
    Query(
        name="models",
        title="Models",
        description="Every model in the store with its number of classes and of complete circuits.",
        # complete circuits from the per-parameter-set counts the writer keeps on the Model node
        # (ingest/write/aggregates.py), not by walking every class's circuits
        cypher="""
MATCH (m:Model)
RETURN m.uid AS model, m.name AS name, m.arch AS arch, m.num_classes AS num_classes, m.input_size AS input_size,
       size([(m)-[:HAS_CLASS]->(cl:Class) | cl]) AS classes,
       reduce(n = 0, x IN coalesce(m.ps_circuits, []) | n + x) AS complete_circuits
ORDER BY model
""",
        returns=("model", "name", "arch", "num_classes", "input_size", "classes", "complete_circuits"),
    ),
    Query(
        name="overview",
        title="Overview: classes and circuits",
        description=(
            "One row per circuit: model, class, parameter hash, status and sizes.  Complete circuits "
            "only, unless include_incomplete is true (then running/failed ones show too).  Paged: rows "
            "$skip .. $skip + $limit in (model, class) order ($limit null: all); `total` counts every row."
        ),
        cypher="""
MATCH (c:Circuit)
WHERE ($model IS NULL OR c.model = $model) AND (c.status = 'complete' OR $include_incomplete)
WITH c ORDER BY c.model, c.class_index, c.completed_at DESC
"""
        + _page(
            "collect([c.model, c.class_index, c.class_name, c.uid, c.params_hash, c.status, c.num_neurons, c.num_feeds, "
            "c.num_concepts, c.num_groups, c.num_group_feeds, c.completed_at])",
            "r[0] AS model, r[1] AS class_index, r[2] AS class_name, r[3] AS circuit, r[4] AS params, r[5] AS status, "
            "r[6] AS neurons, r[7] AS feeds, r[8] AS concepts, r[9] AS groups, r[10] AS group_feeds, r[11] AS completed_at",
            "model, class_index, completed_at DESC",
        ),
        params={"model": None, "include_incomplete": False, "skip": 0, "limit": 100},
        returns=("model", "class_index", "class_name", "circuit", "params", "status", "neurons", "feeds", "concepts", "groups",
                 "group_feeds", "completed_at", "total"),
    ),
    Query(
        name="shared_neurons",
        # per layer, the two circuits' channels come from the lists on their nodes (no INCLUDES walk)
        title="Shared critical neurons of two classes",
        description=(
            "Per layer: the critical neurons of class A, of class B, the channels they share and "
            "the Jaccard index |A and B| / |A or B|."
        ),
        cypher=param_set()
        + latest_complete("(:Class {model: $model, index: $class_a})", "ca", where="ps IS NULL OR ca.params_hash = ps", carry="ps, ")
        + latest_complete("(:Class {model: $model, index: $class_b})", "cb", where="ps IS NULL OR cb.params_hash = ps", carry="ca, ")
        + """MATCH (l:Layer {model: $model})
WITH ca, cb, l, """
        + _channels("ca", "l.name")
        + " AS a, "
        + _channels("cb", "l.name")
        + """ AS b
WITH ca, cb, l, a, b, [x IN a WHERE x IN b] AS shared
RETURN l.name AS layer, l.depth AS depth, size(a) AS n_a, size(b) AS n_b, size(shared) AS n_shared,
       shared AS shared_channels, """
        + _JACCARD.format(a="size(a)", b="size(b)", s="size(shared)")
        + """ AS jaccard,
       ca.uid AS circuit_a, cb.uid AS circuit_b
ORDER BY depth
""",
        params={"model": None, "class_a": 0, "class_b": 1, "params": None},
        returns=("layer", "depth", "n_a", "n_b", "n_shared", "shared_channels", "jaccard", "circuit_a", "circuit_b"),
    ),
    Query(
        name="class_channels",
        title="Critical channels of one layer, per class",
        description=(
            "One row holding parallel lists, one entry per class of the parameter set (optionally only "
            "the classes in $classes), in class order: `classes` (class indices), `names`, `circuits` "
            "(the chosen circuit of each) and `channels` (each class's sorted critical channels of "
            "`layer`; [] where it has none).  What a similarity matrix is computed from in the client "
            "(`ingest.read.similarity.similarity_matrix`): one row of classes x at most the layer's "
            "critical-neuron count channels, instead of classes^2 rows."
        ),
        # Reads the lists kept on each circuit node (ingest/write/aggregates.py), not the INCLUDES of
        # every circuit, and circuit nodes only (no Class-HAS_CIRCUIT walk).  One row, not one per
        # class: the server streams rows one at a time, and 1,000 rows cost 111-143 ms median
        # against 73-93 ms for the same lists in one row (1,000 classes, load 8).  The lists are
        # projected from one collected list of [class, name, circuit, channels], since collect()
        # drops nulls (a class without a name would shift the lists).
        cypher=_PICK_PER_CLASS
        + "WITH ci, c WHERE $classes IS NULL OR ci IN $classes\n"
        + _channels_of("ci")
        + """WITH ci, c.class_name AS name, c.uid AS circuit, channels ORDER BY ci
WITH collect([ci, name, circuit, channels]) AS per
RETURN [x IN per | x[0]] AS classes, [x IN per | x[1]] AS names, [x IN per | x[2]] AS circuits, [x IN per | x[3]] AS channels
""",
        params={"model": None, "layer": None, "params": None, "classes": None},
        returns=("classes", "names", "circuits", "channels"),
    ),
    Query(
        name="similarity_matrix",
        title="Class-by-class similarity of one layer",
        description=(
            "Jaccard index of the critical neurons of pairs of classes of a model in one layer: one row "
            "per class A (a row of the matrix), rows $skip .. $skip + $limit in class order ($limit "
            "null: all; by default one row).  A row holds class A (`class_a`, `name_a`, `n_a` critical "
            "channels) and lists parallel to `classes_b` (every class B in class order, diagonal "
            "included): `names_b`, `n_b`, `n_shared`, `jaccard`.  The whole matrix is classes rows of "
            "classes entries; Python users compute it from `class_channels` "
            "(`ingest.read.similarity.similarity_matrix`)."
        ),
        # One row per matrix row, its values in lists: the server streams rows one at a time
        # (a 1,000-row page of one (A, B) pair per row cost 109 / 182 ms p50 / p95 at 1,000
        # classes).  Class B comes out in class order by construction (the class list is sorted
        # and list comprehensions keep order).  Lists bound to names once (ArcadeDB re-reads a
        # map entry inside a list comprehension for every element).  Class A's channels become a
        # 0/1 list indexed by channel, so a pair costs one look-up per channel of B instead of
        # |A| x |B| comparisons (0.25 s for a 2-row page at 1,000 classes).
        cypher=_PICK_PER_CLASS
        + _channels_of("ci")
        + """WITH ci, c.class_name AS name, channels AS chans ORDER BY ci
WITH collect([ci, name, chans]) AS classes
UNWIND CASE WHEN $limit IS NULL THEN classes[$skip..] ELSE classes[$skip..$skip + $limit] END AS a
WITH classes, a, a[2] AS ac
WITH classes, a, size(ac) AS n_a,
     [i IN range(0, reduce(m = -1, x IN ac | CASE WHEN x > m THEN x ELSE m END)) | CASE WHEN i IN ac THEN 1 ELSE 0 END] AS mask
WITH classes, a, n_a, [b IN classes | [size(b[2]), reduce(n = 0, x IN b[2] | n + coalesce(mask[x], 0))]] AS per
RETURN a[0] AS class_a, a[1] AS name_a, n_a, [b IN classes | b[0]] AS classes_b, [b IN classes | b[1]] AS names_b,
       [x IN per | x[0]] AS n_b, [x IN per | x[1]] AS n_shared,
       [x IN per | """
        + _JACCARD.format(a="n_a", b="x[0]", s="x[1]")
        + """] AS jaccard
""",
        params={"model": None, "layer": None, "params": None, "skip": 0, "limit": 1},
        returns=("class_a", "name_a", "n_a", "classes_b", "names_b", "n_b", "n_shared", "jaccard"),
    ),
    Query(
        name="hub_neurons",
        title="Hub neurons",
        description=(
            "The neurons that are critical for the most classes (class-logit neurons excluded), "
            "optionally in one layer; ties (a neuron every class shares) are ranked by `importance`, "
            "the neuron's importance summed over those classes' circuits (per circuit: the sum of its "
            "FEEDS importances).  Rows $skip .. $skip + $limit."
        ),
        # Reads the writer's aggregates (ingest/write/aggregates.py), kept in the transaction that
        # completes or retracts a circuit: the per-layer count lists, ranked in memory (only each
        # layer's kept top channels when the page lies within them), then the class lists of the
        # rows returned only.  Counting the INCLUDES of every chosen circuit
        # took about 1 s at 1,000 classes; scanning a node per neuron 0.3 s at 300.  A class with
        # two complete circuits in the parameter set (two data sets) counts once in `classes`.
        cypher=param_set()
        + """MATCH (s:LayerStat)
WHERE s.params_hash = ps AND s.model = $model AND s.depth > 0 AND ($layer IS NULL OR s.layer = $layer)
WITH ps, s.layer AS layer, s.depth AS depth, s.classes AS cls, s.importance AS imp,
     CASE WHEN $skip + $limit <= size(coalesce(s.top, [])) THEN s.top ELSE range(0, size(s.classes) - 1) END AS chans
UNWIND chans AS channel
WITH ps, layer, depth, channel, cls[channel] AS classes, imp[channel] AS importance
WHERE classes > 0
WITH ps, layer, depth, channel, classes, importance
ORDER BY classes DESC, importance DESC, depth, channel
SKIP $skip LIMIT $limit
MATCH (s:NeuronStat {uid: $model + '/' + layer + '/' + toString(channel) + '@' + ps})
WITH s, layer, depth, channel, classes, importance, s.class_indices AS ci
RETURN s.neuron AS neuron, layer, depth, channel, classes,
       [i IN range(0, size(ci) - 1) WHERE i = 0 OR ci[i] <> ci[i - 1] | ci[i]] AS class_indices, importance
ORDER BY classes DESC, importance DESC, depth, channel
""",
        params={"model": None, "layer": None, "params": None, "skip": 0, "limit": 20},
        returns=("neuron", "layer", "depth", "channel", "classes", "class_indices", "importance"),
    ),
    Query(
        name="class_circuit",
        title="Circuit of one class (layered groups)",
        description=(
            "The groups of a class's circuit, layer by layer, each with its members "
            "('channel:concept') and its GROUP_FEEDS edges to the groups of the layer above "
            "(feeds_to[i] has weight weights[i])."
        ),
        cypher=latest_complete("(:Class {model: $model, index: $class_index})")
        + """MATCH (c)-[:HAS_GROUP]->(g:Group)
OPTIONAL MATCH (g)<-[:IN_GROUP]-(k:Concept)
WITH c, g, k ORDER BY k.channel, k.index
WITH c, g, collect(toString(k.channel) + ':' + toString(k.index)) AS members
OPTIONAL MATCH (g)-[e:GROUP_FEEDS]->(up:Group)
WITH c, g, members, up, e ORDER BY up.index
WITH c, g, members, collect(up.uid) AS feeds_to, collect(e.weight) AS weights
RETURN c.uid AS circuit, g.uid AS group, g.layer AS layer, g.depth AS depth, g.index AS index, g.size AS size,
       g.label AS label, g.label_source AS label_source, members, feeds_to, weights
ORDER BY depth, index
""",
        params={"model": None, "class_index": 0, "params": None},
        returns=("circuit", "group", "layer", "depth", "index", "size", "label", "label_source", "members", "feeds_to", "weights"),
    ),
    Query(
        name="circuit_diff",
        title="Diff of two circuits",
        description=(
            "Critical neurons and FEEDS edges ('lower uid->upper uid') only in circuit A, only in B, "
            "and in both: six rows, each with the full `count` and items $skip .. $skip + $limit "
            "($limit null: all).  A and B are (class, params) pairs: two classes, or one class under "
            "two parameter sets."
        ),
        # Scale: see _CIRCUIT_DIFF (the circuits' kept FEEDS keys and critical lists).  Walking
        # FEEDS from the circuits' neurons would read every circuit's edges at shared (hub)
        # neurons: seconds at 100 classes.
        cypher=_CIRCUIT_DIFF,
        params={"model": None, "class_a": 0, "params_a": None, "class_b": 1, "params_b": None, "skip": 0, "limit": 100},
        returns=("circuit_a", "circuit_b", "kind", "side", "count", "items"),
    ),
    Query(
        name="strongest_paths",
        title="Strongest paths from a class logit",
        description=(
            "FEEDS paths of a class's circuit from a neuron at `depth` up to the class logit "
            f"(depth 0), scored by the product of the FEEDS importances along the path (depth <= {MAX_PATH_DEPTH}).  "
            "`path` lists neuron uids from the logit downwards; the top $limit paths, best first."
        ),
        # Scale: the class's FEEDS come from the relationship index (as in circuit_diff), grouped
        # into per-depth adjacency lists of the chosen circuit; paths grow level by level in
        # lists.  A variable-length FEEDS pattern filtered on `circuit` reads every circuit's
        # edges at each shared neuron it passes (0.1-0.8 s at depth 3 and 100 classes).
        cypher=_STRONGEST_PATHS,
        params={"model": None, "class_index": 0, "params": None, "depth": 2, "limit": 10},
        returns=("circuit", "path", "importances", "score"),
    ),
    Query(
        name="reverse_lookup",
        title="Which classes use a neuron",
        description=(
            "The classes whose chosen complete circuit includes neuron (layer, channel), with the "
            "number of neurons it FEEDS in that circuit; rows $skip .. $skip + $limit in class order "
            "($limit null: all), `total` counts every class."
        ),
        # Scale: starts at the neuron (its INCLUDES come from the circuits that use it); the
        # number of neurons it FEEDS in a circuit is kept on INCLUDES (`feeds_up`) by the writer,
        # so a hub's FEEDS of every class are not read.  "Chosen" = no newer complete circuit of
        # the class (with the same parameter filter).
        cypher="""MATCH (n:Neuron {uid: $model + '/' + $layer + '/' + toString($channel)})
WITH n
""" + param_set(carry="n, ") + """MATCH (n)<-[i:INCLUDES]-(c:Circuit {status: 'complete'})<-[:HAS_CIRCUIT]-(cl:Class {model: $model})
WHERE c.params_hash = ps
  AND size([(cl)-[:HAS_CIRCUIT]->(c2:Circuit {status: 'complete'})
            WHERE c2.params_hash = ps AND c2.completed_at > c.completed_at | c2]) = 0
WITH n, cl, c, i ORDER BY cl.index
""" + _page(
            "collect([cl.index, cl.name, c.uid, c.params_hash, n.depth, coalesce(i.feeds_up, 0)])",
            "r[0] AS class_index, r[1] AS class_name, r[2] AS circuit, r[3] AS params, r[4] AS depth, r[5] AS feeds_up",
            "class_index",
        ),
        params={"model": None, "layer": None, "channel": 0, "params": None, "skip": 0, "limit": 100},
        returns=("class_index", "class_name", "circuit", "params", "depth", "feeds_up", "total"),
    ),
    Query(
        name="label_search",
        title="Search group labels",
        description=(
            "Groups of the chosen complete circuits whose label contains a text (case-insensitive); "
            "rows $skip .. $skip + $limit, `total` counts every match."
        ),
        # Reads the labelled groups each circuit node keeps (`labels_*` lists, kept by the writer
        # and by set_group_labels in the transaction that changes a label): one node per class
        # instead of every group of every circuit.
        cypher="""MATCH (c:Circuit {status: 'complete'})
WHERE ($model IS NULL OR c.model = $model) AND ($params IS NULL OR c.params_hash = $params)
WITH c.model AS model, c.class_index AS ci, collect(c) AS cs
WITH model, ci, """ + LATEST + """ AS c
WITH model, ci, c, coalesce(c.labels_text, []) AS texts, toLower($text) AS needle
WITH model, ci, c, [i IN range(0, size(texts) - 1) WHERE toLower(texts[i]) CONTAINS needle] AS hits
WHERE size(hits) > 0
UNWIND hits AS i
WITH model, ci, c.class_name AS name, c.labels_group[i] AS grp, c.labels_text[i] AS label, c.labels_source[i] AS source,
     c.labels_score[i] AS score, c.labels_layer[i] AS layer, c.labels_depth[i] AS depth, c.labels_size[i] AS size
ORDER BY model, ci, depth, grp
""" + _page(
            "collect([model, ci, name, grp, label, source, score, layer, depth, size])",
            "r[0] AS model, r[1] AS class_index, r[2] AS class_name, r[3] AS group, r[4] AS label, r[5] AS label_source, "
            "r[6] AS label_score, r[7] AS layer, r[8] AS depth, r[9] AS size",
            "model, class_index, depth, group",
        ),
        params={"text": "", "model": None, "params": None, "skip": 0, "limit": 100},
        returns=("model", "class_index", "class_name", "group", "label", "label_source", "label_score", "layer", "depth", "size", "total"),
    ),
    Query(
        name="neuron_concepts",
        title="Concepts of a neuron and their exemplar crops",
        description=(
            "The concepts of neuron (layer, channel) in a class's chosen circuit, each with its group "
            "and its representative crops in rank order (exemplars: rank, activation, crop uid, "
            "thumbnail path relative to the artifact folder, image source, granularity); "
            "`thumbnails` lists the thumbnail paths alone."
        ),
        cypher=latest_complete("(:Class {model: $model, index: $class_index})")
        + """MATCH (c)-[:HAS_CONCEPT]->(k:Concept)-[:OF]->(n:Neuron {uid: $model + '/' + $layer + '/' + toString($channel)})
OPTIONAL MATCH (k)-[:IN_GROUP]->(g:Group)
OPTIONAL MATCH (k)-[e:EXEMPLIFIED_BY]->(cr:Crop)-[:CROP_OF]->(im:Image)
WITH c, k, g, e, cr, im ORDER BY e.rank
WITH c, k, g, collect(CASE WHEN cr IS NULL THEN null ELSE
       {rank: e.rank, activation: e.activation, crop: cr.uid, thumbnail: cr.thumbnail, source: im.source,
        granularity: cr.granularity} END) AS exemplars
RETURN c.uid AS circuit, k.uid AS concept, k.index AS index, k.size AS size, k.mean_activation AS mean_activation,
       g.uid AS group, g.label AS label, exemplars,
       [x IN exemplars WHERE x.thumbnail IS NOT NULL | x.thumbnail] AS thumbnails
ORDER BY index
""",
        params={"model": None, "class_index": 0, "params": None, "layer": None, "channel": 0},
        returns=("circuit", "concept", "index", "size", "mean_activation", "group", "label", "exemplars", "thumbnails"),
    ),
]

QUERY_BY_NAME: dict[str, Query] = {q.name: q for q in QUERIES}


def get_query(name: str) -> Query:
    try:
        return QUERY_BY_NAME[name]
    except KeyError:
        raise KeyError(f"no library query named {name!r}; known: {', '.join(QUERY_BY_NAME)}") from None


def run_query(store: Any, name: str, **params: Any) -> list[dict[str, Any]]:
    """Run a library query on a `Store` (writer or read-only); rows as dicts.  Through the store
    code's one execute path (`ingest.store.runner`), in a read transaction, whose row conversion
    skips the driver's per-element walk of list values."""
    q = get_query(name)
    with Runner(store) as runner:
        return runner.read(q.cypher, q.bind(**params))
