"""The public datasets: fetched from the hub at a pinned revision or read from a local mirror."""
