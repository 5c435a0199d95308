"""Every Cypher statement the program sends except the writer's, by who sends it: the query
library (`library`), the app's own reads (`app_reads`), the commands' and jobs' statements (`jobs`,
`evaluations`, `export`), and shared `fragments`.  Writer statements live beside the rows they
take, in `ingest.write.statements` (and `ingest.write.aggregate_statements`)."""
