"""Task metrics and the LLM-judged general RAG metrics."""
