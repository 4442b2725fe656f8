"""Checkpoint errors. All are ``ValueError`` subclasses whose message names the file at fault."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded."""


class CheckpointMismatchError(CheckpointError):
    """The checkpoint's parameters do not match the network's (missing, unexpected, wrong shape)."""
