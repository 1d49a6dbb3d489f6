"""One exception family for everything a user can get wrong, so scripts can report it without a traceback."""


class SetencError(ValueError):
    """A problem with the user's input (file, manifest, config, checkpoint); the message says what to do."""


class CatalogError(SetencError):
    """A manifest / pairs file that cannot be read as a catalog."""


class ImageError(SetencError):
    """A photo that cannot be decoded (missing, corrupt, not an image)."""


class CheckpointError(SetencError):
    """A checkpoint or index that does not fit the encoder it is used with, or is damaged."""
