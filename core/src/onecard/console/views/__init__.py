"""The console's pages, one module (and blueprint) per area."""
