"""Frontends: read models from other formats into the IR."""
