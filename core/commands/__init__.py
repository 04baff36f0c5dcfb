"""One module per `intriguing` subcommand; see core/cli.py."""
