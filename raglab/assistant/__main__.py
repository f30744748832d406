"""``python -m raglab.assistant``: serve the RAG system (``raglab.assistant.app``)."""

from raglab.assistant.app import main
from raglab.core.errors import run
from raglab.core.report import setup_logging

if __name__ == "__main__":
    setup_logging()
    run(main)
