"""Subcommands of the ``saltseg`` CLI, one module per pipeline stage; importing registers them."""

from saltseg.commands import (  # noqa: F401
    data_cmds,
    demo_cmds,
    diag_cmds,
    infer_cmds,
    train_cmds,
    volume_cmds,
)
