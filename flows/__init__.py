"""Prefect flows and the `omnivec` command line. Importing this package does not import Prefect."""
