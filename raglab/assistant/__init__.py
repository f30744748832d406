"""The RAG system as an assistant: an OpenAI-compatible chat endpoint and a chat page."""
