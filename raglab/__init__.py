"""raglab: fine-tune and measure both models of a RAG system (retriever and generator)."""

__version__ = "0.1.0"
