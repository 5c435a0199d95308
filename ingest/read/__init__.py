"""Reading stored results into plain values for users: the similarity matrix, exports, evaluation rows."""
