"""The RAG system: knowledge base, retrievers and prompt, and the intent router."""
