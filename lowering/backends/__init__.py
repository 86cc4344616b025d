"""Backends: write the IR out to other formats and runtimes."""
