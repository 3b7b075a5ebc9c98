"""How results read: lines for a pipe, tables at a terminal, and JSON for scripts."""
