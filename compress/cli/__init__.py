"""The ``compress`` command line: one module per subcommand, heavy imports inside each."""
