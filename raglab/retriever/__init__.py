"""The retriever: contrastive training rows, fine-tuning with FlagEmbedding, dense/BM25/fused search."""
