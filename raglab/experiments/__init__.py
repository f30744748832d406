"""Experiment tooling around DVC: profiles, sweeps, comparisons with intervals, plots, headless Chromium."""
