"""The one exception type of the codec: its message is a complete one-line explanation for users."""


class TNGError(ValueError):
    """Bad input or a stream that cannot be decoded. str(error) is shown to users as it is."""
