"""The query library: named, parameterised, documented Cypher that ArcadeDB and Neo4j 5 both run.

The app's Cypher console starts from this list, and the app and the tests import it:

    from ingest.queries import QUERIES, get_query, run_query
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

Scale (``bench/store_scale.py``, 1,000 ResNet50-shaped circuits): Neuron nodes are shared by
every class, so walking a circuit's FEEDS from its neurons reads every circuit's FEEDS at hub
neurons.  Queries that need one class's FEEDS read them through the relationship index on
``FEEDS.class_index`` (``ingest/schema.py``) in their first clause (ArcadeDB uses a
relationship index only there, and only against parameters), then keep the chosen circuit's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MAX_PATH_DEPTH = 8


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


def _pick(cls_pattern: str, circuit: str, params: str = "$params") -> str:
    """Cypher lines binding `circuit` to the chosen complete circuit of the class matched by `cls_pattern`."""
    return (
        f"MATCH {cls_pattern}-[:HAS_CIRCUIT]->({circuit}:Circuit {{status: 'complete'}})\n"
        f"WHERE {params} IS NULL OR {circuit}.params_hash = {params}\n"
    )


def param_set(given: str = "$params", carry: str = "") -> str:
    """Cypher lines binding `ps` to the parameter set `given` (a Cypher expression) or, when it is
    null, to the model's default parameter set: the one with the most complete circuits, ties to
    the most recently completed.  `carry` ("a, b, ") names variables to keep."""
    return (
        "OPTIONAL MATCH (:Class {model: $model})-[:HAS_CIRCUIT]->(c0:Circuit {status: 'complete'})\n"
        f"WHERE {given} IS NULL\n"
        f"WITH {carry}c0.params_hash AS ph, count(c0) AS n0, max(c0.completed_at) AS last0\n"
        "ORDER BY n0 DESC, last0 DESC LIMIT 1\n"
        f"WITH {carry}coalesce({given}, ph) AS ps\n"
    )


# every class of a model with its circuit in the parameter set -> (ps, cl, c)
_PICK_PER_CLASS = param_set() + (
    "MATCH (cl:Class {model: $model})-[:HAS_CIRCUIT]->(c:Circuit {status: 'complete'})\n"
    "WHERE c.params_hash = ps\n"
    "WITH ps, cl, c ORDER BY c.completed_at DESC\n"
    "WITH ps, cl, collect(c)[0] AS c\n"
)

_JACCARD = "CASE WHEN {a} + {b} - {s} = 0 THEN 0.0 ELSE toFloat({s}) / ({a} + {b} - {s}) END"



_CIRCUIT_DIFF = (
    """MATCH (v)-[f:FEEDS]->(u)
WHERE f.class_index IN [$class_a, $class_b]
WITH v.uid + '->' + u.uid AS key, collect(f.circuit) AS cs
WITH collect([key, cs]) AS feeds
"""
    + param_set("coalesce($params_a, $params_b)", "feeds, ")
    + """MATCH (:Class {model: $model, index: $class_a})-[:HAS_CIRCUIT]->(ca:Circuit {status: 'complete'})
WHERE ca.params_hash = coalesce($params_a, ps)
WITH feeds, ps, ca ORDER BY ca.completed_at DESC LIMIT 1
MATCH (:Class {model: $model, index: $class_b})-[:HAS_CIRCUIT]->(cb:Circuit {status: 'complete'})
WHERE cb.params_hash = coalesce($params_b, ps)
WITH feeds, ca, cb ORDER BY cb.completed_at DESC LIMIT 1
WITH feeds, ca, cb, ca.uid AS a, cb.uid AS b,
     [(ca)-[:INCLUDES]->(n:Neuron) | [n.depth, n.uid]] AS pa, [(cb)-[:INCLUDES]->(n:Neuron) | [n.depth, n.uid]] AS pb
WITH feeds, ca, cb, a, b, pa, pb, reduce(m = 0, x IN pa + pb | CASE WHEN x[0] > m THEN x[0] ELSE m END) AS deepest
WITH feeds, ca, cb, a, b, [d IN range(0, deepest) | [x IN pa WHERE x[0] = d | x[1]]] AS na,
     [d IN range(0, deepest) | [x IN pb WHERE x[0] = d | x[1]]] AS nb
WITH ca, cb, reduce(acc = [], d IN range(0, size(na) - 1) | acc + [x IN na[d] WHERE NOT (x IN nb[d])]) AS n_only_a,
     reduce(acc = [], d IN range(0, size(nb) - 1) | acc + [x IN nb[d] WHERE NOT (x IN na[d])]) AS n_only_b,
     reduce(acc = [], d IN range(0, size(na) - 1) | acc + [x IN na[d] WHERE x IN nb[d]]) AS n_both,
     [x IN feeds WHERE a IN x[1] AND NOT (b IN x[1]) | x[0]] AS f_only_a,
     [x IN feeds WHERE b IN x[1] AND NOT (a IN x[1]) | x[0]] AS f_only_b,
     [x IN feeds WHERE a IN x[1] AND b IN x[1] | x[0]] AS f_both
UNWIND [
  {kind: 'neuron', side: 'only_a', items: n_only_a}, {kind: 'neuron', side: 'only_b', items: n_only_b},
  {kind: 'neuron', side: 'both', items: n_both}, {kind: 'feeds', side: 'only_a', items: f_only_a},
  {kind: 'feeds', side: 'only_b', items: f_only_b}, {kind: 'feeds', side: 'both', items: f_both}
] AS r
RETURN ca.uid AS circuit_a, cb.uid AS circuit_b, r.kind AS kind, r.side AS side, size(r.items) AS count, r.items AS items
"""
)

# adjacency of the chosen circuit: by_depth[d] = [[upper neuron uid at depth d, [[lower uid, importance], ...]], ...];
# a path is [uids from the logit down, importances, product of importances]
_STRONGEST_PATHS = (
    """MATCH (v)-[f:FEEDS]->(u)
WHERE f.class_index = $class_index
WITH f.circuit AS cu, u.depth AS d, u.uid AS uu, collect([v.uid, f.importance]) AS ins
WITH collect([cu, d, uu, ins]) AS adj
"""
    + _pick("(:Class {model: $model, index: $class_index})", "c")
    + f"""WITH adj, c ORDER BY c.completed_at DESC LIMIT 1
MATCH (c)-[:INCLUDES {{depth: 0}}]->(logit:Neuron)
WHERE $depth >= 1 AND $depth <= {MAX_PATH_DEPTH}
WITH c, logit, [a IN adj WHERE a[0] = c.uid] AS adj
WITH c, logit, [d IN range(0, {MAX_PATH_DEPTH - 1}) | [a IN adj WHERE a[1] = d | [a[2], a[3]]]] AS by_depth
WITH c, reduce(paths = [[[logit.uid], [], 1.0]], level IN range(1, $depth) |
       reduce(acc = [], p IN paths | acc + [x IN coalesce([a IN by_depth[level - 1] WHERE a[0] = last(p[0])][0][1], []) |
         [p[0] + x[0], p[1] + x[1], p[2] * x[1]]])) AS paths
UNWIND paths AS p
RETURN c.uid AS circuit, p[0] AS path, p[1] AS importances, p[2] AS score
ORDER BY score DESC
LIMIT $limit
"""
)

QUERIES: list[Query] = [
    Query(
        name="models",
        title="Models",
        description="Every model in the store with its number of classes and of complete circuits.",
        cypher="""
MATCH (m:Model)
OPTIONAL MATCH (m)-[:HAS_CLASS]->(cl:Class)
OPTIONAL MATCH (cl)-[:HAS_CIRCUIT]->(c:Circuit {status: 'complete'})
RETURN m.uid AS model, m.name AS name, m.arch AS arch, m.num_classes AS num_classes, m.input_size AS input_size,
       count(DISTINCT cl) AS classes, count(DISTINCT c) AS complete_circuits
ORDER BY model
""",
        returns=("model", "name", "arch", "num_classes", "input_size", "classes", "complete_circuits"),
    ),
    Query(
        name="overview",
        title="Overview: classes and circuits",
        description=(
            "One row per circuit: model, class, parameter hash, status and sizes.  Complete circuits "
            "only, unless include_incomplete is true (then running/failed ones show too)."
        ),
        cypher="""
MATCH (m:Model)-[:HAS_CLASS]->(cl:Class)-[:HAS_CIRCUIT]->(c:Circuit)
WHERE ($model IS NULL OR m.uid = $model) AND (c.status = 'complete' OR $include_incomplete)
RETURN m.uid AS model, cl.index AS class_index, cl.name AS class_name, c.uid AS circuit, c.params_hash AS params,
       c.status AS status, c.num_neurons AS neurons, c.num_feeds AS feeds, c.num_concepts AS concepts,
       c.num_groups AS groups, c.num_group_feeds AS group_feeds, c.completed_at AS completed_at
ORDER BY model, class_index, completed_at DESC
""",
        params={"model": None, "include_incomplete": False},
        returns=("model", "class_index", "class_name", "circuit", "params", "status", "neurons", "feeds", "concepts", "groups", "group_feeds", "completed_at"),
    ),
    Query(
        name="shared_neurons",
        title="Shared critical neurons of two classes",
        description=(
            "Per layer: the critical neurons of class A, of class B, the channels they share and "
            "the Jaccard index |A and B| / |A or B|."
        ),
        cypher=param_set()
        + _pick("(:Class {model: $model, index: $class_a})", "ca", "ps")
        + "WITH ps, ca ORDER BY ca.completed_at DESC LIMIT 1\n"
        + _pick("(:Class {model: $model, index: $class_b})", "cb", "ps")
        + """WITH ca, cb ORDER BY cb.completed_at DESC LIMIT 1
MATCH (l:Layer {model: $model})
OPTIONAL MATCH (ca)-[:INCLUDES]->(na:Neuron)
WHERE na.layer = l.name
WITH ca, cb, l, na ORDER BY na.channel
WITH ca, cb, l, collect(na.channel) AS a
OPTIONAL MATCH (cb)-[:INCLUDES]->(nb:Neuron)
WHERE nb.layer = l.name
WITH ca, cb, l, a, nb ORDER BY nb.channel
WITH ca, cb, l, a, collect(nb.channel) AS b
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
        name="similarity_matrix",
        title="Class-by-class similarity of one layer",
        description=(
            "Jaccard index of the critical neurons of every pair of classes of a model in one layer "
            "(full matrix, diagonal included, rows in class order).  Cost grows with classes^2 x "
            "neurons^2: fine up to a few hundred classes (1,000 classes: a million rows)."
        ),
        # Rows come out in (class_a, class_b) order by construction (the class list is sorted, and
        # UNWIND keeps list order): a final ORDER BY of classes^2 rows exceeds ArcadeDB's 2 GB
        # query heap budget at 1,000 classes.  Lists bound to names once (ArcadeDB re-reads a map
        # entry inside a list comprehension for every element).
        cypher=_PICK_PER_CLASS
        + """OPTIONAL MATCH (c)-[:INCLUDES]->(n:Neuron {layer: $layer})
WITH cl, collect(n.channel) AS chans
WITH cl, chans ORDER BY cl.index
WITH collect([cl.index, cl.name, chans]) AS classes
UNWIND classes AS a
UNWIND classes AS b
WITH a, b, a[2] AS ac, b[2] AS bc
WITH a, b, size(ac) AS n_a, size(bc) AS n_b, size([x IN ac WHERE x IN bc]) AS shared
RETURN a[0] AS class_a, a[1] AS name_a, b[0] AS class_b, b[1] AS name_b, n_a, n_b, shared AS n_shared, """
        + _JACCARD.format(a="n_a", b="n_b", s="shared")
        + """ AS jaccard
""",
        params={"model": None, "layer": None, "params": None},
        returns=("class_a", "name_a", "class_b", "name_b", "n_a", "n_b", "n_shared", "jaccard"),
    ),
    Query(
        name="hub_neurons",
        title="Hub neurons",
        description=(
            "The neurons that are critical for the most classes (class-logit neurons excluded), "
            "optionally in one layer."
        ),
        # One chosen circuit per class, so count(cl) counts classes; the class lists are sorted
        # for the top rows only (ArcadeDB sorts slowly: sorting every (neuron, class) row first
        # doubled the time at 100 classes).  Reads every INCLUDES of every chosen circuit.
        cypher=_PICK_PER_CLASS
        + """MATCH (c)-[:INCLUDES]->(n:Neuron)
WHERE n.depth > 0 AND ($layer IS NULL OR n.layer = $layer)
WITH n, count(cl) AS classes, collect(cl.index) AS class_indices
ORDER BY classes DESC, n.depth, n.channel
LIMIT $limit
UNWIND class_indices AS ci
WITH n, classes, ci ORDER BY ci
WITH n, classes, collect(ci) AS class_indices
RETURN n.uid AS neuron, n.layer AS layer, n.depth AS depth, n.channel AS channel, classes, class_indices
ORDER BY classes DESC, depth, channel
""",
        params={"model": None, "layer": None, "params": None, "limit": 20},
        returns=("neuron", "layer", "depth", "channel", "classes", "class_indices"),
    ),
    Query(
        name="class_circuit",
        title="Circuit of one class (layered groups)",
        description=(
            "The groups of a class's circuit, layer by layer, each with its members "
            "('channel:concept') and its GROUP_FEEDS edges to the groups of the layer above "
            "(feeds_to[i] has weight weights[i])."
        ),
        cypher=_pick("(:Class {model: $model, index: $class_index})", "c")
        + """WITH c ORDER BY c.completed_at DESC LIMIT 1
MATCH (c)-[:HAS_GROUP]->(g:Group)
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
            "and in both.  A and B are (class, params) pairs: two classes, or one class under two "
            "parameter sets."
        ),
        # Scale: the FEEDS of both classes come from the relationship index on FEEDS.class_index
        # (the first clause, where ArcadeDB uses it), grouped by (lower, upper) neuron with the
        # circuits that have that edge; membership is then a look at that short list.  Walking
        # FEEDS from the circuits' neurons would read every circuit's edges at shared (hub)
        # neurons: seconds at 100 classes.
        cypher=_CIRCUIT_DIFF,
        params={"model": None, "class_a": 0, "params_a": None, "class_b": 1, "params_b": None},
        returns=("circuit_a", "circuit_b", "kind", "side", "count", "items"),
    ),
    Query(
        name="strongest_paths",
        title="Strongest paths from a class logit",
        description=(
            "FEEDS paths of a class's circuit from a neuron at `depth` up to the class logit "
            f"(depth 0), scored by the product of the FEEDS importances along the path (depth <= {MAX_PATH_DEPTH}).  "
            "`path` lists neuron uids from the logit downwards."
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
            "number of neurons it FEEDS in that circuit."
        ),
        # Scale: starts at the neuron (its INCLUDES come from the circuits that use it) instead of
        # walking every chosen circuit's INCLUDES; its FEEDS are counted per circuit in one pass.
        # "Chosen" = no newer complete circuit of the class (with the same parameter filter).
        cypher="""MATCH (n:Neuron {uid: $model + '/' + $layer + '/' + toString($channel)})
OPTIONAL MATCH (n)-[f:FEEDS]->()
WITH n, f.circuit AS cu, count(f) AS k
WITH n, collect([cu, k]) AS ups
""" + param_set(carry="n, ups, ") + """MATCH (n)<-[:INCLUDES]-(c:Circuit {status: 'complete'})<-[:HAS_CIRCUIT]-(cl:Class {model: $model})
WHERE c.params_hash = ps
  AND size([(cl)-[:HAS_CIRCUIT]->(c2:Circuit {status: 'complete'})
            WHERE c2.params_hash = ps AND c2.completed_at > c.completed_at | c2]) = 0
RETURN cl.index AS class_index, cl.name AS class_name, c.uid AS circuit, c.params_hash AS params,
       n.depth AS depth, coalesce([x IN ups WHERE x[0] = c.uid][0][1], 0) AS feeds_up
ORDER BY class_index
""",
        params={"model": None, "layer": None, "channel": 0, "params": None},
        returns=("class_index", "class_name", "circuit", "params", "depth", "feeds_up"),
    ),
    Query(
        name="label_search",
        title="Search group labels",
        description="Groups of the chosen complete circuits whose label contains a text (case-insensitive).",
        cypher="""MATCH (cl:Class)-[:HAS_CIRCUIT]->(c:Circuit {status: 'complete'})
WHERE ($model IS NULL OR cl.model = $model) AND ($params IS NULL OR c.params_hash = $params)
WITH cl, c ORDER BY c.completed_at DESC
WITH cl, collect(c)[0] AS c
MATCH (c)-[:HAS_GROUP]->(g:Group)
WHERE g.label IS NOT NULL AND toLower(g.label) CONTAINS toLower($text)
RETURN cl.model AS model, cl.index AS class_index, cl.name AS class_name, g.uid AS group, g.label AS label,
       g.label_source AS label_source, g.label_score AS label_score, g.layer AS layer, g.depth AS depth, g.size AS size
ORDER BY model, class_index, depth, group
LIMIT $limit
""",
        params={"text": "", "model": None, "params": None, "limit": 100},
        returns=("model", "class_index", "class_name", "group", "label", "label_source", "label_score", "layer", "depth", "size"),
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
        cypher=_pick("(:Class {model: $model, index: $class_index})", "c")
        + """WITH c ORDER BY c.completed_at DESC LIMIT 1
MATCH (c)-[:HAS_CONCEPT]->(k:Concept)-[:OF]->(n:Neuron {uid: $model + '/' + $layer + '/' + toString($channel)})
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
    """Run a library query on a `Store` (writer or read-only); rows as dicts."""
    q = get_query(name)
    return store.run(q.cypher, q.bind(**params))
