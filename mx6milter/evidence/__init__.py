"""Evidence sources, one module each; each returns its findings (see docs/design.md)."""
