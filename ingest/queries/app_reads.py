"""The Streamlit app's own reads of the store (the library queries are `ingest.queries.library`).

Named statements the app sends through `app.data` (cached per store version); "the chosen circuit"
of a class is the one fragment of `ingest.queries.library` (`latest_complete`, `latest_complete_per_class`).
They live here, beside the other query modules, so that no Cypher lives in app/ and the Cypher lint
sees every one by name.
"""

from __future__ import annotations

from ingest.queries.evaluations import Q_READ
from ingest.queries.fragments import latest_complete, latest_complete_per_class

Q_VERSION = (
    "MATCH (c:Circuit) RETURN count(c) AS n, max(c.completed_at) AS last, "
    "sum(CASE WHEN c.status = 'complete' THEN 1 ELSE 0 END) AS complete"
)
"""Identity of the store's content (`app.data.version`): changes whenever a circuit is written or its status changes."""

CONSOLE_EXAMPLE_CYPHER = "MATCH (cl:Class)-[:HAS_CIRCUIT]->(c:Circuit {status: 'complete'})\nRETURN cl, c\nLIMIT 25"
"""The read-only console's starting text (the user edits it; the Cypher lint checks it as written)."""

_THE_CLASS = "(:Class {model: $model, index: $class_index})"

APP_QUERIES: dict[str, str] = {
    # every circuit with its parameters, sizes and times (overview table)
    "circuits": """
MATCH (m:Model)-[:HAS_CLASS]->(cl:Class)-[:HAS_CIRCUIT]->(c:Circuit)
WHERE ($model IS NULL OR m.uid = $model) AND (c.status = 'complete' OR $include_incomplete)
RETURN m.uid AS model, cl.index AS class_index, cl.name AS class_name, c.params_hash AS params, c.status AS status,
       c.tau AS tau, c.k AS k, c.ig_steps AS ig_steps, c.num_neurons AS neurons, c.num_feeds AS feeds,
       c.num_concepts AS concepts, c.num_groups AS groups, c.num_group_feeds AS group_feeds,
       c.seconds AS build_seconds, c.started_at AS started_at, c.completed_at AS completed_at, c.uid AS circuit
ORDER BY model, class_index, completed_at DESC
""",
    "classes": """
MATCH (cl:Class {model: $model})
OPTIONAL MATCH (cl)-[:HAS_CIRCUIT]->(c:Circuit {status: 'complete'})
WITH cl, count(c) AS circuits
RETURN cl.index AS index, cl.name AS name, circuits
ORDER BY index
""",
    "layers": """
MATCH (l:Layer {model: $model})
RETURN l.name AS name, l.depth AS depth, l.channels AS channels
ORDER BY depth
""",
    # the parameter sets of a model: the default (most classes, then the latest) first
    "param_sets": """
MATCH (c:Circuit {model: $model, status: 'complete'})
WITH c.params_hash AS params, collect(c.params)[0] AS definition, count(DISTINCT c.class_index) AS classes,
     collect(DISTINCT c.class_index) AS class_indices, max(c.completed_at) AS last
RETURN params, definition, classes, class_indices, last
ORDER BY classes DESC, last DESC
""",
    # per class of $classes: up to $n top crops of the class-logit neuron's concepts (overview
    # gallery; one page of classes at a time, so 1,000 classes cost what 20 do)
    "class_gallery": latest_complete_per_class("cl.index IN $classes AND ")
    + """OPTIONAL MATCH (c)-[:HAS_CONCEPT]->(k:Concept {depth: 0})-[e:EXEMPLIFIED_BY]->(cr:Crop)
WITH cl, c, e, cr ORDER BY e.rank, cr.uid
WITH cl, c, collect(cr.thumbnail) AS thumbnails
RETURN cl.index AS class_index, cl.name AS class_name, c.uid AS circuit, thumbnails[0..$n] AS thumbnails
ORDER BY class_index
""",
    "circuit_info": latest_complete(_THE_CLASS)
    + """RETURN c.uid AS circuit, c.params_hash AS params, c.tau AS tau, c.k AS k, c.ig_steps AS ig_steps,
       c.num_neurons AS neurons, c.num_feeds AS feeds, c.num_concepts AS concepts, c.num_groups AS groups,
       c.num_group_feeds AS group_feeds, c.completed_at AS completed_at, c.seconds AS build_seconds
""",
    # the groups of a circuit (node metadata of the group graph)
    "groups": latest_complete(_THE_CLASS)
    + """MATCH (c)-[:HAS_GROUP]->(g:Group)
RETURN g.uid AS uid, g.layer AS layer, g.depth AS depth, g.index AS index, g.size AS size, g.label AS label
ORDER BY depth, index
""",
    # pruned GROUP_FEEDS: |W| >= $min_frac x the strongest |W| into the same layer (weights of
    # different layers differ in scale), then the $top_k strongest inputs of each upper group
    "group_edges": latest_complete(_THE_CLASS)
    + """MATCH (c)-[:HAS_GROUP]->(u0:Group)<-[e0:GROUP_FEEDS]-(:Group)
WITH c, u0.depth AS d, max(abs(e0.weight)) AS top
WITH c, collect({d: d, top: top}) AS tops
MATCH (c)-[:HAS_GROUP]->(up:Group)<-[e:GROUP_FEEDS]-(lo:Group)
WITH up, lo, e, [t IN tops WHERE t.d = up.depth][0].top AS top
WHERE abs(e.weight) >= $min_frac * top
WITH top, up, lo, e ORDER BY abs(e.weight) DESC, lo.uid
WITH top, up, collect({lower: lo.uid, weight: e.weight})[0..$top_k] AS ins
UNWIND ins AS x
RETURN x.lower AS lower, up.uid AS upper, x.weight AS weight, top
ORDER BY abs(weight) / top DESC, lower, upper
LIMIT $limit
""",
    # the concepts of one group with their representative crops
    "group_members": """
MATCH (g:Group {uid: $group})<-[:IN_GROUP]-(k:Concept)
OPTIONAL MATCH (k)-[e:EXEMPLIFIED_BY]->(cr:Crop)
WITH g, k, e, cr ORDER BY e.rank
WITH g, k, collect(cr.thumbnail) AS thumbnails, collect(e.activation) AS activations
RETURN g.layer AS layer, k.channel AS channel, k.index AS concept, k.size AS size,
       k.mean_activation AS mean_activation, thumbnails, activations
ORDER BY mean_activation DESC, channel, concept
""",
    # pruned FEEDS of a circuit, in one pass over the circuit's FEEDS: rank < $top_k (the top-k core
    # neurons of each upper neuron), importance >= $min_frac x the largest importance into the same
    # layer (rank 0 edges are among the kept ones, so the maximum is the layer's), upper end no
    # deeper than $max_depth.  The class's FEEDS come from the relationship index on
    # FEEDS.class_index in the first clause (ArcadeDB uses it only there): walking FEEDS from the
    # circuit's neurons would read every class's edges at hub neurons (seconds at 1,000 classes);
    # no labels on the two ends: with them ArcadeDB scans the label instead (6-8 s at 1,000 classes)
    "neuron_edges": """MATCH (v)-[f:FEEDS]->(u)
WHERE f.class_index = $class_index
WITH collect({v: v, u: u, w: f.importance, rank: f.rank, cu: f.circuit}) AS feeds
"""
    + latest_complete(_THE_CLASS, carry="feeds, ")
    + """UNWIND [e IN feeds WHERE e.cu = c.uid AND e.rank < $top_k AND e.u.depth <= $max_depth] AS e
WITH e.u.depth AS d, collect(e) AS es, max(e.w) AS top
UNWIND es AS e
WITH e, top WHERE e.w >= $min_frac * top
WITH e.v AS v, e.u AS u, e.w AS weight, e.rank AS rank, top
RETURN v.uid AS lower, v.layer AS lower_layer, v.depth AS lower_depth, v.channel AS lower_channel,
       u.uid AS upper, u.layer AS upper_layer, u.depth AS upper_depth, u.channel AS upper_channel,
       weight, rank, top
ORDER BY weight / top DESC, lower, upper
LIMIT $limit
""",
    # critical channels per layer of several classes (compare page)
    "critical_sets": latest_complete_per_class("cl.index IN $classes AND ")
    + """MATCH (c)-[:INCLUDES]->(n:Neuron)
WITH cl, c, n ORDER BY n.channel
RETURN cl.index AS class_index, cl.name AS class_name, c.uid AS circuit, n.layer AS layer, n.depth AS depth,
       collect(n.channel) AS channels
ORDER BY class_index, depth
""",
    # reverse lookup, group level: the groups (and concepts) that use a neuron in the given circuits
    # (those of the page of reverse_lookup rows shown: a hub of 1,000 classes reads one page)
    "neuron_groups": """
MATCH (c:Circuit) WHERE c.uid IN $circuits
MATCH (c)-[:HAS_CONCEPT]->(k:Concept)-[:OF]->(n:Neuron {uid: $neuron})
OPTIONAL MATCH (k)-[:IN_GROUP]->(g:Group)
RETURN c.class_index AS class_index, k.index AS concept, k.size AS size,
       g.uid AS group, g.index AS group_index, g.label AS label
ORDER BY class_index, concept
""",
}
APP_QUERIES["evaluations"] = Q_READ  # the faithfulness page: the library's own read of stored evaluations
