"""The `audiopalm` console script (main) and its subcommands: the argparse/CLI glue over the library."""
