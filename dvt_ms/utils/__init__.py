"""Small helpers shared by the command-line scripts."""
