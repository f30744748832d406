"""The data: the public datasets (fetched from the hub at a pinned revision or read from a local mirror), and the
user's own: documents read and cut into chunks, and labelled pairs (CSV, JSON Lines, Parquet, LlamaIndex JSON)."""
