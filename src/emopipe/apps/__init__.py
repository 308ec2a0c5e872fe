"""The product commands a user runs (`emopipe predict`, `emopipe recipe`, ...): thin Typer apps over the library."""
