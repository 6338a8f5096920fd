"""Data specs: builtin sets, Python factories and image folders, batched lazily."""
