"""Recipes (DESIGN §3): one strict, versioned YAML schema for what ``compress apply`` does."""
