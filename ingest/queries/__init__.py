"""Every Cypher statement that reads the store, by who sends it: the query library (`library`), the
app's own reads (`app_reads`), the commands' and jobs' reads (`jobs`), and shared `fragments`.
Writer statements live beside the rows they take, in `ingest.write.statements`."""
