"""Prefect tasks: thin wrappers that add names, retries and logging to omnivec's core functions."""
