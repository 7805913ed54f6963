"""Why a model was rejected, in a form both people and counters can use."""


class ModelError(Exception):
    """A model that cannot be read or built.

    `code` is a short stable category used to count failures by reason;
    `message` says what was wrong and where, for a person to act on.
    """

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return self.message
