"""Subcommands of the ``saltseg`` CLI, one module per pipeline stage; importing registers them."""

from saltseg.commands import data_cmds, train_cmds  # noqa: F401
