"""params.yaml: its declared schema and how it is read, overlaid and checked."""
