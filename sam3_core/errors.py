"""The engine's exceptions. Each carries a machine-readable `code`; the serving layer maps
the classes to HTTP statuses in one place."""

from __future__ import annotations


class Sam3Error(Exception):
    """Base of every error the engine raises on purpose."""

    code = "sam3_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidImageError(Sam3Error):
    """The image cannot be used: not decodable, truncated, unsupported type or format."""

    code = "invalid_image"


class ImageTooLargeError(Sam3Error):
    """The image is over the byte or pixel limit (decompression bombs included)."""

    code = "image_too_large"


class MaskBudgetError(Sam3Error):
    """The request asks for more mask pixels (masks x height x width) than one may produce."""

    code = "mask_budget_exceeded"


class UrlInputError(InvalidImageError):
    """A URL image was refused (input off, host not allowed, private address) or failed."""

    code = "url_input_refused"


class InvalidImageIdError(Sam3Error):
    """An `image_id` over the length limit or with characters outside the allowed set."""

    code = "invalid_image_id"


class InvalidPromptError(Sam3Error):
    """A prompt value the model cannot take; the message names the field."""

    code = "invalid_prompt"


class ImageNotCachedError(Sam3Error):
    """Only an `image_id` was sent and its embedding is not cached here."""

    code = "image_not_cached"


class ImageBytesNeededError(Sam3Error):
    """A request named its image by content digest only, and this engine does not hold
    that content under its id: the caller, which has the bytes, sends them (never a client's
    answer; see `deployments.owners.RayOwners`)."""

    code = "image_bytes_needed"


class ConceptsDisabledError(Sam3Error):
    """Concept segmentation was asked of a deployment that serves interactive clicks only."""

    code = "concepts_disabled"


class WeightsError(Sam3Error):
    """No usable weights are configured, or the checkpoint does not fit the model."""

    code = "weights_unavailable"


class VideoTooLargeError(ImageTooLargeError):
    """A video over its frame or byte limit; the message names the setting."""

    code = "video_too_large"


class SessionNotFoundError(Sam3Error):
    """A video session this replica does not hold: never started, closed, expired, or lost
    with its replica."""

    code = "session_not_found"


class SessionBusyError(Sam3Error):
    """The session is propagating; it takes no other change until that ends."""

    code = "session_busy"


class VideoCapacityError(Sam3Error):
    """No room for another video session (sessions per replica, or the byte budget); the
    message names the setting."""

    code = "video_capacity_exhausted"


class SessionMovedError(Sam3Error):
    """The session moved to another replica (a scale event) while this request ran here: the
    same request, sent again, reaches it there."""

    code = "session_moved"


class PropagationError(Sam3Error):
    """sam3 refused to go on with the session as it stands (for one, clicks after a first pass
    that did not reach every frame); the message says what to do."""

    code = "propagation_failed"
