"""Corpus scanning and the nested, deterministic subsets that every scale is built from."""
