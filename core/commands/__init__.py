"""One module per `intriguing` subcommand; see core/cli.py.

Each `run` imports what it needs inside the function: the parser imports every command module, and
`intriguing --help` or `intriguing models` should not pay for torch, matplotlib and the attacks of the
others (start-up speed, not an import cycle)."""
