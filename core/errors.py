"""User-facing errors: one clear message, no traceback, in the CLI and the dashboard alike."""


class IntriguingError(Exception):
    """Base class for errors whose message is meant for the user as it stands."""


class DatasetMissingError(IntriguingError):
    """A dataset is not on disk and could not be downloaded."""


class CardError(IntriguingError):
    """A stored result card is damaged (not JSON, or not a card)."""


class CheckpointError(IntriguingError):
    """A checkpoint is missing, corrupt, or does not match its architecture."""


class WeightsMissingError(IntriguingError):
    """Pretrained weights (ImageNet) are not present and cannot be downloaded."""


class InvalidParameterError(IntriguingError, ValueError):
    """A parameter is NaN, infinite, out of range or of the wrong kind."""


class ImageInputError(IntriguingError, ValueError):
    """An image file or upload cannot be used (not an image, truncated, too large ...)."""
